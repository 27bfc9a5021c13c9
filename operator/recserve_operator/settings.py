"""Operator-wide settings, read once from the environment (the Helm chart's values set them).

Settings that cannot work are refused here, at startup, with the fix in the message, rather
than discovered later in a build Job: an artifact store recserve cannot write, or registry
credentials inside the tracking URI, which would be copied into every build pod's
environment (credentials come from a Secret instead, see ``mlflow_credentials_secret``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from recserve_serving.errors import InvalidRequest
from recserve_serving.paths import IMAGE_DATA_DIR
from recserve_serving.redact import has_credentials
from recserve_serving.release import BUILDER_IMAGE, SERVING_IMAGE
from recserve_serving.serve.config import SERVE_PORT
from recserve_serving.serving_spec import QUANTITY_PATTERN, quantity_bytes

PVC_PREFIX = "pvc://"
MLFLOW_SECRET_KEYS = {"MLFLOW_TRACKING_USERNAME": "username", "MLFLOW_TRACKING_PASSWORD": "password"}
"""The env vars MLflow reads credentials from, and the Secret key each one is taken from."""
NETWORK_POLICY_PEERS = ("servingClients", "operator", "kuberay", "metrics")
"""Who may reach a model's Ray pods (keys of ``RECSERVE_NETWORK_POLICY``, each a list of
NetworkPolicyPeer): clients on the Serve HTTP port, the recserve operator on the Serve HTTP
port (it scrapes ``/metrics``), the KubeRay operator on the dashboard, Prometheus on both
metrics ports."""
CPU_QUANTITY = r"^([0-9]+(\.[0-9]{1,3})?|[0-9]+m)$"
"""What the operator accepts as a CPU request: whole or decimal cores, or millicores."""
PSEUDONYM_MOUNT = "/var/run/recserve/pseudonym"
"""Where Ray pods mount the pseudonym key Secret, read-only."""
PSEUDONYM_SECRET_KEY = "key"
"""The Secret's data key that holds the pseudonymization key."""
SECRET_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TRAINER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "2", "memory": "8Gi"},
    "limits": {"cpu": "2", "memory": "8Gi"},
}
"""A retrain pod's default size: a fine-tune of the MiniLM ranker on CPU, like a build Job."""


@dataclass(frozen=True)
class OperatorSettings:
    serving_image: str = SERVING_IMAGE
    builder_image: str = BUILDER_IMAGE
    """Build Jobs need torch, which the CPU serving image leaves out; the CUDA serving image has
    it, so GPU installs name that one for both."""
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
    """Where ``bundled://`` data sets are inside the serving and builder images."""
    history_redis: str | None = None
    """The Redis that models' history stores use when their spec says ``kind: redis`` without a
    ``connectionString`` (chart value ``config.historyRedis``)."""
    pseudonym_secret: str = "recserve-pseudonym-key"
    """The Secret (key ``key``) in each model's namespace whose value keys the user-id pseudonyms
    (HMAC-SHA256) of the interaction log and history store; the chart creates it."""
    online_dir: str = "/online"
    """Where routers (on the Ray head) mount the artifact claim's ``online/`` folder, writable:
    each model's feedback log and embedded history store live under it."""
    network_policy: dict[str, list[dict[str, Any]]] | None = field(default=None, hash=False)
    """Peers per ``NETWORK_POLICY_PEERS`` key; None: the operator plans no NetworkPolicy."""
    ray_head_cpu: str = "2"
    """The Ray head's CPU request and limit. The head runs the Serve controller, the HTTP proxy
    and the router, so its size follows the traffic, not the model: small nodes or quiet models
    take less, busy ones more."""
    ray_head_memory: str = "4Gi"
    ray_worker_overhead_cpu: float = 1.0
    """CPUs each worker pod requests beyond its replica's shards: the raylet, the object store and
    a placement group's coordinator. Lower it where nodes are small and replicas light."""
    trainer_image: str = BUILDER_IMAGE
    """Image of retrain CronJobs: a fine-tune needs torch, which the builder image has."""
    trainer_pull_policy: str | None = None
    """imagePullPolicy of retrain pods; None leaves Kubernetes' default for the tag."""
    trainer_resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: {kind: dict(values) for kind, values in TRAINER_RESOURCES.items()},
        hash=False,
    )
    """Requests and limits of a retrain pod (a ResourceRequirements without claims)."""
    trainer_service_account: str | None = None
    """ServiceAccount of retrain pods, in each model namespace: one without RBAC bindings (the
    chart's ``trainer``). The pods mount no token either way; None: the namespace's default."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ if env is None else env)
        base = cls()
        settings = cls(
            serving_image=env.get("RECSERVE_SERVING_IMAGE", base.serving_image),
            builder_image=env.get("RECSERVE_BUILDER_IMAGE", base.builder_image),
            mlflow_tracking_uri=env.get("RECSERVE_MLFLOW_TRACKING_URI") or None,
            mlflow_credentials_secret=env.get("RECSERVE_MLFLOW_CREDENTIALS_SECRET") or None,
            prometheus_url=env.get("RECSERVE_PROMETHEUS_URL") or None,
            history_redis=env.get("RECSERVE_HISTORY_REDIS") or None,
            pseudonym_secret=env.get("RECSERVE_PSEUDONYM_SECRET") or base.pseudonym_secret,
            artifact_store=env.get("RECSERVE_ARTIFACT_STORE", base.artifact_store),
            default_gpu_product=env.get("RECSERVE_DEFAULT_GPU_PRODUCT") or None,
            serve_rest_url=env.get("RECSERVE_SERVE_REST_URL") or None,
            serve_port=int(env.get("RECSERVE_SERVE_PORT", base.serve_port)),
            local_state=env.get("RECSERVE_HOME") or None,
            network_policy=_network_policy(env.get("RECSERVE_NETWORK_POLICY") or None),
            ray_head_cpu=env.get("RECSERVE_RAY_HEAD_CPU") or base.ray_head_cpu,
            ray_head_memory=env.get("RECSERVE_RAY_HEAD_MEMORY") or base.ray_head_memory,
            ray_worker_overhead_cpu=_overhead_cpu(env.get("RECSERVE_RAY_WORKER_OVERHEAD_CPU") or None),
            trainer_image=env.get("RECSERVE_TRAINER_IMAGE")
            or env.get("RECSERVE_BUILDER_IMAGE", base.builder_image),
            trainer_pull_policy=env.get("RECSERVE_TRAINER_PULL_POLICY") or None,
            trainer_resources=_trainer_resources(env.get("RECSERVE_TRAINER_RESOURCES") or None),
            trainer_service_account=env.get("RECSERVE_TRAINER_SERVICE_ACCOUNT") or None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not re.fullmatch(CPU_QUANTITY, self.ray_head_cpu) or cpu_millis(self.ray_head_cpu) == 0:
            raise InvalidRequest(
                f"RECSERVE_RAY_HEAD_CPU={self.ray_head_cpu!r}: must be a positive CPU quantity such as "
                "2, 1.5 or 500m (chart value config.rayHeadCpu)"
            )
        if (
            not re.fullmatch(QUANTITY_PATTERN, self.ray_head_memory)
            or quantity_bytes(self.ray_head_memory) < 2**30
        ):
            raise InvalidRequest(
                f"RECSERVE_RAY_HEAD_MEMORY={self.ray_head_memory!r}: must be a memory quantity of at least "
                "1Gi, such as 4Gi (chart value config.rayHeadMemory); a Ray head with less does not start"
            )
        if not self.artifact_store.startswith(PVC_PREFIX) or not self.artifact_store.removeprefix(PVC_PREFIX):
            raise InvalidRequest(
                f"RECSERVE_ARTIFACT_STORE={self.artifact_store!r}: the artifact store must be "
                "pvc://CLAIM (a ReadWriteMany claim in every model namespace); s3:// is not supported"
            )
        if not re.fullmatch(SECRET_NAME, self.pseudonym_secret):
            raise InvalidRequest(
                f"RECSERVE_PSEUDONYM_SECRET={self.pseudonym_secret!r}: must be a Secret name (lowercase "
                "letters, digits, '-' and '.', at most 253 characters), the Secret whose key 'key' holds "
                "the user-id pseudonymization key"
            )
        if self.trainer_pull_policy is not None and self.trainer_pull_policy not in PULL_POLICIES:
            raise InvalidRequest(
                f"RECSERVE_TRAINER_PULL_POLICY={self.trainer_pull_policy!r}: must be one of "
                f"{', '.join(PULL_POLICIES)} (chart value training.image.pullPolicy)"
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
    def pseudonym_key_file(self) -> str:
        """The key file routers read: the pseudonym Secret's key, mounted by ``pseudonym_volume``."""
        return f"{PSEUDONYM_MOUNT}/{PSEUDONYM_SECRET_KEY}"

    @property
    def index_dir(self) -> str:
        """Where the catalog's retrieval index lives: in the artifact store, written by build
        Jobs (the builder image has torch, which building it takes) and read by routers, whose
        image has no torch, from their read-only mount."""
        return f"{self.artifact_mount}/retrieval"


def cpu_millis(quantity: str) -> int:
    """Millicores of a CPU quantity (``2``, ``1.5``, ``500m``)."""
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return round(float(quantity) * 1000)


def _overhead_cpu(raw: str | None) -> float:
    if raw is None:
        return OperatorSettings.ray_worker_overhead_cpu
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 64:
        raise InvalidRequest(
            f"RECSERVE_RAY_WORKER_OVERHEAD_CPU={raw!r}: must be a number of CPUs from 0 to 64, such "
            "as 1 or 0.25 (chart value config.rayWorkerOverheadCpu)"
        )
    return value


def _trainer_resources(raw: str | None) -> dict[str, dict[str, str]]:
    """``RECSERVE_TRAINER_RESOURCES`` (JSON, rendered by the chart from ``training.resources``),
    refused at startup when it is not a ResourceRequirements of quantities, rather than by the API
    server at the first scheduled retrain."""
    if raw is None:
        return {kind: dict(values) for kind, values in TRAINER_RESOURCES.items()}
    fix = (
        "RECSERVE_TRAINER_RESOURCES must be a JSON object with requests and/or limits, each mapping "
        'resource names to quantities, e.g. {"requests": {"cpu": "2", "memory": "8Gi"}} '
        "(chart value training.resources)"
    )
    try:
        parsed = json.loads(raw)
    except ValueError as error:
        raise InvalidRequest(f"{fix}: {error}") from error
    if (
        not isinstance(parsed, dict)
        or not set(parsed) <= {"requests", "limits"}
        or not all(isinstance(v, dict) for v in parsed.values())
        or not all(
            isinstance(k, str) and isinstance(q, str | int | float)
            for v in parsed.values()
            for k, q in v.items()
        )
    ):
        raise InvalidRequest(f"{fix}; got {raw[:200]!r}")
    return {kind: {name: str(q) for name, q in values.items()} for kind, values in parsed.items()}


def _network_policy(raw: str | None) -> dict[str, list[dict[str, Any]]] | None:
    """``RECSERVE_NETWORK_POLICY`` (JSON, rendered by the chart), refused at startup when it
    names an unknown peer group or a group is not a list, rather than planned half-open."""
    if raw is None:
        return None
    fix = (
        "RECSERVE_NETWORK_POLICY must be a JSON object whose keys are among "
        f"{', '.join(NETWORK_POLICY_PEERS)} and whose values are lists of NetworkPolicyPeer "
        "(chart values networkPolicy.*)"
    )
    try:
        parsed = json.loads(raw)
    except ValueError as error:
        raise InvalidRequest(f"{fix}: {error}") from error
    if not isinstance(parsed, dict) or not set(parsed) <= set(NETWORK_POLICY_PEERS):
        raise InvalidRequest(f"{fix}; got {raw[:200]!r}")
    if not all(isinstance(v, list) and all(isinstance(p, dict) for p in v) for v in parsed.values()):
        raise InvalidRequest(f"{fix}; got {raw[:200]!r}")
    return {key: list(parsed.get(key) or []) for key in NETWORK_POLICY_PEERS}
