"""``recserve autoscale``: measure a replica, replay a trace through the autoscaler, recommend settings.

- ``profile NAME``: one ranker replica's throughput and latency per concurrency, as JSON;
- ``simulate``: a trace through Ray Serve's autoscaler with the spec's settings: p50/p99, SLO
  seconds, replica-hours and cost, scale events, a timeline PNG;
- ``recommend --slo-p99 300ms``: the cheapest settings that meet the SLO on the trace, as a
  spec patch (``--apply`` edits the manifest);
- ``trace SHAPE`` or ``trace --from-prometheus``: example traces, or real traffic saved as CSV.

The work is in ``recserve_operator.autoscale``; this module reads flags and files and prints.
``recommend`` exits 0 with settings that meet the SLO, 1 when none does (the closest is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from recserve_operator.autoscale import generate
from recserve_operator.autoscale.inputs import (
    Inputs,
    load_inputs,
    load_profile,
    load_trace,
    parse_latency_ms,
    prometheus_window,
)
from recserve_operator.autoscale.knobs import DEFAULT_STARTUP_SECONDS, Knobs, knobs_from_spec
from recserve_operator.autoscale.trace import Trace, TraceError, to_csv
from recserve_serving.errors import InvalidRequest
from recserve_serving.paths import state_dir

NOT_MET = 1


def _trace_source(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--trace", type=Path, help="CSV: `timestamp` per request, or `time,rate` steps")
    parser.add_argument("--from-prometheus", metavar="URL", help="fetch the trace with a range query instead")
    parser.add_argument("--query", help="PromQL returning requests per second as one series")
    parser.add_argument("--since", help="range up to now, e.g. 24h (with --from-prometheus)")
    parser.add_argument("--start", help="range start: Unix seconds or ISO 8601 (with --from-prometheus)")
    parser.add_argument("--end", help="range end: Unix seconds or ISO 8601 (with --from-prometheus)")
    parser.add_argument("--step", type=float, default=60.0, help="seconds between points (default 60)")
    parser.set_defaults(trace_required=required)


def _model_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", type=Path, required=True, help="the RecommenderModel manifest")
    parser.add_argument(
        "--profile", type=Path, required=True, help="a capacity profile (`autoscale profile`)"
    )
    _trace_source(parser, required=True)
    parser.add_argument("--price-per-replica-hour", type=float, help="to print a cost")
    parser.add_argument("--png", type=Path, help="write a timeline (load, replicas, p99) here")
    parser.add_argument(
        "--startup-seconds", type=float, help="replica start-up (default: the profile's, else 15)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of Poisson arrivals and request sizes")
    parser.add_argument("--state", help="state directory (default $RECSERVE_HOME or ./.recserve)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)

    profile = sub.add_parser("profile", help="measure one ranker replica of a running model")
    profile.add_argument("name", help="the model (its `recserve up`, or with --endpoint a cluster's)")
    profile.add_argument("--endpoint", help="the model's HTTP endpoint (default: its running `recserve up`)")
    profile.add_argument("--serve-api", help="the Ray dashboard URL (Serve REST API); needed with --endpoint")
    profile.add_argument("--hardware", help="hardware id, when the engine directory is not readable here")
    profile.add_argument(
        "--seconds", type=float, default=20.0, help="measured seconds per level (default 20)"
    )
    profile.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each level")
    profile.add_argument("--max-concurrency", type=int, default=64, help="highest level (default 64)")
    profile.add_argument("--out", type=Path, help="where to write the JSON (default NAME.profile.json)")
    profile.add_argument("--state", help="state directory (default $RECSERVE_HOME or ./.recserve)")

    simulate = sub.add_parser("simulate", help="replay a trace through the autoscaler")
    _model_inputs(simulate)
    simulate.add_argument("--slo-p99", help="also count the seconds that violate this p99, e.g. 300ms")
    simulate.add_argument("--json", type=Path, help="write figures, events and timeline as JSON here")

    recommend = sub.add_parser("recommend", help="the cheapest settings that meet a p99 SLO on a trace")
    recommend.add_argument("--slo-p99", required=True, help="the latency objective, e.g. 300ms or 0.3s")
    _model_inputs(recommend)
    recommend.add_argument("--apply", action="store_true", help="write the patch into the --spec manifest")
    recommend.add_argument("--patch", type=Path, help="also write the merge patch (YAML) to this file")

    trace = sub.add_parser("trace", help="write an example trace, or save one from Prometheus")
    trace.add_argument("shape", nargs="?", choices=("diurnal", "flash-spike", "slow-ramp"))
    trace.add_argument("--out", type=Path, required=True, help="the CSV to write")
    trace.add_argument("--low", type=float, default=0.2, help="night / base / start rate (rps)")
    trace.add_argument("--high", type=float, default=2.0, help="day peak / spike / end rate (rps)")
    trace.add_argument(
        "--relative-to",
        type=Path,
        metavar="PROFILE",
        help="read --low/--high as multiples of one replica's capacity",
    )
    trace.add_argument("--duration", type=float, help="seconds (default: 86400, 1800, 3600 by shape)")
    trace.add_argument("--seed", type=int, default=0)
    _trace_source(trace, required=False)


def run(args: argparse.Namespace) -> int:
    handlers = {"profile": _profile, "simulate": _simulate, "recommend": _recommend, "trace": _trace}
    return handlers[args.action](args)


# ---------------------------------------------------------------- inputs


def _fetch_trace(args: argparse.Namespace) -> Trace:
    from recserve_operator.autoscale.prometheus import fetch_rates

    if not args.query:
        raise TraceError("--from-prometheus needs --query, e.g. 'sum(rate(recserve_requests_total[1m]))'")
    start, end = prometheus_window(args.since, args.start, args.end)
    return fetch_rates(args.from_prometheus, args.query, start=start, end=end, step_s=args.step)


def _read_trace(args: argparse.Namespace) -> Trace:
    if args.trace is not None and args.from_prometheus:
        raise InvalidRequest("give --trace or --from-prometheus, not both")
    if args.from_prometheus:
        return _fetch_trace(args)
    if args.trace is None:
        raise InvalidRequest("give a trace: --trace FILE, or --from-prometheus URL --query ...")
    return load_trace(args.trace)


def _startup(args: argparse.Namespace, inputs: Inputs) -> tuple[float, str]:
    if args.startup_seconds is not None:
        return args.startup_seconds, "given"
    if inputs.profile.replica_startup_seconds is not None:
        return inputs.profile.replica_startup_seconds, "from the profile"
    return DEFAULT_STARTUP_SECONDS, "assumed; give --startup-seconds"


def _prepare(args: argparse.Namespace) -> tuple[Inputs, Knobs, list[str]]:
    from recserve_operator.autoscale.report import describe_knobs, describe_profile, describe_trace

    trace = _read_trace(args)
    inputs = load_inputs(args.spec, args.profile, trace, state_dir(args.state))
    if inputs.engine_key is None:
        print(f"note: the spec's engine is {inputs.engine_source}; assuming the profile's", file=sys.stderr)
    startup, note = _startup(args, inputs)
    knobs = knobs_from_spec(inputs.model.spec.serving, startup_s=startup)
    arrivals_note = describe_trace(trace, len(trace.arrivals(args.seed)))
    header = [arrivals_note, describe_profile(inputs.profile, str(args.profile)), describe_knobs(knobs, note)]
    return inputs, knobs, header


def _price(args: argparse.Namespace) -> float | None:
    price = args.price_per_replica_hour
    if price is not None and price < 0:
        raise InvalidRequest(f"--price-per-replica-hour must be >= 0, got {price:g}")
    return price  # type: ignore[no-any-return]


# ---------------------------------------------------------------- commands


def _profile(args: argparse.Namespace) -> int:
    from recserve_operator.autoscale.measure import profile_replica
    from recserve_operator.autoscale.progress import Progress

    endpoint, serve_api = args.endpoint, args.serve_api
    if (endpoint is None) != (serve_api is None):
        raise InvalidRequest(
            "--endpoint and --serve-api go together (a cluster's model); give both or neither"
        )
    if endpoint is None:
        endpoint, serve_api = _embedded_endpoints(args.name, state_dir(args.state))
    planned = max(1, args.max_concurrency.bit_length())
    bar = Progress(f"profiling {args.name}", "levels")
    done: list[int] = []

    def on_level(level: Any) -> None:
        done.append(level.concurrency)
        bar.note(
            f"concurrency {level.concurrency}: {level.throughput_rps:.2f} rps, p50 {level.p50_ms:.0f} ms, "
            f"p99 {level.p99_ms:.0f} ms, {level.requests} answered, {level.errors} errors"
        )
        bar(len(done), planned)

    bar(0, planned)
    profile = profile_replica(
        args.name,
        endpoint,
        serve_api,
        hardware=args.hardware,
        seconds=args.seconds,
        warmup_s=args.warmup,
        max_concurrency=args.max_concurrency,
        host_cpus=os.cpu_count(),
        on_level=on_level,
    )
    bar(len(done), len(done))
    out = args.out or Path(f"{args.name}.profile.json")
    out.write_text(json.dumps(profile.to_dict(), indent=2) + "\n")
    top = profile.levels[-1].concurrency
    verdict = (
        "saturated"
        if profile.saturated
        else f"NOT saturated by concurrency {top}: raise --max-concurrency, and the model's "
        "autoscaling.maxOngoingRequests to at least that, then profile again"
    )
    print(f"wrote {out}: {len(profile.levels)} levels, {verdict}, engine {profile.engine_key[:12]}")
    return 0


def _embedded_endpoints(name: str, state: Path) -> tuple[str, str]:
    from recserve_operator.embedded.processes import pid_alive
    from recserve_operator.embedded.runs import read_run, runs_dir

    record = read_run(runs_dir(state) / f"{name}.json")
    if not record or not pid_alive(int(record.get("pid") or 0)):
        raise InvalidRequest(
            f"{name} is not running under {state}: start it with `recserve up FILE` (autoscaling minReplicas 1, "
            "maxReplicas 1 while profiling), or give --endpoint and --serve-api"
        )
    endpoint = record.get("endpoint")
    dashboard = (record.get("ray") or {}).get("dashboard_url")
    if not endpoint or not dashboard:
        raise InvalidRequest(
            f"{name} is still starting (phase {record.get('phase')}); profile it once it is READY"
        )
    return str(endpoint), str(dashboard)


def _simulate(args: argparse.Namespace) -> int:
    from recserve_operator.autoscale.figures import figures
    from recserve_operator.autoscale.report import figure_lines
    from recserve_operator.autoscale.simulate import simulate

    slo = parse_latency_ms(args.slo_p99) if args.slo_p99 else None
    price = _price(args)
    inputs, knobs, header = _prepare(args)
    arrivals = inputs.trace.arrivals(args.seed)
    result = simulate(
        arrivals, knobs, inputs.profile.service_model(), duration_s=inputs.trace.duration_s, seed=args.seed
    )
    shown = figures(result, slo_p99_ms=slo, price_per_replica_hour=price)
    print("\n".join([*header, *figure_lines(shown, result.events, price=price)]))
    if args.png:
        from recserve_operator.autoscale.plot import write_timeline

        write_timeline(result, args.png, title=f"{args.spec.name} on {inputs.trace.source}", slo_p99_ms=slo)
        print(f"timeline: {args.png}")
    if args.json:
        _write_json(args.json, result, shown)
        print(f"figures: {args.json}")
    return 0


def _write_json(path: Path, result: Any, shown: Any) -> None:
    from recserve_operator.autoscale.report import figures_json

    timeline = result.timeline
    body = {
        "figures": figures_json(shown),
        "events": [
            {"time": e.time, "before": e.before, "after": e.after, "seen": e.total_requests}
            for e in result.events
        ],
        "timeline": {
            "bucketSeconds": timeline.bucket_s,
            "arrivals": timeline.arrivals,
            "running": timeline.running,
            "target": timeline.target,
            "replicas": timeline.replicas,
            "ongoing": timeline.ongoing,
            "seen": timeline.seen,
        },
    }
    path.write_text(json.dumps(body, indent=1) + "\n")


def _recommend(args: argparse.Namespace) -> int:
    from recserve_operator.autoscale.patch import changes_between, patch_yaml
    from recserve_operator.autoscale.profile import check_slo_possible
    from recserve_operator.autoscale.progress import Progress
    from recserve_operator.autoscale.recommend import recommend
    from recserve_operator.autoscale.report import recommendation_lines

    slo = parse_latency_ms(args.slo_p99)
    price = _price(args)
    check_slo_possible(load_profile(args.profile), slo)
    inputs, knobs, header = _prepare(args)
    serving = inputs.model.spec.serving
    rec = recommend(
        inputs.trace.arrivals(args.seed),
        inputs.trace.duration_s,
        knobs,
        serving.autoscaling.max_ongoing_requests,
        serving.batching.max_batch_size,
        inputs.profile.service_model(),
        slo,
        price_per_replica_hour=price,
        seed=args.seed,
        progress=Progress("searching", "simulations"),
    )
    print("\n".join([*header, "", *recommendation_lines(rec, slo, price=price)]))
    changes = changes_between(rec.current.setting, rec.best.setting, serving.autoscaling.initial_replicas)
    print()
    if not changes:
        print("the current settings are already the best found; no patch")
    else:
        print("spec patch (kubectl patch --type merge -p, or rerun with --apply):")
        print(patch_yaml(changes), end="")
        if args.patch:
            args.patch.write_text(patch_yaml(changes))
            print(f"patch: {args.patch}")
    if args.png:
        from recserve_operator.autoscale.plot import write_timeline

        write_timeline(
            rec.best_result,
            args.png,
            title=f"{args.spec.name}: {'recommended' if rec.met else 'closest'}",
            slo_p99_ms=slo,
        )
        print(f"timeline: {args.png}")
    if args.apply and changes:
        if not rec.met:
            print(f"not applied to {args.spec}: the closest setting still misses the SLO")
        else:
            _apply(args.spec, changes)
    return 0 if rec.met else NOT_MET


def _apply(manifest: Path, changes: dict[str, Any]) -> None:
    from recserve_operator.autoscale.inputs import read_text
    from recserve_operator.autoscale.patch import apply_to_manifest
    from recserve_operator.validate import load_model

    edited = apply_to_manifest(read_text(manifest, "manifest"), changes, str(manifest))
    tmp = manifest.with_name(f".{manifest.name}.autoscale-tmp")
    tmp.write_text(edited)
    try:
        load_model(tmp)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, manifest)
    print(f"applied to {manifest}")


def _trace(args: argparse.Namespace) -> int:
    if (args.shape is None) == (args.from_prometheus is None):
        raise InvalidRequest(
            "give a SHAPE (diurnal, flash-spike, slow-ramp) or --from-prometheus, one of them"
        )
    if args.from_prometheus:
        trace = _fetch_trace(args)
        comment = f"Prometheus {args.from_prometheus}: {args.query}"
    else:
        low, high = args.low, args.high
        if args.relative_to is not None:
            capacity = max(x.throughput_rps for x in load_profile(args.relative_to).levels)
            low, high = low * capacity, high * capacity
        trace = _shape(args.shape, low, high, args.duration, args.seed)
        comment = f"recserve autoscale trace {args.shape}: {low:.4g} to {high:.4g} requests per second"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_csv(trace, comment))
    print(
        f"wrote {args.out}: {trace.duration_s:,.0f} s, mean {trace.mean_rate:.3f} rps, peak {trace.peak_rate:.3f} rps"
    )
    return 0


def _shape(shape: str, low: float, high: float, duration: float | None, seed: int) -> Trace:
    try:
        if shape == "diurnal":
            return generate.diurnal(low, high, duration_s=duration or 86_400, seed=seed)
        if shape == "flash-spike":
            return generate.flash_spike(low, high, duration_s=duration or 1800)
        return generate.slow_ramp(low, high, duration_s=duration or 3600)
    except ValueError as error:
        raise InvalidRequest(f"trace {shape}: {error}") from None
