"""kstatus conditions, with transition times that move only when a condition really changes.

Writing status only when it changes (and never bumping timestamps needlessly) is what
keeps a level-based reconcile from spinning on its own status updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from recserve_operator.api.status import Condition, ConditionStatus


@dataclass(frozen=True)
class ConditionSpec:
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def merge_conditions(
    previous: list[Condition], wanted: list[ConditionSpec], generation: int | None, now: datetime
) -> list[Condition]:
    """The wanted conditions, keeping ``lastTransitionTime`` of those whose status did not change."""
    before = {c.type: c for c in previous}
    merged = []
    for spec in wanted:
        old = before.get(spec.type)
        changed = old is None or old.status != spec.status
        merged.append(
            Condition(
                type=spec.type,
                status=spec.status,
                reason=spec.reason,
                message=spec.message[:32_000],
                last_transition_time=now if changed or old is None else old.last_transition_time,
                observed_generation=generation,
            )
        )
    return merged
