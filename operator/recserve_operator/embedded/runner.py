"""``recserve up``: one RecommenderModel from spec to served recommendations, on local Ray.

The steps are the operator's, run in-process: resolve the checkpoint in the registry
(training the MovieLens seed model on first use), build or fetch the engine, render the
serve config, and roll it out through the Ray Serve REST target. Everything started is
owned by this process and stopped when it ends, however it ends.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from recserve_operator.api.types import RecommenderModel
from recserve_operator.embedded.local_ray import (
    RayClusterInfo,
    is_running,
    start_local_ray,
    stop_local_ray,
    to_dict,
)
from recserve_operator.embedded.runs import RunRecord
from recserve_operator.planners.serve_config import EngineRef, plan_serve_config
from recserve_operator.rollout.serve_rest import ServeRestTarget
from recserve_operator.validate import load_model
from recserve_serving.errors import InvalidRequest, Unavailable
from recserve_serving.paths import movielens_dir
from recserve_serving.serve.config import ServeAppConfig, render_serve_config
from recserve_serving.waiting import WaitTimeout, wait_for

Say = Callable[[str], None]


def say_flushed(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class UpOptions:
    manifest: Path
    state: Path
    host: str = "127.0.0.1"
    port: int = 8000
    ready_timeout: float = 600.0


def _ray_cpus(config: ServeAppConfig) -> int:
    """Logical CPUs for Ray: what the deployments ask for at most, never below the machine's."""
    wanted = 0.5 + sum(
        r.serving.resources.cpus * r.serving.autoscaling.max_replicas for r in config.rankers()
    )
    return max(os.cpu_count() or 1, math.ceil(wanted))


def model_name(model: RecommenderModel) -> str:
    if not model.metadata.name:
        raise InvalidRequest("metadata.name: required by `recserve up` (generateName needs an API server)")
    return model.metadata.name


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class EmbeddedRun:
    """One ``up``: prepare (no processes), then serve until interrupted, then clean up."""

    def __init__(self, options: UpOptions, say: Say = say_flushed) -> None:
        self.options = options
        self.say = say
        self.ray: RayClusterInfo | None = None
        self.config: ServeAppConfig | None = None

    def prepare(self, model: RecommenderModel) -> ServeAppConfig:
        """Everything that needs no running process: resolve, build, render.

        The registry and builder pull in MLflow and torch, so they are imported here, after
        the cheap checks, to keep a typo in a manifest a sub-second error.
        """
        from recserve_operator.embedded.checkpoints import ensure_checkpoint
        from recserve_serving.engine.build import build_engine
        from recserve_serving.registry import Registry

        registry = Registry(self.options.state)
        checkpoint = ensure_checkpoint(registry, model.spec.checkpoint.uri, self.say)
        self.say(
            f"checkpoint {checkpoint.uri} -> {checkpoint.name} v{checkpoint.version} ({checkpoint.digest[:12]})"
        )
        built = build_engine(checkpoint, model.spec.optimization, self.options.state / "engines")
        verb = "cached" if built.cache_hit else "built"
        self.say(f"engine {verb}: {built.path}")
        stable = EngineRef(label=f"{checkpoint.name}/{checkpoint.version}", engine_dir=str(built.path))
        return plan_serve_config(
            model,
            stable=stable,
            data_dir=str(movielens_dir()),
            host=self.options.host,
            port=self.options.port,
        )

    def serve(self, config: ServeAppConfig, record: RunRecord) -> str:
        self.ray = start_local_ray(self.options.state, num_cpus=_ray_cpus(config))
        record.update(ray=to_dict(self.ray), phase="deploying")
        self.say(f"local Ray cluster up (pid {self.ray.pid}, dashboard {self.ray.dashboard_url})")
        target = ServeRestTarget(self.ray.dashboard_url)
        target.apply(render_serve_config(config))
        endpoint = f"http://{config.host}:{config.port}"
        self._wait_ready(target, config.name, endpoint)
        record.update(phase="ready", endpoint=endpoint)
        return endpoint

    def _wait_ready(self, target: ServeRestTarget, app: str, endpoint: str) -> None:
        def ready() -> bool:
            status, message = target.application_status(app)
            if status in {"DEPLOY_FAILED", "UNHEALTHY"}:
                raise Unavailable(f"Ray Serve application {app} is {status}: {message.strip()[:2000]}")
            if status != "RUNNING":
                return False
            return httpx.get(f"{endpoint}/v2/health/ready", timeout=10).status_code == 200

        try:
            wait_for(
                ready, self.options.ready_timeout, interval=1.0, message=f"application {app} to be ready"
            )
        except WaitTimeout as error:
            if isinstance(error.__cause__, Unavailable):
                raise error.__cause__ from None
            raise Unavailable(str(error)) from error

    def block(self) -> None:
        """Serve until SIGINT/SIGTERM; fail if the Ray cluster dies under us."""
        stopped = threading.Event()
        while not stopped.wait(1.0):
            if self.ray is not None and not is_running(self.ray):
                raise Unavailable(f"the local Ray cluster exited; see {self.ray.log_file}")

    def shutdown(self) -> None:
        if self.ray is not None:
            stop_local_ray(self.ray)
            self.ray = None


def up(options: UpOptions, say: Say = say_flushed) -> int:
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    run = EmbeddedRun(options, say)
    try:
        model = load_model(options.manifest)
        name = model_name(model)
        record = RunRecord(options.state, name).acquire()
        try:
            config = run.prepare(model)
            endpoint = run.serve(config, record)
            say(f"endpoint: {endpoint}")
            say(
                f"try: curl -s -X POST {endpoint}/v1/recommend "
                "-H 'Content-Type: application/json' -d '{\"user_id\": 42, \"k\": 10}'"
            )
            say(f"READY {name} serving at {endpoint} (Ctrl-C or `recserve down {name}` stops it)")
            run.block()
        except KeyboardInterrupt:
            say(f"stopping {name}")
        finally:
            run.shutdown()
            record.release()
    finally:
        signal.signal(signal.SIGTERM, previous)
    say("stopped")
    return 0
