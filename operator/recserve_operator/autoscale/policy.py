"""Ray Serve 2.60's default autoscaling decision, one control-loop tick at a time.

Rewritten from the rules in ``ray/serve/autoscaling_policy.py`` (the default
``replica_queue_length_autoscaling_policy`` wrapped by ``_apply_autoscaling_config``) and
``ray/serve/_private/autoscaling_state.py`` (``get_decision_num_replicas``, ``apply_bounds``),
so that a what-if answers for the autoscaler that really runs. Per tick:

1. Cold start: with no running replica and any request seen, go straight to
   ``max(ceil(upscaling_factor), current target)``, with no delay.
2. The raw wish is ``total ongoing requests / target_ongoing_requests`` replicas (with no
   running replica: the current target).
3. Scaling factors damp the step from the *running* count:
   ``ceil(running + factor × (wish - running))``; a damped downscale that would not move at all
   moves by one.
4. Delays: a wish above the current target must persist for ``upscale_delay_s`` (below it, for
   ``downscale_delay_s``) of wall-clock time, counted from the first tick of an unbroken run of
   wishes in that direction; a tick that wishes the current target, or the other direction,
   restarts the clock. Downscaling stops at 1 unless it is the 1 → 0 step.
5. The result is clamped to ``min_replicas..max_replicas``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recserve_operator.autoscale.knobs import Knobs

DELAY_EPSILON_S = 1e-6
"""Ray's ``_DELAY_ELAPSED_EPS_S``: a delay of 10 s elapses at 9.999999 s of float arithmetic."""


@dataclass(frozen=True)
class DelayState:
    """The policy's memory between ticks: which way it has wished, and since when."""

    direction: int = 0  # +1 wishing up, -1 wishing down, 0 content
    since: float | None = None


@dataclass(frozen=True)
class Decision:
    replicas: int
    state: DelayState
    wish: float  # the raw wish of rule 2, for timelines and logs


def raw_wish(total_requests: float, running: int, current_target: int, knobs: Knobs) -> float:
    """Rule 2: replicas that would hold ``target_ongoing_requests`` each."""
    if running == 0:
        return float(current_target)
    return running * (total_requests / (knobs.target_ongoing_requests * running))


def damped(wish: float, running: int, knobs: Knobs) -> int:
    """Rule 3: the step from the running count, scaled by the upscaling or downscaling factor."""
    if running == 0:
        return math.ceil(wish)
    delta = wish - running
    factor = knobs.upscaling_factor if delta > 0 else knobs.downscaling_factor
    scaled = math.ceil(running + factor * delta)
    if math.ceil(wish) < running and scaled == running:
        scaled -= 1
    return scaled


def delayed(
    wanted: int, current_target: int, knobs: Knobs, state: DelayState, now: float
) -> tuple[int, DelayState]:
    """Rule 4: move to ``wanted`` only once the wish has held long enough in one direction."""
    if wanted > current_target:
        since = state.since if state.direction > 0 and state.since is not None else now
        if now - since + DELAY_EPSILON_S >= knobs.upscale_delay_s:
            return wanted, DelayState()
        return current_target, DelayState(1, since)
    if wanted < current_target:
        if current_target == 1:
            delay = (
                knobs.downscale_delay_s
                if knobs.downscale_to_zero_delay_s is None
                else knobs.downscale_to_zero_delay_s
            )
        else:
            delay = knobs.downscale_delay_s
            wanted = max(1, wanted)
        since = state.since if state.direction < 0 and state.since is not None else now
        if now - since + DELAY_EPSILON_S >= delay:
            return wanted, DelayState()
        return current_target, DelayState(-1, since)
    return current_target, DelayState()


def bounded(replicas: int, knobs: Knobs) -> int:
    """Rule 5."""
    return max(knobs.min_replicas, min(knobs.max_replicas, replicas))


def decide(
    total_requests: float, running: int, current_target: int, knobs: Knobs, state: DelayState, now: float
) -> Decision:
    """One tick of the controller: the new target replica count and the policy's new memory.

    ``total_requests`` is what the controller aggregated from the handles' reports (queued plus
    running requests, averaged over the look-back window); ``running`` counts RUNNING replicas
    only, not those starting or stopping; ``current_target`` is the deployment's target.
    """
    if running == 0 and total_requests > 0:
        cold = max(math.ceil(knobs.upscaling_factor), current_target)
        return Decision(bounded(cold, knobs), state, float(cold))
    wish = raw_wish(total_requests, running, current_target, knobs)
    wanted = damped(wish, running, knobs)
    if running == 0 and wanted > 0:
        return Decision(bounded(wanted, knobs), state, wish)
    replicas, new_state = delayed(max(0, wanted), current_target, knobs, state, now)
    return Decision(bounded(replicas, knobs), new_state, wish)
