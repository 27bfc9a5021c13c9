"""Operator-wide settings, read once from the environment (the Helm chart's values set them).

Settings that cannot work are refused here, at startup, with the fix in the message, rather
than discovered later in a build Job: an artifact store recserve cannot write, or registry
credentials inside the tracking URI, which would be copied into every build pod's
environment (credentials come from a Secret instead, see ``mlflow_credentials_secret``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from recserve_serving.errors import InvalidRequest
from recserve_serving.paths import IMAGE_DATA_DIR
from recserve_serving.redact import has_credentials
from recserve_serving.release import SERVING_IMAGE
from recserve_serving.serve.config import SERVE_PORT

PVC_PREFIX = "pvc://"
MLFLOW_SECRET_KEYS = {"MLFLOW_TRACKING_USERNAME": "username", "MLFLOW_TRACKING_PASSWORD": "password"}
"""The env vars MLflow reads credentials from, and the Secret key each one is taken from."""


@dataclass(frozen=True)
class OperatorSettings:
    serving_image: str = SERVING_IMAGE
    builder_image: str = SERVING_IMAGE
    mlflow_tracking_uri: str | None = None
    mlflow_credentials_secret: str | None = None
    """A Secret (keys ``username``, ``password``) in each model's namespace, for build Jobs."""
    prometheus_url: str | None = None
    artifact_store: str = "pvc://recserve-artifacts"
    artifact_mount: str = "/artifacts"
    default_gpu_product: str | None = None
    build_deadline_seconds: int = 3600
    build_backoff_limit: int = 2
    serve_rest_url: str | None = None
    serve_port: int = SERVE_PORT
    local_state: str | None = None
    data_dir: str = IMAGE_DATA_DIR
    """The catalog inside the serving image, read by every router."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ if env is None else env)
        base = cls()
        settings = cls(
            serving_image=env.get("RECSERVE_SERVING_IMAGE", base.serving_image),
            builder_image=env.get(
                "RECSERVE_BUILDER_IMAGE", env.get("RECSERVE_SERVING_IMAGE", base.builder_image)
            ),
            mlflow_tracking_uri=env.get("RECSERVE_MLFLOW_TRACKING_URI") or None,
            mlflow_credentials_secret=env.get("RECSERVE_MLFLOW_CREDENTIALS_SECRET") or None,
            prometheus_url=env.get("RECSERVE_PROMETHEUS_URL") or None,
            artifact_store=env.get("RECSERVE_ARTIFACT_STORE", base.artifact_store),
            default_gpu_product=env.get("RECSERVE_DEFAULT_GPU_PRODUCT") or None,
            serve_rest_url=env.get("RECSERVE_SERVE_REST_URL") or None,
            serve_port=int(env.get("RECSERVE_SERVE_PORT", base.serve_port)),
            local_state=env.get("RECSERVE_HOME") or None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not self.artifact_store.startswith(PVC_PREFIX) or not self.artifact_store.removeprefix(PVC_PREFIX):
            raise InvalidRequest(
                f"RECSERVE_ARTIFACT_STORE={self.artifact_store!r}: the artifact store must be "
                "pvc://CLAIM (a ReadWriteMany claim in every model namespace); s3:// is not supported"
            )
        if self.mlflow_tracking_uri and has_credentials(self.mlflow_tracking_uri):
            raise InvalidRequest(
                "RECSERVE_MLFLOW_TRACKING_URI embeds credentials, which would reach status, events and "
                "pod environments: remove user:password@ from it and put them in a Secret with keys "
                "username and password, named by RECSERVE_MLFLOW_CREDENTIALS_SECRET "
                "(chart value config.mlflowCredentialsSecret)"
            )

    @property
    def engine_root(self) -> str:
        """Where engines live inside every pod that mounts the artifact store."""
        return f"{self.artifact_mount}/engines"

    @property
    def index_dir(self) -> str:
        """Where routers cache the retrieval index: the artifact store, so pods share one build."""
        return f"{self.artifact_mount}/retrieval"
