"""The validation run: one ``recserve up``, its settings changed by editing its manifest, as an SRE would.

1. ``recserve up`` a copy of the manifest pinned at one replica (min = max = 1,
   ``maxOngoingRequests`` 64) and profile that replica (``autoscale.measure``), then pin it at two
   and time how long the second replica takes from the autoscaler's target to RUNNING: the
   replica start-up the simulator needs.
2. For each setting: pin at one replica until the handle's metric history (30 s look-back) is
   all idle, apply the setting, replay the trace open-loop (``loadgen.replay``) while a poller
   records the target and replicas (``observe``), then simulate the same arrivals with the
   profile and the measured start-up, and compare (``compare``).
3. Write a Markdown report, a JSON of every figure and an overlay plot per setting to
   ``bench/results/``.

Every process is started in its own group and stopped by pid however the run ends
(``bench.serving_bench``'s ``ServeRun``); the cluster binds loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.autoscale_bench.compare import Row, compare, p99_per_second, table
from bench.autoscale_bench.observe import Observer, sample_of
from bench.serving_bench.processes import owned, say
from bench.serving_bench.servers import ServeRun, private_state
from recserve_operator.autoscale import generate
from recserve_operator.autoscale.figures import figures
from recserve_operator.autoscale.knobs import knobs_from_spec
from recserve_operator.autoscale.profile import CapacityProfile, check_profile_fits
from recserve_operator.autoscale.simulate import simulate
from recserve_operator.autoscale.trace import Trace
from recserve_operator.embedded.local_ray import LOCAL_RAY_ENV
from recserve_serving.offline import OFFLINE_ENV

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = REPO / "manifests" / "examples" / "movielens-ranker.yaml"
RESULTS = REPO / "bench" / "results"
PROFILE_MAX_ONGOING = 64
# The generated spike's peak, in one replica's capacity. At 1.5x the backlog built while the
# second replica starts outlives the 30 s request timeout on two cores, so both p99s are
# "infinite" and the ±30% check has nothing to compare; 1.2x still needs the second replica.
SPIKE_PEAK = 1.2
SPIKE_BASE = 0.3
SETTINGS = {
    "A (target 2, up 10 s, down 60 s)": {
        "targetOngoingRequests": 2,
        "upscaleDelaySeconds": 10,
        "downscaleDelaySeconds": 60,
    },
    "B (target 4, up 30 s, down 120 s)": {
        "targetOngoingRequests": 4,
        "upscaleDelaySeconds": 30,
        "downscaleDelaySeconds": 120,
    },
}


@dataclass(frozen=True)
class Mode:
    minutes: float
    level_s: float
    max_concurrency: int
    settle_s: float

    @classmethod
    def of(cls, args: argparse.Namespace) -> Mode:
        if args.quick:
            return cls(minutes=args.minutes or 3, level_s=5, max_concurrency=8, settle_s=40)
        return cls(minutes=args.minutes or 10, level_s=20, max_concurrency=32, settle_s=45)


class Served:
    """The one ``recserve up``; ``apply`` rewrites its manifest, and waits until Ray runs it."""

    def __init__(self, document: dict[str, Any], path: Path, serve: ServeRun, name: str) -> None:
        self.document, self.path, self.serve, self.name = document, path, serve, name

    def apply(self, autoscaling: dict[str, Any], timeout: float = 180) -> None:
        import yaml

        self.document["spec"]["serving"]["autoscaling"] = autoscaling
        self.path.write_text(yaml.safe_dump(self.document, sort_keys=False))
        wanted = {
            "min_replicas": autoscaling["minReplicas"],
            "max_replicas": autoscaling["maxReplicas"],
            "target_ongoing_requests": float(autoscaling.get("targetOngoingRequests", 2)),
        }
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            deployment = Observer(self.serve.dashboard, self.name).poll() or {}
            config = (deployment.get("deployment_config") or {}).get("autoscaling_config") or {}
            if all(float(config.get(k, -1)) == float(v) for k, v in wanted.items()):
                return
            self.serve.child.check_alive()
            time.sleep(1.0)
        raise TimeoutError(f"Ray did not apply autoscaling {wanted} within {timeout:.0f} s")

    def wait_replicas(self, running: int, timeout: float = 300) -> float:
        """Seconds until exactly ``running`` replicas are RUNNING and none other is live."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            deployment = Observer(self.serve.dashboard, self.name).poll()
            if deployment is not None:
                sample = sample_of(deployment, 0.0)
                if sample.running == running == sample.live:
                    return time.monotonic() - started
            self.serve.child.check_alive()
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} did not settle at {running} replicas within {timeout:.0f} s")

    def measure_startup(self, base: dict[str, Any]) -> float:
        """Pin at two replicas; seconds from the target reaching 2 to the second one RUNNING."""
        self.apply({**base, "minReplicas": 2, "maxReplicas": 2})
        target_at = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            deployment = Observer(self.serve.dashboard, self.name).poll()
            if deployment is not None:
                sample = sample_of(deployment, time.monotonic())
                if target_at is None and sample.target >= 2:
                    target_at = sample.t
                if target_at is not None and sample.running >= 2:
                    return sample.t - target_at
            time.sleep(0.2)
        raise TimeoutError("the second replica did not start within 300 s")


def run(args: argparse.Namespace) -> int:
    import yaml

    from recserve_operator.embedded.processes import free_port
    from recserve_operator.validate import load_model
    from recserve_serving.paths import state_dir

    mode = Mode.of(args)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    manifest = Path(args.manifest)
    document = yaml.safe_load(manifest.read_text())
    name = f"{document['metadata']['name']}-autoscale"
    document["metadata"]["name"] = name
    base = dict(document["spec"].get("serving", {}).get("autoscaling") or {})
    base.pop("maxOngoingRequests", None)
    env = {**os.environ, **OFFLINE_ENV, **LOCAL_RAY_ENV}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rs-autoscale-") as tmp:
        work = Path(tmp)
        state = private_state(state_dir(args.state), work / "state")
        path = work / f"{name}.yaml"
        pinned = {**base, "minReplicas": 1, "maxReplicas": 1, "maxOngoingRequests": PROFILE_MAX_ONGOING}
        document["spec"].setdefault("serving", {})["autoscaling"] = pinned
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        serve = ServeRun(name, path, state, free_port(), env, work / "up.log")
        with owned(serve.stop):
            serve.start(timeout=900)
            served = Served(document, path, serve, name)
            report = _validate(served, base, mode, args, load_model(path), out, day)
    (out / f"autoscale-validate-{day}.md").write_text("\n".join(report) + "\n")
    say(f"wrote {out / f'autoscale-validate-{day}.md'}")
    print("\n".join(report))
    return 0


def _validate(
    served: Served,
    base: dict[str, Any],
    mode: Mode,
    args: argparse.Namespace,
    model: Any,
    out: Path,
    day: str,
) -> list[str]:
    profile = _profile_phase(served, base, mode, out, day)
    capacity = max(x.throughput_rps for x in profile.levels)
    trace = _trace(args, mode, capacity)
    arrivals = trace.arrivals(args.seed)
    rows: list[Row] = []
    details: dict[str, Any] = {}
    for label, setting in SETTINGS.items():
        phase = Phase(label, {**base, **setting}, trace, arrivals, profile, args.seed)
        found, details[label] = _setting_phase(
            served, base, phase, mode, model, out / f"autoscale-validate-{day}"
        )
        rows += found
    body = {"rows": [r.__dict__ for r in rows], "details": details}
    (out / f"autoscale-validate-{day}.json").write_text(json.dumps(body, indent=1, default=str) + "\n")
    return _report(profile, trace, rows, mode, args)


def _profile_phase(served: Served, base: dict[str, Any], mode: Mode, out: Path, day: str) -> CapacityProfile:
    """Profile the pinned replica, then time a second replica's start-up; both go in the profile."""
    from recserve_operator.autoscale.measure import profile_replica

    serve = served.serve
    say(f"profiling one replica: {mode.level_s:g} s per level up to concurrency {mode.max_concurrency}")
    profile = profile_replica(
        served.name, serve.url, serve.dashboard, hardware=None, seconds=mode.level_s, warmup_s=2,
        max_concurrency=mode.max_concurrency, host_cpus=os.cpu_count(),
        on_level=lambda x: say(f"  concurrency {x.concurrency}: {x.throughput_rps:.2f} rps, p99 {x.p99_ms:.0f} ms"),
    )  # fmt: skip
    startup = served.measure_startup(base)
    say(f"replica start-up: {startup:.1f} s")
    profile = CapacityProfile.model_validate({**profile.model_dump(), "replica_startup_seconds": startup})
    (out / f"autoscale-validate-{day}-profile.json").write_text(
        json.dumps(profile.to_dict(), indent=2) + "\n"
    )
    return profile


@dataclass(frozen=True)
class Phase:
    label: str
    autoscaling: dict[str, Any]
    trace: Trace
    arrivals: list[float]
    profile: CapacityProfile
    seed: int


def _setting_phase(
    served: Served, base: dict[str, Any], phase: Phase, mode: Mode, model: Any, prefix: Path
) -> tuple[list[Row], dict[str, Any]]:
    """Settle at one idle replica, apply the setting, replay while observing, simulate, compare."""
    from recserve_operator.autoscale.plot import write_timeline
    from recserve_operator.loadgen import replay

    served.apply({**base, "minReplicas": 1, "maxReplicas": 1})
    served.wait_replicas(1)
    say(f"{phase.label}: idle {mode.settle_s:g} s so the handle's look-back holds no earlier load")
    time.sleep(mode.settle_s)
    served.apply(phase.autoscaling)
    observer = Observer(served.serve.dashboard, served.name)
    observer.start()
    time.sleep(1.0)
    say(f"{phase.label}: replaying {len(phase.arrivals)} requests over {phase.trace.duration_s:.0f} s")
    start = time.monotonic() - observer.origin  # the replay's start on the observer's clock
    timeout = model.spec.serving.limits.request_timeout_seconds + 5
    replayed = replay(served.serve.url, phase.arrivals, seed=phase.seed, timeout=timeout)
    time.sleep(5.0)
    observer.stop()

    serving = model.spec.serving
    spec = serving.model_copy(
        update={"autoscaling": type(serving.autoscaling).model_validate(phase.autoscaling)}
    )
    check_profile_fits(phase.profile, spec, None, "the profile measured in this run")
    startup = phase.profile.replica_startup_seconds or 0.0
    knobs = knobs_from_spec(spec, startup_s=startup)
    service = phase.profile.service_model()
    result = simulate(phase.arrivals, knobs, service, duration_s=phase.trace.duration_s, seed=phase.seed)
    latencies = [r.latency if 200 <= r.status < 300 else float("inf") for r in replayed]
    rows = compare(
        phase.label, observer.samples, start, phase.trace.duration_s, latencies, result, figures(result),
        knobs.metrics_interval_s,
    )  # fmt: skip
    observed = {
        "real replicas (live)": [(s.t - start, float(s.live)) for s in observer.samples],
        "real target": [(s.t - start, float(s.target)) for s in observer.samples],
    }
    png = prefix.with_name(f"{prefix.name}-{phase.label.split(' ', 1)[0]}.png")
    real_p99 = p99_per_second(replayed, phase.trace.duration_s, result.timeline.bucket_s)
    write_timeline(
        result, png, title=f"{phase.label}: simulated vs real", observed=observed, observed_p99=real_p99
    )
    detail = {
        "autoscaling": phase.autoscaling,
        "samples": [s.__dict__ | {"t": s.t - start} for s in observer.samples],
        "rayDecisions": {f"{t - start:.2f}": v for t, v in sorted(observer.decisions.items())},
        "simulatedEvents": [e.__dict__ for e in result.events],
        "realFailures": sum(1 for x in latencies if x == float("inf")),
        "pollErrors": observer.errors,
    }
    return rows, detail


def _trace(args: argparse.Namespace, mode: Mode, capacity: float) -> Trace:
    if args.trace:
        from recserve_operator.autoscale.inputs import load_trace

        return load_trace(Path(args.trace))
    return generate.flash_spike(SPIKE_BASE * capacity, SPIKE_PEAK * capacity, duration_s=60 * mode.minutes)


def _report(
    profile: CapacityProfile, trace: Trace, rows: list[Row], mode: Mode, args: argparse.Namespace
) -> list[str]:
    startup = profile.replica_startup_seconds or 0.0
    top = max(profile.levels, key=lambda x: x.throughput_rps)
    lines = [
        f"# Autoscaling simulator vs `recserve up`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `.venv/bin/python bench/autoscale_validate.py{' --quick' if args.quick else ''}`",
        "",
        f"- replica: engine {profile.engine_key[:12]}, {profile.hardware.id}, {profile.hardware.replica_cpus:g} CPU; "
        f"saturates at {top.throughput_rps:.2f} rps (concurrency {top.concurrency}); lone request p99 "
        f"{profile.single_request.p99_ms:.0f} ms; start-up measured {startup:.1f} s",
        f"- trace: {trace.source}, {trace.duration_s:.0f} s, mean {trace.mean_rate:.2f} rps, peak {trace.peak_rate:.2f} rps, "
        f"open-loop replay on loopback",
        f"- machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "",
        *table(rows),
        "",
        "Tolerances (issue 16): replica-seconds ±20%, p99 ±30%, first upscale within one decision "
        "interval (the handle's 10 s metrics push: the autoscaler's input changes no faster).",
    ]
    if args.quick:
        lines.append(
            f"QUICK run ({mode.minutes:g}-minute trace, {mode.level_s:g} s profile levels): a smoke test of the harness, not the validation."
        )
    return lines
