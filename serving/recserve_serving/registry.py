"""Checkpoint registry and URI resolution: MLflow's model registry on sqlite, embedded.

``models:/name/3`` and ``models:/name@alias`` go through MLflow; ``file://`` and ``pvc://``
point at directories directly. Every resolution ends in a local directory plus its
sha256 digest, and registry entries are verified against the digest recorded when they
were registered, so a swapped or damaged artifact is caught before any build uses it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from recserve_serving.engine.digests import directory_digest
from recserve_serving.errors import AliasNotSet, CheckpointError
from recserve_serving.registry_http import (
    NOT_FOUND_CODES,
    import_mlflow,
    registry_client,
    registry_failure,
)
from recserve_serving.uri_paths import S3_UNSUPPORTED, SUPPORTED_CHECKPOINTS, path_problem, pvc_path

CHAMPION = "champion"
DIGEST_TAG = "recserve.digest"
LINEAGE_PREFIX = "recserve."
"""Every tag recserve writes on a model version starts with this: lineage (``data_cutoff``,
``parent_version``, ...) next to the digest, apart from whatever else a shared MLflow holds."""
DATA_CUTOFF_TAG = "recserve.data_cutoff"
"""Unix seconds of the newest interaction a version was trained on: where its retrain starts."""
EXPERIMENT = "recserve-training"
ARTIFACT_PATH = "checkpoint"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))/?$")


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint that exists locally and whose files match ``digest``."""

    uri: str
    name: str
    version: str | None
    path: Path
    digest: str


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow and alembic log and print on first use; none of that belongs on our stdout or
    stderr. Importing mlflow sets its loggers' levels, so the import comes before ours."""
    import_mlflow()
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class Registry:
    """The embedded MLflow registry under ``state`` (``mlflow.db`` and ``mlartifacts/``)."""

    def __init__(self, state: Path, tracking_uri: str | None = None) -> None:
        """The embedded registry under ``state``, or a shared MLflow server at ``tracking_uri``."""
        self.state = Path(state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.artifacts = self.state / "mlartifacts"
        self.tracking_uri = tracking_uri or f"sqlite:///{self.state / 'mlflow.db'}"
        with _quiet():
            self.client = registry_client(self.tracking_uri)

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return str(found.experiment_id)
        return str(self.client.create_experiment(EXPERIMENT, artifact_location=self.artifacts.as_uri()))

    def model_names(self) -> list[str]:
        with _quiet():
            return sorted(m.name for m in self.client.search_registered_models())

    def has_model(self, name: str) -> bool:
        return name in self.model_names()

    def register(
        self,
        name: str,
        checkpoint_dir: Path,
        metrics: dict[str, float],
        *,
        tags: Mapping[str, str] | None = None,
        aliases: Sequence[str] = (CHAMPION,),
    ) -> ResolvedCheckpoint:
        """Log ``checkpoint_dir`` as a run's artifacts and make it the newest version.

        ``tags`` (lineage: ``recserve.parent_version``, ``recserve.data_cutoff``, ...) go on the
        model version, where a resolver reads them; ``metrics`` on the run. The new version takes
        ``aliases``: champion by default, as a first ``recserve train`` wants; a retrain passes its
        candidate alias, or none when it is rejected.
        """
        from mlflow.exceptions import MlflowException

        checkpoint_dir = Path(checkpoint_dir)
        if not checkpoint_dir.is_dir():
            raise CheckpointError(f"cannot register {checkpoint_dir}: not a directory")
        digest = directory_digest(checkpoint_dir)
        version_tags = {**{k: str(v) for k, v in (tags or {}).items()}, DIGEST_TAG: digest}
        with _quiet():
            run = self.client.create_run(self._experiment_id(), run_name=f"train-{name}")
            run_id = run.info.run_id
            for key, value in metrics.items():
                self.client.log_metric(run_id, re.sub(r"[^\w./ -]", "_", key), float(value))
            self.client.set_tag(run_id, DIGEST_TAG, digest)
            self.client.log_artifacts(run_id, str(checkpoint_dir), artifact_path=ARTIFACT_PATH)
            self.client.set_terminated(run_id)
            try:
                self.client.get_registered_model(name)
            except MlflowException:
                self.client.create_registered_model(name)
            source = f"{run.info.artifact_uri}/{ARTIFACT_PATH}"
            version = self.client.create_model_version(name, source, run_id=run_id, tags=version_tags)
            for alias in aliases:
                self.client.set_registered_model_alias(name, alias, version.version)
        return self.resolve(f"models:/{name}/{version.version}")

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Point ``models:/name@alias`` at ``version`` (which must exist)."""
        self._entry(f"models:/{name}/{version}", name, str(version), None)
        with _quiet():
            self.client.set_registered_model_alias(name, alias, str(version))

    def version_tags(self, name: str, version: str | int) -> dict[str, str]:
        """The tags of one model version (the digest and lineage among them)."""
        entry = self._entry(f"models:/{name}/{version}", name, str(version), None)
        return {str(k): str(v) for k, v in (entry.tags or {}).items()}

    def latest_version(self, name: str) -> str:
        """The highest version number of ``name``; CheckpointError when it has none."""
        with _quiet():
            versions = [int(v.version) for v in self.client.search_model_versions(f"name='{name}'")]
        if not versions:
            known = ", ".join(self.model_names()) or "none"
            raise CheckpointError(f"models:/{name}: no registered model {name!r} (registered: {known})")
        return str(max(versions))

    def resolve(self, uri: str) -> ResolvedCheckpoint:
        """A local, digest-verified checkpoint for any supported URI."""
        scheme = urlparse(uri).scheme
        if scheme == "models":
            return self._resolve_models(uri)
        problem = path_problem(uri)
        if problem:
            raise CheckpointError(f"{uri}: {problem}")
        if scheme == "file":
            return _resolve_path(uri, Path(unquote(urlparse(uri).path)))
        if scheme == "pvc":
            return _resolve_path(uri, pvc_path(uri, CheckpointError))
        if scheme == "s3":
            raise CheckpointError(f"{uri}: {S3_UNSUPPORTED}")
        raise CheckpointError(f"unsupported checkpoint URI {uri!r}: use {SUPPORTED_CHECKPOINTS}")

    def _resolve_models(self, uri: str) -> ResolvedCheckpoint:
        from mlflow.exceptions import MlflowException

        match = _MODELS_URI.match(uri)
        if not match:
            raise CheckpointError(
                f"malformed model URI {uri!r}: expected models:/name/version or models:/name@alias"
            )
        name, version, alias = match["name"], match["version"], match["alias"]
        try:
            entry = self._entry(uri, name, version, alias)
        except MlflowException as error:
            raise registry_failure(uri, self.tracking_uri, error) from error
        return self._verified(uri, name, entry)

    def _entry(self, uri: str, name: str, version: str | None, alias: str | None) -> Any:
        """The registry's model version for ``uri``; CheckpointError names what does exist."""
        from mlflow.exceptions import MlflowException

        with _quiet():
            try:
                model = self.client.get_registered_model(name)
            except MlflowException as error:
                if getattr(error, "error_code", "") not in NOT_FOUND_CODES:
                    raise
                known = ", ".join(self.model_names()) or "none"
                raise CheckpointError(f"{uri}: no registered model {name!r} (registered: {known})") from None
            versions = sorted(
                (str(v.version) for v in self.client.search_model_versions(f"name='{name}'")), key=int
            )
            if alias is not None and alias not in (model.aliases or {}):
                known = ", ".join(f"@{a}" for a in sorted(model.aliases or {})) or "none"
                raise AliasNotSet(f"{uri}: model {name!r} has no alias @{alias} (aliases: {known})")
            if version is not None and version not in versions:
                raise CheckpointError(
                    f"{uri}: model {name!r} has no version {version} (versions: {', '.join(versions) or 'none'})"
                )
            return (
                self.client.get_model_version_by_alias(name, alias)
                if alias is not None
                else self.client.get_model_version(name, str(version))
            )

    def _verified(self, uri: str, name: str, entry: Any) -> ResolvedCheckpoint:
        expected = (entry.tags or {}).get(DIGEST_TAG)
        if not expected:
            raise CheckpointError(
                f"{uri}: version {entry.version} carries no {DIGEST_TAG} tag; re-register it"
            )
        path = self._local_path(uri, str(entry.source))
        actual = directory_digest(path)
        if actual != expected:
            raise CheckpointError(
                f"{uri}: checkpoint files at {path} have digest {actual}, "
                f"the registry recorded {expected}: they were changed after registration"
            )
        return ResolvedCheckpoint(uri, name, str(entry.version), path, actual)

    def _local_path(self, uri: str, source: str) -> Path:
        parsed = urlparse(source)
        if parsed.scheme in ("", "file"):
            path = Path(unquote(parsed.path))
        else:
            import mlflow.artifacts

            with _quiet():
                path = Path(
                    mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=self.tracking_uri)
                )
        if not path.is_dir():
            raise CheckpointError(f"{uri}: the registered artifacts at {source} are missing")
        return path


def _resolve_path(uri: str, path: Path) -> ResolvedCheckpoint:
    if not path.is_dir():
        raise CheckpointError(f"{uri}: checkpoint directory {path} does not exist")
    return ResolvedCheckpoint(uri, path.name, None, path.resolve(), directory_digest(path))
