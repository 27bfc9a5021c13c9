"""What Ray Serve really did: the ranker's target and replicas, polled from the Serve REST API.

A background thread asks ``/api/serve/applications/`` every ``interval`` seconds and keeps
(seconds since its start, target replicas, RUNNING replicas, live replicas). Live replicas are
every replica Ray lists for the deployment (starting, running, stopping): what holds resources,
as the simulator's replica-seconds count them. Ray's own scaling decisions are kept too when its
(experimental) ``autoscaling_detail`` reports them, with their exact timestamps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from recserve_serving.serve.config import RANKER_DEPLOYMENT, owned_by


@dataclass(frozen=True)
class Sample:
    t: float
    target: int
    running: int
    live: int


def ranker_deployment(applications: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The Ranker deployment of ``model``'s one ranker application, if deployed."""
    apps = applications.get("applications") or {}
    rankers = [app for name, app in apps.items() if name != model and owned_by(name, model)]
    if len(rankers) != 1:
        return None
    return dict((rankers[0].get("deployments") or {}).get(RANKER_DEPLOYMENT) or {}) or None


def sample_of(deployment: dict[str, Any], t: float) -> Sample:
    replicas = deployment.get("replicas") or []
    return Sample(
        t=t,
        target=int(deployment.get("target_num_replicas") or 0),
        running=sum(1 for r in replicas if r.get("state") == "RUNNING"),
        live=len(replicas),
    )


def decisions_of(deployment: dict[str, Any]) -> list[tuple[float, int, int]]:
    """Ray's recent scaling decisions as (Unix time, before, after), when it reports them."""
    detail = deployment.get("autoscaling_detail") or {}
    return [
        (float(d["timestamp_s"]), int(d["prev_num_replicas"]), int(d["curr_num_replicas"]))
        for d in detail.get("decisions") or []
        if {"timestamp_s", "prev_num_replicas", "curr_num_replicas"} <= set(d)
    ]


@dataclass
class Observer:
    """Polls in the background from ``start()`` until ``stop()``; times are from ``start()``."""

    dashboard: str
    model: str
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    decisions: dict[float, tuple[int, int]] = field(default_factory=dict)
    errors: int = 0
    started_at: float = 0.0  # Unix time of start(), to place Ray's decision timestamps
    origin: float = 0.0  # time.monotonic() of start(): sample times are seconds since it
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def poll(self) -> dict[str, Any] | None:
        try:
            body = httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            self.errors += 1
            return None
        return ranker_deployment(body, self.model)

    def _run(self) -> None:
        while not self._stop.is_set():
            deployment = self.poll()
            if deployment is not None:
                self.samples.append(sample_of(deployment, time.monotonic() - self.origin))
                for at, before, after in decisions_of(deployment):
                    self.decisions[at - self.started_at] = (before, after)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self.started_at, self.origin = time.time(), time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
