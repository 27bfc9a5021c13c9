"""The one polling helper, used by the product (readiness waits) and by every test tier."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The predicate stayed falsy for the whole timeout; the message says what was awaited."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.2,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Exceptions from the predicate count as "not yet" (a server that is still starting
    refuses connections), and the last one is chained to the timeout for diagnosis.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
        except Exception as error:  # "not ready yet" takes many shapes
            last_error = error
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {message}{detail}") from last_error
        time.sleep(interval)
