"""``POST /v1/feedback``: what users did, logged durably, and their histories updated at once.

Every event is checked against the catalog before anything is written, so a request with one
unknown item writes nothing. Then the events are appended to the interaction log and fsynced (a
2xx means they survive a crash of this process or machine), and then the users' online
histories are updated, so the next ``/v1/recommend`` for them excludes what they saw and reads
what they liked. Both are keyed by the user's pseudonym (``privacy.py``): the raw id is never
written. Delivery is at least once: a client that retries after a 503 may log an event
twice, which training de-duplicates by (user, item, ts).
"""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel, ConfigDict, Field

from recserve_serving.errors import InvalidRequest, NotFound, Unavailable
from recserve_serving.online.feedback_log import FeedbackEvent, FeedbackLog
from recserve_serving.privacy import Pseudonymizer
from recserve_serving.serve.catalog import Catalog

MAX_EVENTS = 1000


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[FeedbackEvent] = Field(..., min_length=1, max_length=MAX_EVENTS)


class FeedbackResponse(BaseModel):
    accepted: int
    history_updated: bool = Field(
        description="False when the model reads histories from requests (history.source: request): "
        "the events are logged for training, and requests carry the newer history."
    )


def liked(event: FeedbackEvent, positive_threshold: float) -> bool:
    """A click is a like, and a rating at the data's positive threshold; views and skips are only
    seen (never recommended back)."""
    if event.event == "click":
        return True
    return event.event == "rating" and event.value is not None and event.value >= positive_threshold


def record_feedback(
    request: FeedbackRequest, catalog: Catalog, log: FeedbackLog | None, pseudonyms: Pseudonymizer | None
) -> FeedbackResponse:
    """Log and apply the events; the log and the store see each user's pseudonym, never their id."""
    if log is None:
        raise Unavailable(
            "feedback is not recorded by this router: its config has no onlineDir for the interaction log"
        )
    if pseudonyms is None:  # RouterConfig refuses an onlineDir without a key; this is the last guard
        raise Unavailable(
            "feedback is not recorded by this router: it has no pseudonym key (pseudonymKeyFile)"
        )
    codes = []
    for position, event in enumerate(request.events):
        try:
            codes.append(catalog.dataset.item_code(event.item_id))
        except NotFound as error:
            raise InvalidRequest(f"events[{position}].item_id: {error}; nothing was recorded") from None
    canonical = [
        event.model_copy(update={"user_id": pseudonyms.user(event.user_id), "item_id": catalog.item_id(code)})
        for event, code in zip(request.events, codes, strict=True)
    ]
    log.append(canonical)
    threshold = catalog.dataset.loaded.positive_threshold
    by_user: dict[int | str, list[tuple[int, bool]]] = defaultdict(list)
    for event, code in zip(canonical, codes, strict=True):
        by_user[event.user_id].append((code, liked(event, threshold)))
    try:
        updated = [catalog.histories.record(user, items) for user, items in by_user.items()]
    except Exception as error:
        raise Unavailable(
            f"the {len(canonical)} events were logged, but the online history store failed ({error!r}); "
            "recommendations will reflect them once the store is back"
        ) from error
    return FeedbackResponse(accepted=len(canonical), history_updated=all(updated))
