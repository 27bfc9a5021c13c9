"""Checkpoint identity in a cluster, without downloading anything.

The operator only needs to know *which* checkpoint a URI means: for the MLflow registry,
the version an alias points to and the digest tagged on it at registration; for storage
URIs (pvc://, file://) the URI itself is the identity and the builder verifies the
files. Downloads happen in the build Job, next to the data. Registry calls are bounded in
time, and a registry that does not answer is ``Unavailable`` (retried), never a stall.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from recserve_operator.platform import CheckpointInfo
from recserve_serving.errors import AliasNotSet, CheckpointError
from recserve_serving.registry_http import NOT_FOUND_CODES, registry_client, registry_failure

DIGEST_TAG = "recserve.digest"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))/?$")


def describe(uri: str, tracking_uri: str | None) -> CheckpointInfo:
    match = _MODELS_URI.match(uri)
    if match is None:
        name = uri.rstrip("/").rsplit("/", 1)[-1] or uri
        return CheckpointInfo(uri, name, None, "uri:" + hashlib.sha256(uri.encode()).hexdigest())
    if not tracking_uri:
        raise CheckpointError(f"{uri}: set the operator's MLflow tracking URI (RECSERVE_MLFLOW_TRACKING_URI)")
    client = registry_client(tracking_uri)
    from mlflow.exceptions import MlflowException

    name, version, alias = match["name"], match["version"], match["alias"]
    try:
        entry = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
    except (MlflowException, OSError) as error:
        if alias and getattr(error, "error_code", "") in NOT_FOUND_CODES and _has_model(client, name):
            raise AliasNotSet(f"{uri}: model {name!r} has no alias @{alias}") from None
        raise registry_failure(uri, tracking_uri, error) from error
    digest = (entry.tags or {}).get(DIGEST_TAG)
    if not digest:
        raise CheckpointError(
            f"{uri}: version {entry.version} carries no {DIGEST_TAG} tag; register it with recserve"
        )
    return CheckpointInfo(uri, name, str(entry.version), digest)


def move_alias(tracking_uri: str | None, name: str, alias: str, version: str) -> None:
    """Point ``models:/name@alias`` at ``version`` in the shared registry."""
    uri = f"models:/{name}@{alias}"
    if not tracking_uri:
        raise CheckpointError(f"{uri}: set the operator's MLflow tracking URI (RECSERVE_MLFLOW_TRACKING_URI)")
    client = registry_client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_alias(name, alias, version)
    except (MlflowException, OSError) as error:
        raise registry_failure(uri, tracking_uri, error) from error


def _has_model(client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except (MlflowException, OSError):
        return False
    return True
