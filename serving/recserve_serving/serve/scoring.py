"""Scoring one dynamic batch so that a request's failure stays that request's own.

Ray Serve merges concurrent requests into one engine call; if that call raised, every
request in the batch would fail with it. Requests are validated before they are batched,
and this is the second line: when the merged call fails, each request is scored alone, so
only the one the engine cannot score gets the error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

log = logging.getLogger("recserve.serve")

ScoreFn = Callable[[list[str], list[str]], Iterable[float]]
"""An engine's ``score``: one score per (user text, item text) pair."""
Texts = tuple[list[str], list[str]]


def _alone(score: ScoreFn, request: Texts) -> list[float] | Exception:
    try:
        return [float(s) for s in score(*request)]
    except Exception as error:
        return error


def score_each(score: ScoreFn, requests: Sequence[Texts]) -> list[list[float] | Exception]:
    """Each request's scores, or the error that request alone caused, in request order."""
    users = [u for user_texts, _ in requests for u in user_texts]
    items = [i for _, item_texts in requests for i in item_texts]
    try:
        merged = [float(s) for s in score(users, items)]
    except Exception as error:
        if len(requests) == 1:
            return [error]
        log.warning("a batch of %d requests failed (%r); scoring each alone", len(requests), error)
        return [_alone(score, request) for request in requests]
    out: list[list[float] | Exception] = []
    start = 0
    for user_texts, _ in requests:
        out.append(merged[start : start + len(user_texts)])
        start += len(user_texts)
    return out
