"""Replay a request trace through the autoscaler and replicas: an exact event-driven simulation.

Events are arrivals, completions, replica start-ups, the controller's decision ticks, and the
handle's record and push ticks; between events nothing changes, so time jumps from one to the
next and no fixed tick rounds a latency. What happens at each, as Ray Serve 2.60 does it:

- **Arrival.** The router's handle sends the request to the running replica holding the fewest
  requests among those below ``max_ongoing_requests``; if none has room it waits in the handle's
  FIFO queue, and beyond ``max_queued_requests`` waiting it is refused (503). With no running
  replica the handle pushes its metrics at once (Ray's scale-from-zero shortcut).
- **Service.** Each replica shares its profiled throughput among the requests it holds
  (``service.ServiceModel``). A request slower than ``request_timeout_s`` fails (504): the
  router gives up on it, but a replica that already took it finishes the work.
- **Decision tick** (every ``control_interval_s``). Requests that waited past the timeout leave
  the queue; the controller averages the last push (``handle_metrics``) and ``policy.decide``
  sets the target. Starting replicas become RUNNING ``startup_s`` later. A downscale stops
  replicas that are still starting first, then the newest running ones; a stopped replica takes
  no new request and is gone once it has finished those it holds.

Replica-seconds count every replica from its start until it is gone (starting and draining
included: they hold their resources), within the trace's duration.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from recserve_operator.autoscale.handle_metrics import Aggregate, HandleRecorder, Report, aggregate
from recserve_operator.autoscale.knobs import Knobs
from recserve_operator.autoscale.policy import DelayState, damped, decide, raw_wish
from recserve_operator.autoscale.service import ServiceModel

STARTING, RUNNING, STOPPING = 0, 1, 2


@dataclass(frozen=True)
class ScaleEvent:
    """The controller changed the target replica count."""

    time: float
    before: int
    after: int
    total_requests: float  # what the controller saw: averaged queued + running requests


@dataclass(frozen=True)
class Timeline:
    """State sampled at the start of every bucket, and arrivals counted per bucket."""

    bucket_s: float
    arrivals: list[int]
    running: list[int]
    target: list[int]
    replicas: list[int]  # every replica holding resources: starting, running and draining
    ongoing: list[int]  # queued at the handle plus in flight at replicas
    seen: list[float]  # the autoscaler's averaged total requests


@dataclass(frozen=True)
class SimulationResult:
    knobs: Knobs
    duration_s: float
    arrivals: Sequence[float]
    latency_s: list[float]  # per request; math.inf for a refused (503) or timed-out (504) request
    rejected: int
    timed_out: int
    replica_seconds: float
    events: list[ScaleEvent]
    timeline: Timeline

    @property
    def upscales(self) -> list[ScaleEvent]:
        return [e for e in self.events if e.after > e.before]

    @property
    def downscales(self) -> list[ScaleEvent]:
        return [e for e in self.events if e.after < e.before]


class _Replica:
    __slots__ = ("born", "id", "jobs", "ready_at", "state", "token", "updated", "virtual")

    def __init__(self, replica_id: int, born: float, ready_at: float, state: int) -> None:
        self.id = replica_id
        self.born = born
        self.ready_at = ready_at
        self.state = state
        self.virtual = 0.0  # work served to each request so far (processor sharing's virtual time)
        self.updated = born
        self.jobs: list[tuple[float, int]] = []  # heap of (virtual finish, request index)
        self.token = 0  # invalidates stale completion events


@dataclass
class _Counters:
    rejected: int = 0
    timed_out: int = 0
    replica_seconds: float = 0.0
    events: list[ScaleEvent] = field(default_factory=list)


class _Simulation:
    def __init__(
        self, arrivals: Sequence[float], knobs: Knobs, service: ServiceModel, duration: float, seed: int
    ) -> None:
        self.arrivals = arrivals
        self.knobs = knobs
        self.duration = duration
        self.sizes = service.sizes(len(arrivals), seed)
        self.rates = service.per_request_rates(knobs.max_ongoing_requests)
        self.latency = [math.inf] * len(arrivals)
        self.count = _Counters()
        self.replicas: dict[int, _Replica] = {}
        self.running: list[_Replica] = []
        self.next_id = 0
        self.queue: deque[int] = deque()
        self.in_flight: dict[int, int] = {}  # the handle's requests sent per replica (keys persist)
        self.completions: list[tuple[float, int, int]] = []
        self.recorder = HandleRecorder(knobs.look_back_period_s)
        self.report: Report | None = None
        self.view: Aggregate | None = None
        self.view_stale = True
        self.seen = 0.0
        self.target = knobs.start_replicas
        self.policy_state = DelayState()
        self.last_clock = 0.0
        self.next_ready = math.inf  # when the next starting replica becomes RUNNING
        for _ in range(self.target):
            self._add_replica(0.0, ready_at=0.0, state=RUNNING)

    # ---------------------------------------------------------------- bookkeeping

    def _clock(self, now: float) -> None:
        """Accrue replica-seconds up to ``now`` (within the trace's duration)."""
        upto = min(now, self.duration)
        if upto > self.last_clock:
            self.count.replica_seconds += len(self.replicas) * (upto - self.last_clock)
            self.last_clock = upto

    def _add_replica(self, now: float, *, ready_at: float, state: int) -> None:
        self._clock(now)
        replica = _Replica(self.next_id, now, ready_at, state)
        self.next_id += 1
        self.replicas[replica.id] = replica
        if state == RUNNING:
            self.running.append(replica)
            self._running_changed()
        else:
            self.next_ready = min(self.next_ready, ready_at)

    def _running_changed(self) -> None:
        """Ray prunes the handle's per-replica counts to running replicas and those with requests."""
        alive = {r.id for r in self.running}
        self.in_flight = {k: v for k, v in self.in_flight.items() if v or k in alive}
        self.view_stale = True

    def _retire(self, replica: _Replica, now: float) -> None:
        self._clock(now)
        del self.replicas[replica.id]

    # ---------------------------------------------------------------- service

    def _advance(self, replica: _Replica, now: float) -> None:
        held = len(replica.jobs)
        if held:
            replica.virtual += self.rates[held] * (now - replica.updated)
        replica.updated = now

    def _schedule(self, replica: _Replica, now: float) -> None:
        replica.token += 1
        if replica.jobs:
            left = max(0.0, replica.jobs[0][0] - replica.virtual)
            at = now + left / self.rates[len(replica.jobs)]
            heapq.heappush(self.completions, (at, replica.id, replica.token))

    def _start_job(self, replica: _Replica, request: int, now: float) -> None:
        self._advance(replica, now)
        heapq.heappush(replica.jobs, (replica.virtual + self.sizes[request], request))
        self.in_flight[replica.id] = self.in_flight.get(replica.id, 0) + 1
        self._schedule(replica, now)

    def _room(self) -> _Replica | None:
        best: _Replica | None = None
        cap = self.knobs.max_ongoing_requests
        for replica in self.running:
            held = len(replica.jobs)
            if held < cap and (best is None or held < len(best.jobs)):
                best = replica
        return best

    def _dispatch(self, now: float) -> None:
        timeout = self.knobs.request_timeout_s
        while self.queue:
            replica = self._room()
            if replica is None:
                return
            request = self.queue.popleft()
            if now - self.arrivals[request] >= timeout:
                self.count.timed_out += 1
                continue
            self._start_job(replica, request, now)

    def complete(self, replica_id: int, token: int, now: float) -> None:
        replica = self.replicas.get(replica_id)
        if replica is None or replica.token != token:
            return
        self._advance(replica, now)
        _, request = heapq.heappop(replica.jobs)
        self.in_flight[replica.id] -= 1
        took = now - self.arrivals[request]
        if took < self.knobs.request_timeout_s:
            self.latency[request] = took
        else:
            self.count.timed_out += 1
        self._schedule(replica, now)
        if replica.state == STOPPING and not replica.jobs:
            self._retire(replica, now)
            self._running_changed()
        else:
            self._dispatch(now)

    # ---------------------------------------------------------------- traffic and control

    def arrive(self, request: int, now: float) -> None:
        if not self.queue:
            replica = self._room()
            if replica is not None:
                self._start_job(replica, request, now)
                return
        if len(self.queue) >= self.knobs.max_queued_requests:
            self.count.rejected += 1
            return
        self.queue.append(request)
        if not self.running:
            self.push(now)

    def ready(self, now: float) -> None:
        for replica in list(self.replicas.values()):
            if replica.state == STARTING and replica.ready_at <= now:
                replica.state = RUNNING
                replica.updated = now
                self.running.append(replica)
                self._running_changed()
        self._update_next_ready()
        self._dispatch(now)

    def _update_next_ready(self) -> None:
        self.next_ready = min(
            (r.ready_at for r in self.replicas.values() if r.state == STARTING), default=math.inf
        )

    def record(self, now: float) -> None:
        self.recorder.record(now, len(self.queue), self.in_flight)

    def push(self, now: float) -> None:
        self.report = self.recorder.push(now, len(self.queue), self.in_flight)
        self.view_stale = True

    def _seen(self, now: float) -> float:
        if self.report is None:
            return 0.0
        if self.view_stale:
            self.view = aggregate(self.report, (r.id for r in self.running))
            self.view_stale = False
        return 0.0 if self.view is None else self.view.mean(now)

    def control(self, now: float) -> None:
        timeout = self.knobs.request_timeout_s
        while self.queue and now - self.arrivals[self.queue[0]] >= timeout:
            self.queue.popleft()
            self.count.timed_out += 1
        self.seen = self._seen(now)
        running = len(self.running)
        if running and self.policy_state.direction == 0:
            # The common tick: the wish is the current target and no delay is running, which
            # ``decide`` would answer with no change; skipping it keeps a day's 864,000 ticks cheap.
            wanted = damped(raw_wish(self.seen, running, self.target, self.knobs), running, self.knobs)
            if wanted == self.target:
                return
        decision = decide(self.seen, running, self.target, self.knobs, self.policy_state, now)
        self.policy_state = decision.state
        if decision.replicas != self.target:
            self.count.events.append(ScaleEvent(now, self.target, decision.replicas, self.seen))
            self.target = decision.replicas
            self._reconcile(now)

    def _reconcile(self, now: float) -> None:
        active = [r for r in self.replicas.values() if r.state != STOPPING]
        for _ in range(self.target - len(active)):
            self._add_replica(now, ready_at=now + self.knobs.startup_s, state=STARTING)
        excess = len(active) - self.target
        if excess <= 0:
            return
        starting = sorted((r for r in active if r.state == STARTING), key=lambda r: -r.id)
        running = sorted(self.running, key=lambda r: -r.id)
        for replica in (starting + running)[:excess]:
            if replica.state == RUNNING:
                self.running.remove(replica)
            replica.state = STOPPING
            if not replica.jobs:
                self._retire(replica, now)
        self._update_next_ready()
        self._running_changed()

    def ongoing(self) -> int:
        return len(self.queue) + sum(len(r.jobs) for r in self.replicas.values())


def simulate(
    arrivals: Sequence[float],
    knobs: Knobs,
    service: ServiceModel,
    *,
    duration_s: float | None = None,
    seed: int = 0,
    bucket_s: float = 1.0,
) -> SimulationResult:
    """Serve ``arrivals`` (seconds from the trace's start, sorted) with ``knobs`` and ``service``.

    The deployment starts with ``knobs.start_replicas`` replicas running, as a steady service
    would be when the trace begins. ``duration_s`` (at least the last arrival) bounds the
    replica-seconds; the simulation runs on until every request has an answer or timed out.
    """
    if any(b < a for a, b in itertools.pairwise(arrivals)):
        raise ValueError("arrivals must be sorted ascending")
    if arrivals and arrivals[0] < 0:
        raise ValueError(f"arrivals must be >= 0, got {arrivals[0]}")
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be > 0, got {bucket_s}")
    last = arrivals[-1] if arrivals else 0.0
    duration = last if duration_s is None else duration_s
    if duration < last:
        raise ValueError(f"duration_s {duration} ends before the last arrival at {last}")
    sim = _Simulation(arrivals, knobs, service, duration, seed)
    buckets = max(1, math.ceil(duration / bucket_s))
    tl = Timeline(bucket_s, [0] * buckets, [], [], [], [], [])
    for t in arrivals:
        tl.arrivals[min(int(t / bucket_s), buckets - 1)] += 1
    end = duration + knobs.request_timeout_s
    intervals = {
        "control": knobs.control_interval_s,
        "record": knobs.record_interval_s,
        "push": knobs.metrics_interval_s,
    }
    # Periodic events as tick counts times their interval, so that no sum of floats drifts; on a
    # tie the handle records, then pushes, then the controller decides (Ray's tasks start together).
    ticks = dict.fromkeys(intervals, 0)
    due = dict.fromkeys(intervals, 0.0)
    next_sample = 0.0
    next_arrival = 0
    total = len(arrivals)
    inf = math.inf
    completions = sim.completions
    while True:
        t_arrival = arrivals[next_arrival] if next_arrival < total else inf
        t_done = completions[0][0] if completions else inf
        t_tick = min(due["record"], due["push"], due["control"], next_sample)
        now = min(t_arrival, t_done, t_tick, sim.next_ready)
        if now > end:
            break
        if t_done == now:
            _, replica_id, token = heapq.heappop(completions)
            sim.complete(replica_id, token, now)
        elif t_arrival == now:
            sim.arrive(next_arrival, now)
            next_arrival += 1
        elif sim.next_ready == now:
            sim.ready(now)
        elif next_sample == now:
            tl.running.append(len(sim.running))
            tl.target.append(sim.target)
            tl.replicas.append(len(sim.replicas))
            tl.ongoing.append(sim.ongoing())
            tl.seen.append(sim.seen)
            next_sample = len(tl.running) * bucket_s if len(tl.running) < buckets else inf
        else:
            kind = "record" if due["record"] == now else "push" if due["push"] == now else "control"
            if kind == "record":
                sim.record(now)
            elif kind == "push":
                sim.push(now)
            else:
                sim.control(now)
            ticks[kind] += 1
            due[kind] = ticks[kind] * intervals[kind]
        if next_arrival == total and next_sample == inf and not sim.queue and not completions:
            break
    sim._clock(end)
    # Whatever is still waiting or in flight at the end waited past the timeout.
    unresolved = sum(1 for lat in sim.latency if lat == inf) - sim.count.rejected - sim.count.timed_out
    return SimulationResult(
        knobs=knobs,
        duration_s=duration,
        arrivals=arrivals,
        latency_s=sim.latency,
        rejected=sim.count.rejected,
        timed_out=sim.count.timed_out + max(0, unresolved),
        replica_seconds=sim.count.replica_seconds,
        events=sim.count.events,
        timeline=tl,
    )
