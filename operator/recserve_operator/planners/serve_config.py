"""RecommenderModel spec + built engines → the typed serve config (``ServeAppConfig``).

The same function feeds ``recserve up`` (local Ray) and the RayService planner
(``serveConfigV2``), so the two never disagree on what is served.
"""

from __future__ import annotations

from dataclasses import dataclass

from recserve_operator.api.types import RecommenderModel
from recserve_serving.serve.config import (
    RankerConfig,
    RouterConfig,
    ServeAppConfig,
    TrafficConfig,
    VersionName,
)


@dataclass(frozen=True)
class EngineRef:
    """A built engine as the serve config names it."""

    label: str
    engine_dir: str


def _ranker(model: RecommenderModel, version: VersionName, engine: EngineRef) -> RankerConfig:
    return RankerConfig(
        version=version, label=engine.label, engine_dir=engine.engine_dir, serving=model.spec.serving
    )


def plan_serve_config(
    model: RecommenderModel,
    *,
    stable: EngineRef,
    data_dir: str,
    index_dir: str,
    canary: EngineRef | None = None,
    traffic: TrafficConfig | None = None,
    host: str = "0.0.0.0",
    port: int = 8000,
) -> ServeAppConfig:
    name = model.metadata.name or ""
    return ServeAppConfig(
        name=name,
        host=host,
        port=port,
        router=RouterConfig(
            model_name=name,
            data_dir=data_dir,
            index_dir=index_dir,
            retrieval=model.spec.serving.retrieval,
        ),
        stable=_ranker(model, "stable", stable),
        canary=None if canary is None else _ranker(model, "canary", canary),
        traffic=traffic or TrafficConfig(),
    )
