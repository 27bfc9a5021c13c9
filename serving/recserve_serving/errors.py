"""Domain errors shared by the builder, the registry and the serving app.

Each error carries the HTTP status it maps to, so the serving app translates them in one
place, and the CLI prints ``str(error)`` as its one-line message.
"""

from __future__ import annotations


class RecserveError(Exception):
    """Base of every expected failure; the message says what, where and how to fix."""

    http_status = 500


class InvalidRequest(RecserveError):
    """The caller sent something malformed or out of bounds."""

    http_status = 400


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the configured limit."""

    http_status = 413


class NotFound(RecserveError):
    """A named model, user or version does not exist."""

    http_status = 404


class Unavailable(RecserveError):
    """A dependency (engine, replica) cannot answer right now."""

    http_status = 503


class Overloaded(Unavailable):
    """Too many requests are already queued; the client should come back after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(RecserveError):
    """The request took longer than the configured timeout, so its answer was abandoned."""

    http_status = 504


class CheckpointError(RecserveError):
    """A checkpoint URI cannot be resolved, or its files are missing, corrupt or mismatched."""

    http_status = 422


class AliasNotSet(CheckpointError):
    """A registered model exists but has no such alias yet (e.g. @candidate before any retrain)."""


class DataError(RecserveError):
    """A catalog or interaction table is missing, unreadable, or does not match its ``spec.data``
    mapping; the message names the file, the spec field and the fix."""

    http_status = 422


class RecipeError(RecserveError):
    """An optimization recipe contradicts itself or the checkpoint it is applied to."""

    http_status = 422


class EngineError(RecserveError):
    """An engine cannot be built or loaded (digest mismatch, corrupt files, failed gate)."""

    http_status = 503


class QualityGateFailed(EngineError):
    """The optimized engine lost more ranking quality, or time, than the recipe allows."""

    def __init__(self, message: str, report: str | None = None) -> None:
        super().__init__(message)
        self.report = report
        """Where the gate's report was written, so whoever rejects the engine can point at it."""
