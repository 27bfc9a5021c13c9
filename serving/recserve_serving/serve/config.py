"""The typed serve config, and its rendering into Ray Serve's own deploy schema.

One config drives every place the app runs: ``recserve up`` PUTs the rendered dict to a
local Ray cluster's Serve REST API, and the operator embeds the same dict as a KubeRay
RayService's ``serveConfigV2``.

Each model version is a Serve application of its own (a ranker app, named by a hash of its
args), beside one router app that owns HTTP. Ray Serve restarts every replica of an
application whose ``args`` change, so nothing that moves during a rollout lives in args:
adding a canary adds an application, promoting it only changes the router's ``user_config``
(applied in place), and the old version's application is removed once nothing routes to it.
That is what keeps weight changes, canary replacement and promotion free of failed requests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from recserve_serving.dataspec import DataSpec
from recserve_serving.errors import InvalidRequest
from recserve_serving.schema import CamelModel
from recserve_serving.serve.api_models import VERSION_HEADER
from recserve_serving.serving_spec import (
    AutoscalingSpec,
    BatchingSpec,
    ExplainSpec,
    FaultInjectionSpec,
    FeedbackLogSpec,
    LimitsSpec,
    ParallelismSpec,
    ResourcesSpec,
    RetrievalSpec,
    ServingSpec,
)

ROUTER_IMPORT_PATH = "recserve_serving.serve.app:build_router"
RANKER_IMPORT_PATH = "recserve_serving.serve.app:build_ranker"
ROUTER_DEPLOYMENT = "Router"
RANKER_DEPLOYMENT = "Ranker"
SERVE_PORT = 8000
"""The HTTP port of Ray Serve's proxy: Ray's own default, so ``serve`` tools find it unasked."""


class RankerArgs(CamelModel):
    """A ranker application's ``args``: what its replicas load. Changing any of it is a new app."""

    label: str = Field(..., min_length=1, description=f"Shown in {VERSION_HEADER}, e.g. shop-ranker/3.")
    engine_dir: str = Field(..., min_length=1)
    batching: BatchingSpec = BatchingSpec()
    parallelism: ParallelismSpec = ParallelismSpec()
    threads: int = Field(
        ResourcesSpec().engine_threads, ge=1, description="Engine threads per shard (resources.cpus)."
    )
    stage_resources: ResourcesSpec | None = Field(
        None,
        description="Each pipeline stage actor's resources (serving.resources), so that a stage asks "
        "for its bundle's GPU; set only with parallelism.pipeline > 1, which keeps the names of "
        "single-device ranker apps unchanged.",
    )
    fault_injection: FaultInjectionSpec | None = Field(
        None,
        description="Only ever set on a canary under a chaos drill (spec.rollout.canary.faultInjection).",
    )


class RankerConfig(CamelModel):
    """One served model version: its engine and how its replicas run and scale."""

    label: str = Field(..., min_length=1, description=f"Shown in {VERSION_HEADER}, e.g. shop-ranker/3.")
    engine_dir: str = Field(..., min_length=1)
    serving: ServingSpec = ServingSpec()
    fault_injection: FaultInjectionSpec | None = None

    def args(self) -> RankerArgs:
        return RankerArgs(
            label=self.label,
            engine_dir=self.engine_dir,
            batching=self.serving.batching,
            parallelism=self.serving.parallelism,
            threads=self.serving.resources.engine_threads,
            stage_resources=self.serving.resources if self.serving.parallelism.pipeline > 1 else None,
            fault_injection=self.fault_injection,
        )

    def app_name(self, model_name: str) -> str:
        """``<model>-<hash of args>``: the same version always maps to the same application."""
        canonical = json.dumps(self.args().to_dict(), sort_keys=True)
        return f"{model_name}-{hashlib.sha256(canonical.encode()).hexdigest()[:10]}"


MAX_REQUEST_HISTORY = 500
"""Likes of a request the router reads, most recent last. Retrieval folds every one of them in
(ALS, item-kNN), and on the bundled example reading only the last 50 cost a tenth of the served NDCG@10;
the ranker's text uses only the last few titles, so a long history costs retrieval microseconds."""


class RouterConfig(CamelModel):
    """What the ingress needs to turn a user id into candidates and a ranked list."""

    model_name: str = Field(..., min_length=1, description="The name in /v2/models/{name}.")
    data: DataSpec | None = Field(
        None,
        description="The model's spec.data: catalog, interactions, history source. Only in-process "
        "routers given their catalog (evaluation, tests) go without.",
    )
    index_dir: str = Field(..., min_length=1, description="Where the item-embedding index is cached.")
    online_dir: str | None = Field(
        None,
        min_length=1,
        description="Where this model's feedback log and embedded (SQLite) history store live; a "
        "folder every router replica can write. Without it /v1/feedback answers 503.",
    )
    pseudonym_key_file: str | None = Field(
        None,
        min_length=1,
        description="The key file of the user-id pseudonyms (HMAC-SHA256) that the feedback log and "
        "the history store are keyed by: a mounted Secret in clusters, a generated 0600 file embedded. "
        "Required with onlineDir.",
    )
    retrieval: RetrievalSpec = RetrievalSpec()
    max_history: int = Field(
        MAX_REQUEST_HISTORY, ge=1, le=10_000, description="Longer client histories are truncated."
    )
    max_infer_pairs: int = Field(4_096, ge=1, le=1_000_000, description="Largest OIP infer request.")
    limits: LimitsSpec = LimitsSpec()
    explain: ExplainSpec = ExplainSpec()
    feedback_log: FeedbackLogSpec = FeedbackLogSpec()

    def feedback_dir(self) -> Path | None:
        """Where the model's interaction log is (every replica's segments and tombstones)."""
        return None if self.online_dir is None else Path(self.online_dir) / "feedback"

    @model_validator(mode="after")
    def _writes_only_pseudonyms(self) -> RouterConfig:
        """A router with an online folder writes user ids (the interaction log, the history store),
        and without a key it could only write them raw: such a config is refused rather than run."""
        if self.online_dir is not None and self.pseudonym_key_file is None:
            raise ValueError(
                f"router {self.model_name}: onlineDir {self.online_dir} is set, so the router writes user "
                "ids to the interaction log and history store, but pseudonymKeyFile is not, and raw user "
                "ids are never written: set pseudonymKeyFile (recserve up generates "
                "<state>/secrets/pseudonym.key; the operator mounts its pseudonym Secret), or drop onlineDir"
            )
        return self


class Route(CamelModel):
    """Where one role (stable or canary) is served: a ranker application and its label."""

    app: str = Field(..., min_length=1)
    label: str = Field(..., min_length=1)


class TrafficSplit(CamelModel):
    """How requests divide between stable and canary: the part of a rollout that moves."""

    canary_weight: int = Field(0, ge=0, le=100, description="Percent of requests the canary answers.")
    shadow_percent: float = Field(
        0.0, ge=0.0, le=100.0, description="Percent of stable's requests also sent to the canary."
    )

    def reaches_canary(self) -> bool:
        return bool(self.canary_weight or self.shadow_percent)


class TrafficConfig(TrafficSplit):
    """The router's ``user_config``: Ray applies a change to it without restarting replicas."""

    stable: Route | None = None
    canary: Route | None = None

    @model_validator(mode="after")
    def _canary_needs_a_route(self) -> TrafficConfig:
        if self.canary is None and self.reaches_canary():
            raise ValueError("canaryWeight and shadowPercent need a canary route")
        return self

    @classmethod
    def routing(cls, stable: Route | None, canary: Route | None, split: TrafficSplit) -> TrafficConfig:
        """Routes with ``split``, which only a canary route can take: without one, stable gets all."""
        kept = split if canary is not None else TrafficSplit()
        return cls(stable=stable, canary=canary, **kept.model_dump(include=set(TrafficSplit.model_fields)))

    def routed_apps(self) -> set[str]:
        return {route.app for route in (self.stable, self.canary) if route is not None}


class ServeAppConfig(CamelModel):
    """The whole deployment: HTTP binding, the router, and the stable (and maybe canary) version."""

    name: str = Field(..., min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = Field(SERVE_PORT, ge=1, le=65535)
    router: RouterConfig
    stable: RankerConfig
    canary: RankerConfig | None = None
    split: TrafficSplit = TrafficSplit()

    @model_validator(mode="after")
    def _split_needs_a_canary(self) -> ServeAppConfig:
        if self.canary is None and self.split.reaches_canary():
            raise ValueError("canaryWeight and shadowPercent need a canary version")
        return self

    def route(self, ranker: RankerConfig) -> Route:
        return Route(app=ranker.app_name(self.name), label=ranker.label)

    def traffic(self) -> TrafficConfig:
        canary = None if self.canary is None else self.route(self.canary)
        return TrafficConfig.routing(self.route(self.stable), canary, self.split)

    def rankers(self) -> list[RankerConfig]:
        """Every version to deploy, each once (a canary may share the stable's application)."""
        seen = {self.stable.app_name(self.name): self.stable}
        if self.canary is not None:
            seen.setdefault(self.canary.app_name(self.name), self.canary)
        return list(seen.values())


def _ray_autoscaling(spec: AutoscalingSpec) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "target_ongoing_requests": spec.target_ongoing_requests,
        "upscale_delay_s": spec.upscale_delay_seconds,
        "downscale_delay_s": spec.downscale_delay_seconds,
    }
    if spec.initial_replicas is not None:
        rendered["initial_replicas"] = spec.initial_replicas
    return rendered


def _queue_bound(limits: LimitsSpec) -> dict[str, Any]:
    """Ray's own queue bound: a caller (the proxy, or the router's handle) that already holds
    this many requests for the deployment refuses the next with 503 and a Retry-After."""
    return {
        "max_queued_requests": limits.max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": limits.retry_after_seconds},
    }


def _ranker_deployment(ranker: RankerConfig) -> dict[str, Any]:
    serving = ranker.serving
    deployment: dict[str, Any] = {
        "name": RANKER_DEPLOYMENT,
        "autoscaling_config": _ray_autoscaling(serving.autoscaling),
        "max_ongoing_requests": serving.max_ongoing_requests,
        **_queue_bound(serving.limits),
        "ray_actor_options": {
            "num_cpus": serving.resources.cpus,
            "num_gpus": serving.resources.gpus,
            "memory": serving.resources.memory_bytes,
        },
    }
    if serving.parallelism.pipeline > 1:
        # The replica itself is a light coordinator in bundle 0; each stage actor gets a bundle.
        deployment["ray_actor_options"] = {"num_cpus": 0.1, "num_gpus": 0}
        deployment["placement_group_bundles"] = [{"CPU": 0.1}] + [
            serving.resources.bundle() for _ in range(serving.parallelism.pipeline)
        ]
        deployment["placement_group_strategy"] = "STRICT_PACK"
    return deployment


def check_with_ray(rendered: dict[str, Any]) -> None:
    """Validate a rendered config with Ray Serve's own schema and autoscaling rules.

    Our models mirror Ray's bounds, but Ray is the authority: this catches any drift
    between the two before a config reaches a cluster, where it would fail asynchronously.
    """
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    try:
        schema = ServeDeploySchema.model_validate(rendered)
        for app in schema.applications:
            for deployment in app.deployments:
                autoscaling = getattr(deployment, "autoscaling_config", None)
                if isinstance(autoscaling, dict):
                    AutoscalingConfig.model_validate(autoscaling)
    except ValidationError as error:
        raise InvalidRequest(f"Ray Serve rejects the rendered serve config: {error}") from error


def render_serve_config(config: ServeAppConfig, traffic: TrafficConfig | None = None) -> dict[str, Any]:
    """Ray Serve's deploy schema (``serve deploy`` / KubeRay ``serveConfigV2``) for ``config``:
    every version deployed, routed as ``traffic`` says (by default, as ``config`` says)."""
    router = {
        "name": ROUTER_DEPLOYMENT,
        "num_replicas": 1,
        "max_ongoing_requests": 256,
        **_queue_bound(config.router.limits),
        "user_config": (traffic or config.traffic()).to_dict(),
        "ray_actor_options": {"num_cpus": 0.5},
    }
    rankers = [
        {
            "name": ranker.app_name(config.name),
            "route_prefix": None,
            "import_path": RANKER_IMPORT_PATH,
            "args": ranker.args().to_dict(),
            "deployments": [_ranker_deployment(ranker)],
        }
        for ranker in config.rankers()
    ]
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": config.host, "port": config.port},
        "applications": [
            {
                "name": config.name,
                "route_prefix": config.route_prefix,
                "import_path": ROUTER_IMPORT_PATH,
                "args": config.router.to_dict(),
                "deployments": [router],
            },
            *rankers,
        ],
    }


def owned_by(app_name: str, model_name: str) -> bool:
    """Whether a Serve application is one of ``model_name``'s (its router or a ranker app)."""
    if app_name == model_name:
        return True
    prefix, _, suffix = app_name.rpartition("-")
    return prefix == model_name and len(suffix) == 10 and all(c in "0123456789abcdef" for c in suffix)


def deployed_traffic(rendered: dict[str, Any], name: str) -> TrafficConfig | None:
    """The router's traffic in a rendered (or deployed) config: what the router was last told."""
    for app in rendered.get("applications") or []:
        if app.get("name") == name:
            for deployment in app.get("deployments") or []:
                if deployment.get("name") == ROUTER_DEPLOYMENT and deployment.get("user_config"):
                    return TrafficConfig.model_validate(deployment["user_config"])
    return None
