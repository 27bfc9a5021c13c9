"""The typed serve config, and its rendering into Ray Serve's own deploy schema.

One config drives every place the app runs: ``recserve up`` PUTs the rendered dict to a
local Ray cluster's Serve REST API, and the operator embeds the same dict as a KubeRay
RayService's ``serveConfigV2``. Everything the replicas need arrives through the
application ``args`` (import path plus args, nothing else), and the settings SREs tune
live in the per-deployment overrides, where Ray applies them without a restart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from recserve_serving.errors import InvalidRequest
from recserve_serving.schema import CamelModel
from recserve_serving.serving_spec import AutoscalingSpec, RetrievalSpec, ServingSpec

APP_IMPORT_PATH = "recserve_serving.serve.app:build_app"
ROUTER_DEPLOYMENT = "Router"
VersionName = Literal["stable", "canary"]


def ranker_deployment_name(version: VersionName) -> str:
    return f"Ranker-{version}"


class RankerConfig(CamelModel):
    """One served model version: its engine and how its replicas scale."""

    version: VersionName
    label: str = Field(..., min_length=1, description="Shown in X-Recserve-Version, e.g. movielens-ranker/3.")
    engine_dir: str = Field(..., min_length=1)
    serving: ServingSpec = ServingSpec()


class RouterConfig(CamelModel):
    """What the ingress needs to turn a user id into candidates and a ranked list."""

    model_name: str = Field(..., min_length=1, description="The name in /v2/models/{name}.")
    data_dir: str = Field(
        ..., min_length=1, description="The MovieLens folder used for histories and titles."
    )
    index_dir: str = Field(..., min_length=1, description="Where the item-embedding index is cached.")
    retrieval: RetrievalSpec = RetrievalSpec()
    max_history: int = Field(50, ge=1, le=10_000, description="Longer client histories are truncated.")
    max_infer_pairs: int = Field(4_096, ge=1, le=1_000_000, description="Largest OIP infer request.")


class TrafficConfig(CamelModel):
    """The router's ``user_config``: Ray applies a change to it without restarting replicas."""

    canary_weight: int = Field(0, ge=0, le=100)
    shadow_percent: float = Field(0.0, ge=0.0, le=100.0)


class ServeAppConfig(CamelModel):
    """The whole application: HTTP binding, router, and the stable (and maybe canary) ranker."""

    name: str = Field(..., min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    router: RouterConfig
    stable: RankerConfig
    canary: RankerConfig | None = None
    traffic: TrafficConfig = TrafficConfig()

    @model_validator(mode="after")
    def _versions(self) -> ServeAppConfig:
        if self.stable.version != "stable":
            raise ValueError("stable.version must be 'stable'")
        if self.canary is not None and self.canary.version != "canary":
            raise ValueError("canary.version must be 'canary'")
        if self.canary is None and (self.traffic.canary_weight or self.traffic.shadow_percent):
            raise ValueError("traffic.canaryWeight and shadowPercent need a canary version")
        return self

    def rankers(self) -> list[RankerConfig]:
        return [self.stable] if self.canary is None else [self.stable, self.canary]


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


def _ranker_deployment(ranker: RankerConfig) -> dict[str, Any]:
    serving = ranker.serving
    deployment: dict[str, Any] = {
        "name": ranker_deployment_name(ranker.version),
        "autoscaling_config": _ray_autoscaling(serving.autoscaling),
        "max_ongoing_requests": serving.max_ongoing_requests,
        "ray_actor_options": {
            "num_cpus": serving.resources.cpus,
            "num_gpus": serving.resources.gpus,
            "memory": serving.resources.memory_bytes,
        },
    }
    if serving.parallelism.pipeline > 1:
        # The replica itself is a light coordinator in bundle 0; each stage actor gets a bundle.
        stage: dict[str, float] = {"CPU": serving.resources.cpus}
        if serving.resources.gpus:
            stage["GPU"] = serving.resources.gpus
        deployment["ray_actor_options"] = {"num_cpus": 0.1, "num_gpus": 0}
        deployment["placement_group_bundles"] = [{"CPU": 0.1}] + [
            dict(stage) for _ in range(serving.parallelism.pipeline)
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


def render_serve_config(config: ServeAppConfig) -> dict[str, Any]:
    """Ray Serve's deploy schema (``serve deploy`` / KubeRay ``serveConfigV2``) for ``config``."""
    router = {
        "name": ROUTER_DEPLOYMENT,
        "num_replicas": 1,
        "max_ongoing_requests": 256,
        "user_config": config.traffic.to_dict(),
        "ray_actor_options": {"num_cpus": 0.5},
    }
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": config.host, "port": config.port},
        "applications": [
            {
                "name": config.name,
                "route_prefix": config.route_prefix,
                "import_path": APP_IMPORT_PATH,
                # Traffic is left out of args on purpose: args changes redeploy every replica,
                # while the router's user_config below is applied in place.
                "args": {k: v for k, v in config.to_dict().items() if k != "traffic"},
                "deployments": [router, *(_ranker_deployment(r) for r in config.rankers())],
            }
        ],
    }
