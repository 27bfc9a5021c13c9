"""``recserve users erase ID`` and ``recserve users compact``: a user's right to erasure.

``erase`` goes through a router when there is one to go through (``--endpoint``, or the running
``recserve up`` of the model): the router tombstones the user in the interaction log and empties
their online history, and a router serving histories from its data stops serving theirs at once.
Without one (the model is down) it does the same directly in the embedded state: the tombstone
in ``<state>/online/<model>/feedback/``, the SQLite history store in
``<state>/online/<model>/feast/``, pseudonymized with the state's own key. Either way it then
compacts what it can reach, so the user's events leave the log's closed segments, not only what
training reads. ``compact`` does that alone, e.g. after erasures through a cluster's routers.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
from pathlib import Path
from urllib.parse import quote

from recserve_operator.embedded.processes import pid_alive
from recserve_operator.embedded.runs import list_runs
from recserve_serving.errors import InvalidRequest, NotFound, RecserveError, Unavailable
from recserve_serving.online.feedback_log import Compaction, FeedbackLog, compact
from recserve_serving.paths import state_dir
from recserve_serving.privacy import embedded_key_file, pseudonymizer_from

ERASE_PATH = "/v1/users/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    erase = sub.add_parser("erase", help="erase a user's online history and logged events")
    erase.add_argument("user_id", help="the user's id as clients send it (or its ph-... pseudonym)")
    erase.add_argument("--model", help="the model (default: the only one with online data in the state)")
    erase.add_argument(
        "--endpoint", help="a running router's URL (default: the model's `recserve up`, if up)"
    )
    erase.add_argument("--state", help="state directory (default: $RECSERVE_HOME or ./.recserve)")
    compaction = sub.add_parser("compact", help="rewrite the interaction log without erased users' events")
    compaction.add_argument("--model", help="the model (default: the only one with online data in the state)")
    compaction.add_argument("--state", help="state directory (default: $RECSERVE_HOME or ./.recserve)")
    compaction.add_argument(
        "--retention-days",
        type=_positive_days,
        help="also remove events received more than this many days ago (the model's "
        "spec.serving.feedbackLog.retentionDays, which its routers apply by themselves)",
    )


def run(args: argparse.Namespace) -> int:
    state = state_dir(args.state)
    if args.action == "compact":
        model = _model(state, args.model)
        done = compact(_online(state, model) / "feedback", retention_days=args.retention_days)
        print(_compacted(model, done))
        return 0
    user_id = str(args.user_id).strip()
    if not user_id:
        raise InvalidRequest(
            "user id: give the id of the user to erase, e.g. `recserve users erase cust-037901`"
        )
    if args.endpoint:
        print(_through_router(args.endpoint, user_id))
        return 0
    model = _model(state, args.model)
    running = _running_endpoint(state, model)
    if running is not None:
        print(_through_router(running, user_id))
        print(_compacted(model, compact(_online(state, model) / "feedback")))
        return 0
    print(_in_state(state, model, user_id))
    return 0


def _positive_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not days > 0 or math.isinf(days):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days above 0 (e.g. 30)")
    return days


def _online(state: Path, model: str) -> Path:
    return state / "online" / model


def _model(state: Path, named: str | None) -> str:
    """The model whose online data to act on: the one named, or the only one in the state."""
    found = sorted(p.name for p in (state / "online").glob("*") if p.is_dir())
    if named is not None:
        if named not in found:
            raise NotFound(
                f"model {named!r} has no online data in {state / 'online'} (found: {', '.join(found) or 'none'}); "
                "check --model and --state"
            )
        return named
    if len(found) != 1:
        raise InvalidRequest(
            f"--model: {state / 'online'} holds online data of {len(found)} models "
            f"({', '.join(found) or 'none'}); name one with --model"
        )
    return found[0]


def _running_endpoint(state: Path, model: str) -> str | None:
    record = list_runs(state).get(model)
    if record is None or not pid_alive(int(record.get("pid", 0))) or not record.get("endpoint"):
        return None
    return str(record["endpoint"])


def _through_router(endpoint: str, user_id: str) -> str:
    import httpx

    url = endpoint.rstrip("/") + ERASE_PATH + quote(user_id, safe="")
    try:
        response = httpx.delete(url, timeout=60)
    except httpx.HTTPError as error:
        raise Unavailable(f"cannot reach the router at {endpoint}: {error}; is the model running?") from None
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    if response.status_code != 200:
        raise RecserveError(
            f"the router at {endpoint} refused the erasure ({response.status_code}): {body.get('error', body)}"
        )
    history = "emptied" if body.get("historyErased") else "none stored"
    return (
        f"erased user {body['userPseudonym']} through {endpoint}: online history {history}; "
        "interaction log tombstoned (training drops the user's events and base-table rows)"
    )


def _in_state(state: Path, model: str, user_id: str) -> str:
    """Erase in the embedded state of a model that is not running: tombstone, store, compaction."""
    key_file = embedded_key_file(state)
    if not key_file.exists():
        raise NotFound(
            f"no pseudonym key at {key_file}: no router of this state ever recorded users, so there is "
            "nothing to erase here (for a cluster's model use --endpoint)"
        )
    pseudonym = pseudonymizer_from(key_file).user(user_id)
    online = _online(state, model)
    writer = re.sub(r"[^A-Za-z0-9._-]", "-", f"cli-{socket.gethostname()}-{os.getpid()}")
    log = FeedbackLog(online / "feedback", writer)
    try:
        log.tombstone([pseudonym])
    finally:
        log.close()
    history = _erase_sqlite_history(online / "feast", pseudonym)
    report = {True: "emptied", False: "none stored", None: "no embedded (SQLite) store"}[history]
    return (
        f"erased user {pseudonym} of {model} in {state}: online history {report}; interaction log "
        f"tombstoned; {_compacted(model, compact(online / 'feedback'))}"
    )


def _erase_sqlite_history(repo_dir: Path, pseudonym: str) -> bool | None:
    """Empty the user's lists in the model's embedded store; None when it has none (a model whose
    store is Redis is erased through its router)."""
    if not (repo_dir / "online.db").exists():
        return None
    from recserve_serving.dataspec import HistoryStoreSpec
    from recserve_serving.online.history import HistoryStore

    store = HistoryStore(HistoryStoreSpec(kind="sqlite"), repo_dir)
    try:
        return store.erase(pseudonym)
    finally:
        store.close()


def _compacted(model: str, done: Compaction) -> str:
    live = f"; {done.skipped_live} live segment(s) left for the next compaction" if done.skipped_live else ""
    expired = f", {done.expired} past retention" if done.expired else ""
    return (
        f"compacted {model}'s interaction log: {done.removed} event(s) of erased users{expired} removed; "
        f"{done.rewritten} segment(s) rewritten, {done.deleted} deleted{live}"
    )
