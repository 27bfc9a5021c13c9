"""``recserve up``: the operator's reconcile loop, run in-process against a local Ray cluster.

Everything the cluster does happens here too, through the same ``reconcile`` core: the
checkpoint is resolved (training the MovieLens seed model on first use), engines are built
or fetched from the cache, the serve config is rolled out through the Ray Serve REST API,
and a canary in the spec steps through its weights gated by analysis of scraped metrics.
Resolution and builds run before Ray starts, so a bad stable checkpoint or recipe fails
with nothing to clean up; a canary engine that fails its gate only rolls the canary back.
Everything started afterwards is stopped however ``up`` ends.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from recserve_operator.api.types import RecommenderModel
from recserve_operator.embedded.controls import clear, read_controls
from recserve_operator.embedded.local_ray import (
    RayClusterInfo,
    is_running,
    start_local_ray,
    stop_local_ray,
    to_dict,
)
from recserve_operator.embedded.runs import RunRecord
from recserve_operator.validate import load_model
from recserve_serving.errors import AliasNotSet, EngineError, InvalidRequest, RecserveError, Unavailable
from recserve_serving.serve.config import SERVE_PORT

if TYPE_CHECKING:
    from recserve_serving.data import Dataset

Say = Callable[[str], None]
MAX_TICK_SECONDS = 5.0


def say_flushed(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class UpOptions:
    manifest: Path
    state: Path
    host: str = "127.0.0.1"
    port: int = SERVE_PORT
    ready_timeout: float = 600.0


def model_name(model: RecommenderModel) -> str:
    if not model.metadata.name:
        raise InvalidRequest("metadata.name: required by `recserve up` (generateName needs an API server)")
    return model.metadata.name


def ray_cpus(model: RecommenderModel) -> int:
    """Logical CPUs for Ray: the router, plus a stable and a canary version at their max replicas,
    never below the machine's.

    Room for the canary is kept even when the manifest has none: the cluster is sized once, when
    `up` starts, while a canary can be added to the manifest at any time after. Sized for stable
    alone, a stable scaled to its max leaves the canary's replicas unschedulable, so the canary
    gets no traffic and is rolled back at its progress deadline without ever being judged."""
    serving = model.spec.serving
    wanted = 1 + 2 * serving.resources.cpus * serving.autoscaling.max_replicas
    return max(os.cpu_count() or 1, math.ceil(wanted))


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class EmbeddedRun:
    def __init__(self, options: UpOptions, model: RecommenderModel, say: Say) -> None:
        from recserve_operator.embedded.platform import EmbeddedPlatform

        self.options = options
        self.model = model
        self.name = model_name(model)
        self.say = say
        self.platform = EmbeddedPlatform(options.state, options.host, options.port, say)
        self.ray: RayClusterInfo | None = None
        self.generation = 1
        self.model = self._with_generation(model)
        self.manifest_mtime = options.manifest.stat().st_mtime

    def _with_generation(self, model: RecommenderModel) -> RecommenderModel:
        metadata = model.metadata.model_copy(update={"generation": self.generation})
        return model.model_copy(update={"metadata": metadata})

    def reload_if_changed(self) -> None:
        """Edits to the manifest are new generations, as ``kubectl apply`` would make them."""
        try:
            mtime = self.options.manifest.stat().st_mtime
        except OSError:
            return
        if mtime == self.manifest_mtime:
            return
        self.manifest_mtime = mtime
        try:
            changed = load_model(self.options.manifest)
        except RecserveError as error:
            self.say(f"[Warning] InvalidSpec: {error}; still serving generation {self.generation}")
            return
        if changed.metadata.name != self.name:
            self.say(f"[Warning] InvalidSpec: metadata.name changed to {changed.metadata.name}; ignored")
            return
        self.generation += 1
        self.model = self._with_generation(changed).model_copy(update={"status": self.model.status})
        self.say(f"manifest changed: generation {self.generation}")

    def prepare(self) -> None:
        """Resolve and build every version the spec names, and the retrieval index, before any process starts."""
        spec = self.model.spec
        dataset = self.platform.dataset(spec.data_or_example)  # bad data fails here, before any build
        self.platform.train_if_missing(self.model)
        stable = self.platform.resolve(spec.checkpoint.uri)
        self.say(f"stable checkpoint {stable.uri} -> {stable.name} v{stable.version} ({stable.digest[:12]})")
        engine = self.platform.ensure_engine(self.model, "stable", stable, spec.optimization)
        if engine.state == "Failed":
            raise EngineError(engine.message)
        if spec.rollout.canary is not None and spec.canary_recipe is not None:
            try:
                canary = self.platform.resolve(spec.rollout.canary.checkpoint.uri)
            except AliasNotSet as error:
                # A candidate alias no retrain has set yet: no canary until one does.
                self.say(f"canary: {error}; none until it is set")
                return self.prepare_index(dataset)
            self.say(
                f"canary checkpoint {canary.uri} -> {canary.name} v{canary.version} ({canary.digest[:12]})"
            )
            # A canary engine that fails is the canary's failure: reconcile rolls the canary back
            # and stable starts and serves regardless.
            self.platform.ensure_engine(self.model, "canary", canary, spec.canary_recipe)
        self.prepare_index(dataset)

    def prepare_index(self, dataset: Dataset) -> None:
        from recserve_serving.serve.catalog import ensure_index

        self.say(
            "retrieval indexes: content and collaborative (built once per catalog and interaction "
            "snapshot, about a minute on 2 cores)"
        )
        ensure_index(dataset, Path(self.platform.site.index_dir))

    def start(self, record: RunRecord) -> None:
        from recserve_operator.rollout.serve_rest import ServeRestTarget

        self.ray = start_local_ray(self.options.state, num_cpus=ray_cpus(self.model))
        record.update(ray=to_dict(self.ray), phase="deploying")
        self.say(f"local Ray cluster up (pid {self.ray.pid}, dashboard {self.ray.dashboard_url})")
        self.platform.target = ServeRestTarget(self.ray.dashboard_url)

    def loop(self, record: RunRecord, on_ready: Callable[[str], None]) -> None:
        """Reconcile until interrupted; fail if the first rollout never becomes ready."""
        from recserve_operator.reconcile import reconcile

        started = datetime.now(UTC)
        ready_once = False
        phase = None
        stop = threading.Event()
        while True:
            self.reload_if_changed()
            if self.ray is not None and not is_running(self.ray):
                raise Unavailable(f"the local Ray cluster exited; see {self.ray.log_file}")
            now = datetime.now(UTC)
            canary = self.model.status.canary if self.model.status else None
            controls = read_controls(self.options.state, self.name, canary.digest if canary else None)
            outcome = reconcile(self.model, self.platform, now, controls)
            self.model = self.model.model_copy(update={"status": outcome.status})
            for event in outcome.events:
                self.say(f"[{event.type}] {event.reason}: {event.message}")
            if outcome.status.phase != phase:
                phase = outcome.status.phase
                self.say(f"phase {phase}")
                record.update(phase=phase, status=outcome.status.to_dict())
            if outcome.stalled_reason and not ready_once:
                raise Unavailable(outcome.stalled_reason)
            if outcome.status.endpoint and not ready_once:
                ready_once = True
                record.update(endpoint=outcome.status.endpoint)
                on_ready(outcome.status.endpoint)
            if not ready_once and (now - started).total_seconds() > self.options.ready_timeout:
                detail = outcome.retry_reason or outcome.status.phase
                raise Unavailable(f"{self.name} not ready after {self.options.ready_timeout:.0f}s: {detail}")
            stop.wait(min(outcome.requeue_after or MAX_TICK_SECONDS, MAX_TICK_SECONDS))

    def shutdown(self) -> None:
        if self.ray is not None:
            stop_local_ray(self.ray)
            self.ray = None
        clear(self.options.state, self.name)


def _announce(name: str, user_id: object, say: Say) -> Callable[[str], None]:
    """``user_id``: a user of the model's own data, so that the printed request works as it is."""
    body = json.dumps({"user_id": user_id, "k": 10})

    def announce(endpoint: str) -> None:
        say(f"endpoint: {endpoint}")
        say(f"try: curl -s -X POST {endpoint}/v1/recommend -H 'Content-Type: application/json' -d '{body}'")
        say(f"READY {name} serving at {endpoint} (Ctrl-C or `recserve down {name}` stops it)")

    return announce


def up(options: UpOptions, say: Say = say_flushed) -> int:
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        model = load_model(options.manifest)
        name = model_name(model)
        record = RunRecord(options.state, name).acquire()
        run: EmbeddedRun | None = None
        try:
            run = EmbeddedRun(options, model, say)
            run.prepare()
            run.start(record)
            dataset = run.platform.dataset(model.spec.data_or_example)
            run.loop(record, _announce(name, dataset.user_id(dataset.user_codes()[0]), say))
        except KeyboardInterrupt:
            say(f"stopping {name}")
        finally:
            if run is not None and run.ray is not None:
                run.shutdown()
                say(f"stopped {name}")
            record.release()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
