"""``DELETE /v1/users/{user_id}``: erase one user from what the router keeps.

Two things hold a user's past: the online history store (or, with ``history.source: request``,
the data set the router loaded) and the interaction log. The log is append-only and shared by
every replica, so the erasure is a durable tombstone in it (``FeedbackLog.tombstone``):
``read_feedback`` drops the user's earlier events from then on, the retrain leaves the user's
rows out of the platform's own table too, and ``compact`` rewrites closed segments without them.
The tombstone is written first: once it is acknowledged the erasure cannot be lost, and a retry
after a failure of the store (or any repeat) does the same again and answers the same way,
with ``historyErased`` false once nothing is left.
"""

from __future__ import annotations

from pydantic import Field

from recserve_serving.data import ExternalId
from recserve_serving.errors import Unavailable
from recserve_serving.online.feedback_log import FeedbackLog
from recserve_serving.privacy import Pseudonymizer
from recserve_serving.schema import CamelModel
from recserve_serving.serve.catalog import Histories


class ErasureResponse(CamelModel):
    erased: bool = True
    user_pseudonym: str = Field(description="The user's key in the log and store; what erasure tombstoned.")
    history_erased: bool = Field(description="Whether the user had a history here that is now gone.")
    events_tombstoned: bool = Field(
        description="The log's tombstone is durable: training and compaction drop the user's events."
    )


def erase_user(
    user_id: ExternalId, histories: Histories, log: FeedbackLog | None, pseudonyms: Pseudonymizer | None
) -> ErasureResponse:
    if log is None or pseudonyms is None:
        raise Unavailable(
            "users cannot be erased through this router: its config has no onlineDir (and pseudonymKeyFile) "
            "for the interaction log, so it keeps no user data to erase and has nowhere to record the "
            "erasure; erase through a router of the model that records feedback, or `recserve users erase`"
        )
    pseudonym = pseudonyms.user(user_id)
    log.tombstone([pseudonym])
    try:
        history_erased = histories.erase(user_id)
    except Unavailable:
        raise
    except Exception as error:
        raise Unavailable(
            f"the erasure of user {pseudonym} is recorded in the interaction log, but the online history "
            f"store failed ({type(error).__name__}); retry the DELETE to erase the stored history"
        ) from error
    return ErasureResponse(user_pseudonym=pseudonym, history_erased=history_erased, events_tombstoned=True)
