"""The one polling helper the e2e tier uses instead of bare sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """``wait_for`` ran out of time; carries the last value and the last ignored error."""

    def __init__(self, message: str, last: object = None, error: BaseException | None = None) -> None:
        detail = f"{message} (last value: {last!r}"
        if error is not None:
            detail += f"; last error: {type(error).__name__}: {error}"
        super().__init__(detail + ")")
        self.last = last
        self.error = error


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.2,
    message: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Exceptions of the types in ``ignore`` count as "not yet" (for example a connection refused
    while a server starts); any other exception propagates at once. Raises ``WaitTimeout``
    after ``timeout`` seconds, with ``message`` and the last value or error."""
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            last = predicate()
            error = None
            if last:
                return last
        except ignore as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise WaitTimeout(message or f"timed out after {timeout:g}s", last, error)
        time.sleep(interval)
