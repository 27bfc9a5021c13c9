"""The cheapest autoscaling settings that meet a p99 SLO on a trace, found by simulation.

The searched knobs are the spec's: ``targetOngoingRequests``, ``minReplicas``,
``upscaleDelaySeconds``, ``downscaleDelaySeconds`` and ``maxOngoingRequests``. ``maxReplicas`` is the
SRE's budget and stays as it is (a result that misses the SLO at it says so). The search is
coordinate descent over a grid, from the current settings: one knob at a time takes each of its
values with the others held, the best setting so far is kept, and rounds repeat until one
changes nothing. It finds a local optimum in a few dozen simulations instead of the grid's
thousand; every simulation replays the same arrivals, so comparisons are exact, not noisy.

"Best" is: meets the SLO, then fewest replica-seconds, then lowest p99. When nothing meets it,
the closest is the one with the fewest requests over the SLO (refused and timed-out included),
then the lowest p99: that is an answer too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from recserve_operator.autoscale.figures import Figures, figures
from recserve_operator.autoscale.knobs import Knobs
from recserve_operator.autoscale.service import ServiceModel
from recserve_operator.autoscale.simulate import SimulationResult, simulate

TARGETS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
MIN_REPLICAS = (0, 1, 2, 3, 4, 6, 8)
UPSCALE_DELAYS = (0.0, 5.0, 10.0, 20.0, 30.0, 60.0)
DOWNSCALE_DELAYS = (30.0, 60.0, 120.0, 300.0, 600.0)
MAX_ONGOING_MULTIPLES = (1, 2, 4)  # of batching.maxBatchSize; unset (Ray's default rule) is tried too
MAX_ROUNDS = 4
COST_TIE = 0.005
"""Replica-seconds within 0.5% are a tie, decided by p99: simulation is exact, but a saving that
small is not worth a worse tail."""

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Setting:
    """The searched knobs, as the spec writes them (``max_ongoing`` None: unset)."""

    target: float
    min_replicas: int
    upscale_delay_s: float
    downscale_delay_s: float
    max_ongoing: int | None

    def effective_max_ongoing(self, batch_size: int) -> int:
        """The cap Ray runs with: explicit, else ``ServingSpec.max_ongoing_requests``'s rule."""
        if self.max_ongoing is not None:
            return self.max_ongoing
        return max(batch_size, math.ceil(2 * self.target))

    def valid(self, base: Knobs, batch_size: int) -> bool:
        return self.min_replicas <= base.max_replicas and self.target <= self.effective_max_ongoing(
            batch_size
        )

    def knobs(self, base: Knobs, batch_size: int) -> Knobs:
        initial = base.initial_replicas
        if initial is not None:
            initial = max(initial, self.min_replicas)
        return replace(
            base,
            target_ongoing_requests=self.target,
            min_replicas=self.min_replicas,
            initial_replicas=initial,
            upscale_delay_s=self.upscale_delay_s,
            downscale_delay_s=self.downscale_delay_s,
            max_ongoing_requests=self.effective_max_ongoing(batch_size),
        )


@dataclass(frozen=True)
class Candidate:
    setting: Setting
    knobs: Knobs
    figures: Figures
    over_slo: int  # requests slower than the SLO, refused and timed-out included

    @property
    def met(self) -> bool:
        return self.figures.slo_met


@dataclass(frozen=True)
class Recommendation:
    current: Candidate
    best: Candidate
    simulations: int
    current_result: SimulationResult
    best_result: SimulationResult

    @property
    def met(self) -> bool:
        return self.best.met


def better(a: Candidate, b: Candidate) -> bool:
    """Whether ``a`` is preferable to ``b`` under the ordering in the module docstring."""
    if a.met != b.met:
        return a.met
    fa, fb = a.figures, b.figures
    if a.met:
        if fa.replica_seconds < fb.replica_seconds * (1 - COST_TIE):
            return True
        if fb.replica_seconds < fa.replica_seconds * (1 - COST_TIE):
            return False
        return fa.p99_all_ms < fb.p99_all_ms
    if a.over_slo != b.over_slo:
        return a.over_slo < b.over_slo
    if fa.p99_all_ms != fb.p99_all_ms:
        return fa.p99_all_ms < fb.p99_all_ms
    return fa.replica_seconds < fb.replica_seconds


def current_setting(knobs: Knobs, explicit_max_ongoing: int | None) -> Setting:
    return Setting(
        knobs.target_ongoing_requests,
        knobs.min_replicas,
        knobs.upscale_delay_s,
        knobs.downscale_delay_s,
        explicit_max_ongoing,
    )


def _neighbours(setting: Setting, knob: int, batch_size: int) -> list[Setting]:
    """The settings that differ from ``setting`` in knob number ``knob`` only."""
    if knob == 0:
        return [replace(setting, target=v) for v in TARGETS]
    if knob == 1:
        return [replace(setting, min_replicas=v) for v in MIN_REPLICAS]
    if knob == 2:
        return [replace(setting, upscale_delay_s=v) for v in UPSCALE_DELAYS]
    if knob == 3:
        return [replace(setting, downscale_delay_s=v) for v in DOWNSCALE_DELAYS]
    ongoing: list[int | None] = [None, *(batch_size * m for m in MAX_ONGOING_MULTIPLES)]
    return [replace(setting, max_ongoing=v) for v in ongoing]


KNOBS = 5


def recommend(
    arrivals: Sequence[float],
    duration_s: float,
    base: Knobs,
    explicit_max_ongoing: int | None,
    batch_size: int,
    service: ServiceModel,
    slo_p99_ms: float,
    *,
    price_per_replica_hour: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Recommendation:
    """Search the knobs for the cheapest setting that meets ``slo_p99_ms`` on ``arrivals``.

    ``base`` is the spec's knobs (everything not searched comes from it); ``explicit_max_ongoing``
    is the spec's own ``maxOngoingRequests`` (None when unset); ``batch_size`` is
    ``batching.maxBatchSize``, the floor of ``maxOngoingRequests``.
    """
    seen: dict[Setting, Candidate] = {}
    limit = slo_p99_ms / 1000
    start = current_setting(base, explicit_max_ongoing)
    planned = 1 + 2 * sum(len(_neighbours(start, knob, batch_size)) for knob in range(KNOBS))

    def run(setting: Setting) -> SimulationResult:
        return simulate(arrivals, setting.knobs(base, batch_size), service, duration_s=duration_s, seed=seed)

    def evaluate(setting: Setting) -> Candidate:
        if setting not in seen:
            result = run(setting)
            shown = figures(result, slo_p99_ms=slo_p99_ms, price_per_replica_hour=price_per_replica_hour)
            over = sum(1 for x in result.latency_s if x > limit)
            seen[setting] = Candidate(setting, result.knobs, shown, over)
            if progress is not None:
                progress(len(seen), max(planned, len(seen)))
        return seen[setting]

    current = evaluate(start)
    best = current
    for _ in range(MAX_ROUNDS):
        moved = False
        for knob in range(KNOBS):
            for setting in _neighbours(best.setting, knob, batch_size):
                if setting == best.setting or not setting.valid(base, batch_size):
                    continue
                candidate = evaluate(setting)
                if better(candidate, best):
                    best, moved = candidate, True
        if not moved:
            break
    if progress is not None:
        progress(len(seen), len(seen))
    # Simulation is deterministic: re-running the two shown settings keeps the search's memory small.
    return Recommendation(current, best, len(seen), run(current.setting), run(best.setting))
