"""RecommenderModel spec + built engines + what Ray Serve runs now → the serve config to apply.

The same functions feed ``recserve up`` (local Ray) and the RayService planner
(``serveConfigV2``), so the two never disagree on what is served.

The hand-over rules are what make a rollout free of failed requests, given that each version
is its own Serve application (see ``recserve_serving.serve.config``):

1. a version is routed only once its application is RUNNING: a new canary warms up at 0%, and
   a new stable version keeps the old one routed until it can take over (on a first deploy there
   is nothing to keep, so it is routed at once and readiness waits for it);
2. a version that loses its route stays deployed until the router has applied the change
   (the router app is RUNNING with a traffic config that no longer names it), so requests the
   router already sent it finish, and none is sent to a vanished application.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recserve_operator.api.types import RecommenderModel
from recserve_serving.dataspec import DataSpec
from recserve_serving.errors import InvalidRequest
from recserve_serving.serve.config import (
    SERVE_PORT,
    RankerConfig,
    RouterConfig,
    ServeAppConfig,
    TrafficConfig,
    TrafficSplit,
    deployed_traffic,
    render_serve_config,
)
from recserve_serving.serving_spec import FaultInjectionSpec


@dataclass(frozen=True)
class ServedVersion:
    """A model version to serve: the label clients and metrics see, and its built engine."""

    label: str
    engine_dir: str
    fault_injection: FaultInjectionSpec | None = None
    """Set only while the version is a canary under a chaos drill."""


@dataclass(frozen=True)
class DeployPlan:
    """What should be served: the stable version, maybe a canary version, and the traffic split."""

    stable: ServedVersion
    canary: ServedVersion | None = None
    traffic: TrafficSplit = field(default_factory=TrafficSplit)


@dataclass(frozen=True)
class ServeSite:
    """Where a platform's serve app reads its retrieval indexes, keeps its online data (the
    feedback log, an embedded history store: one folder per model under ``online_dir``), and
    where it listens."""

    index_dir: str
    online_dir: str | None = None
    pseudonym_key_file: str | None = None
    """The key of the user-id pseudonyms, as routers see it (required with ``online_dir``)."""
    history_redis: str | None = None
    """The operator's default Redis, for history stores that name none."""
    host: str = "0.0.0.0"
    port: int = SERVE_PORT


@dataclass(frozen=True)
class ServeObservation:
    """What the Serve controller reports: the config it was last given and its RUNNING apps."""

    deployed: dict[str, Any] | None = None
    running: frozenset[str] = field(default_factory=frozenset)


def with_history_redis(data: DataSpec, default: str | None) -> DataSpec:
    """``data`` with the operator's default Redis filled in where its store is redis without a
    connection string; InvalidRequest (the spec's fix, named) when there is no default."""
    store = data.history.store
    if store is None or store.kind != "redis" or store.connection_string is not None:
        return data
    if default is None:
        raise InvalidRequest(
            "spec.data.history.store: kind redis without connectionString uses the operator's default "
            "Redis (chart value config.historyRedis), and this operator has none: set connectionString"
        )
    filled = store.model_copy(update={"connection_string": default})
    return data.model_copy(update={"history": data.history.model_copy(update={"store": filled})})


def plan_serve_config(model: RecommenderModel, plan: DeployPlan, site: ServeSite) -> ServeAppConfig:
    """The desired end state: both versions deployed and routed as the rollout says."""
    name = model.metadata.name or ""

    def ranker(version: ServedVersion) -> RankerConfig:
        return RankerConfig(
            label=version.label,
            engine_dir=version.engine_dir,
            serving=model.spec.serving,
            fault_injection=version.fault_injection,
        )

    return ServeAppConfig(
        name=name,
        host=site.host,
        port=site.port,
        router=RouterConfig(
            model_name=name,
            data=with_history_redis(model.spec.data_or_example, site.history_redis),
            index_dir=site.index_dir,
            online_dir=None if site.online_dir is None else f"{site.online_dir}/{name}",
            pseudonym_key_file=site.pseudonym_key_file,
            retrieval=model.spec.serving.retrieval,
            limits=model.spec.serving.limits,
            explain=model.spec.serving.explain,
            feedback_log=model.spec.serving.feedback_log,
        ),
        stable=ranker(plan.stable),
        canary=None if plan.canary is None else ranker(plan.canary),
        split=plan.traffic if plan.canary is not None else TrafficSplit(),
    )


@dataclass(frozen=True)
class HandOver:
    """The config to apply now, and whether it already routes exactly as desired."""

    rendered: dict[str, Any]
    traffic: TrafficConfig
    settled: bool


def plan_hand_over(desired: ServeAppConfig, observed: ServeObservation) -> HandOver:
    """The step from what runs now toward ``desired`` that never routes to a missing version."""
    deployed = observed.deployed or {}
    apps = {app["name"]: app for app in deployed.get("applications") or [] if "name" in app}
    before = deployed_traffic(deployed, desired.name)
    want = desired.traffic()

    stable = want.stable
    if (
        stable is not None
        and stable.app not in observed.running
        and before is not None
        and before.stable is not None
        and before.stable.app in observed.running
        and before.stable.app in apps
    ):
        stable = before.stable  # the new stable version is still starting
    canary = want.canary if want.canary is not None and want.canary.app in observed.running else None
    traffic = TrafficConfig.routing(stable, canary, want)
    rendered = render_serve_config(desired, traffic)
    present = {app["name"] for app in rendered["applications"]}
    router_applied = desired.name in observed.running and before == traffic
    keep = set(traffic.routed_apps())
    if before is not None:
        keep |= before.routed_apps()
    if not router_applied:
        keep |= {name for name in apps if name != desired.name}
    rendered["applications"] += [apps[name] for name in sorted(keep - present) if name in apps]
    return HandOver(rendered, traffic, settled=traffic == want)
