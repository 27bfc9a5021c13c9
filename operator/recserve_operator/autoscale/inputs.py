"""What ``simulate`` and ``recommend`` read: the manifest, the profile, the trace, the engine in service.

The engine a spec serves is known from the manifest's own ``status.stable.engine.key`` (a
RecommenderModel exported from a cluster), or else from a live ``recserve up`` of the same model
in the state directory; otherwise it is unknown and the profile is taken at its word (the
caller says so).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from recserve_operator.api.types import RecommenderModel, duration_seconds
from recserve_operator.autoscale.profile import CapacityProfile, check_profile_fits, parse_profile
from recserve_operator.autoscale.trace import Trace, TraceError, parse_trace
from recserve_operator.validate import load_model
from recserve_serving.errors import InvalidRequest


@dataclass(frozen=True)
class Inputs:
    manifest: Path
    model: RecommenderModel
    profile: CapacityProfile
    trace: Trace
    engine_key: str | None
    engine_source: str  # where engine_key came from, or why it is unknown


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise InvalidRequest(f"{path}: cannot read the {what}: {error.strerror or error}") from None


def served_engine(model: RecommenderModel, state: Path) -> tuple[str | None, str]:
    status = model.status
    if status is not None and status.stable is not None and status.stable.engine is not None:
        return status.stable.engine.key, "the manifest's status"
    from recserve_operator.embedded.processes import pid_alive
    from recserve_operator.embedded.runs import read_run, runs_dir

    name = model.metadata.name or ""
    record = read_run(runs_dir(state) / f"{name}.json") if name else None
    if record and pid_alive(int(record.get("pid") or 0)):
        key = (((record.get("status") or {}).get("stable") or {}).get("engine") or {}).get("key")
        if key:
            return str(key), f"the running `recserve up` of {name}"
    return None, "unknown (no status in the manifest, and no running `recserve up` of this model)"


def load_profile(path: Path) -> CapacityProfile:
    return parse_profile(read_text(path, "capacity profile"), str(path))


def load_trace(path: Path) -> Trace:
    return parse_trace(read_text(path, "trace"), str(path))


def load_inputs(manifest: Path, profile_path: Path, trace: Trace, state: Path) -> Inputs:
    model = load_model(manifest)
    profile = load_profile(profile_path)
    engine_key, source = served_engine(model, state)
    check_profile_fits(profile, model.spec.serving, engine_key, str(profile_path))
    return Inputs(manifest, model, profile, trace, engine_key, source)


def parse_latency_ms(text: str) -> float:
    """``300ms``, ``0.3s`` or ``300`` (milliseconds) -> 300.0."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*", text)
    if match is None or float(match[1]) <= 0:
        raise InvalidRequest(f"--slo-p99 {text!r}: write a latency such as 300ms or 0.3s")
    value = float(match[1])
    return value * 1000 if match[2] == "s" else value


def parse_instant(text: str, flag: str) -> float:
    """Unix seconds from ``1714000000`` or an ISO 8601 time such as ``2026-05-01T00:00:00Z``."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise TraceError(
            f"{flag} {text!r}: give Unix seconds or an ISO 8601 time like 2026-05-01T00:00:00Z"
        ) from None


def prometheus_window(since: str | None, start: str | None, end: str | None) -> tuple[float, float]:
    """The query range: ``--since 24h`` (up to now), or ``--start`` and ``--end``."""
    if since is not None:
        if start is not None or end is not None:
            raise TraceError("give either --since or --start/--end, not both")
        try:
            seconds = duration_seconds(since)
        except ValueError:
            raise TraceError(f"--since {since!r}: write a duration such as 30m, 6h or 24h") from None
        now = time.time()
        return now - seconds, now
    if start is None or end is None:
        raise TraceError("--from-prometheus needs a range: --since 24h, or --start and --end")
    return parse_instant(start, "--start"), parse_instant(end, "--end")
