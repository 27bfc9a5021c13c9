"""Bounds on every call to an MLflow registry server, and what its failures mean.

MLflow's HTTP client waits 120 s per request and retries 7 times with backoff by default, so
one hung registry could hold an operator worker for many minutes. Its bounds are read from
the environment on every request; ``registry_client`` sets them once, before the first client
is made, unless the deployment already chose its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from recserve_serving.errors import CheckpointError, RecserveError, Unavailable
from recserve_serving.redact import redact

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
"""10 s per attempt, 3 attempts, 2 s of backoff: a dead registry answers within about 35 s."""

NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


_MLFLOW_IMPORT = threading.Lock()


def import_mlflow() -> None:
    """Import the whole ``mlflow`` package, one thread at a time. Its modules import each other in
    cycles: threads that first enter it through different submodules (an operator reconciling 200
    models at once) deadlock on the import locks, Python breaks the deadlock by handing out
    half-initialised modules, and ``mlflow`` stays broken for the life of the process. The import
    also configures mlflow's loggers, so whoever quietens them must do so after this."""
    with _MLFLOW_IMPORT:
        import mlflow  # noqa: F401


def registry_client(tracking_uri: str) -> MlflowClient:
    """A client of the registry at ``tracking_uri`` with its calls bounded: the one place clients
    are made, after the one safe import of ``mlflow``."""
    import_mlflow()
    from mlflow.tracking import MlflowClient

    bound_registry_calls()
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def bound_registry_calls(env: MutableMapping[str, str] | None = None) -> None:
    target = os.environ if env is None else env
    for name, value in HTTP_BOUNDS.items():
        target.setdefault(name, value)


def registry_failure(uri: str, tracking_uri: str, error: Exception) -> RecserveError:
    """A missing entry is the user's to fix (CheckpointError); anything else, a timeout or a
    refused connection included, is the registry's and passes (Unavailable). Both messages
    are redacted, since they end up in status and events."""
    code = getattr(error, "error_code", "")
    detail = redact(str(getattr(error, "message", None) or error))
    where = redact(tracking_uri)
    if code in NOT_FOUND_CODES:
        return CheckpointError(f"{uri}: not in the registry at {where}: {detail}")
    return Unavailable(f"MLflow registry at {where} unavailable: {detail}")
