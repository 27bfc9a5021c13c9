"""The run: one request mix, every path measured in a fixed order, one report.

The in-process engine is measured before and after the servers so that a change of load on
the shared machine during the run shows up in its note instead of skewing every ratio. One
broken path is noted and skipped, so that it does not hide the others' figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.serving_bench.measure import SEED, K, Settings, alternating_blocks, explain_blocks, full_catalog
from bench.serving_bench.phases import EXPLAIN_BLOCK, Bench, baseline_phase, kserve_phase, serve_phase
from bench.serving_bench.plots import write_plots
from bench.serving_bench.processes import say
from bench.serving_bench.report import (
    DIRECT,
    DIRECT_EXPLAIN,
    DIRECT_PLAIN,
    DIRECT_TODAY,
    FULL,
    Row,
    evaluate_targets,
    explain_target,
    render_report,
    summarize,
)
from bench.serving_bench.servers import oip_ids_body, oip_pairs_body, private_state
from bench.serving_bench.sides import (
    QUICK_MAX_DROP,
    Side,
    chunk_pairs,
    ensure_checkpoints,
    load_side,
    quick_manifest,
)
from recserve_operator.embedded.local_ray import LOCAL_RAY_ENV
from recserve_serving.offline import OFFLINE_ENV

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = REPO / "manifests" / "examples" / "movielens-ranker.yaml"
TODAY_MANIFEST = REPO / "bench" / "manifests" / "today.yaml"
QUICK_STATE = "bench-quick"
"""``--quick`` keeps its own state under the state dir: its checkpoints are trained for a few steps
only, and must never be found by a full run's ``--if-missing``."""
RESULTS = REPO / "bench" / "results"


def measure_explain_in_process(bench: Bench, catalog: Any, router: Any, users: list[int]) -> None:
    """Recommend k=10 in-process without and with reasons, alternating: what explaining costs the
    engine alone, without HTTP or Ray in the way."""
    (plain, plain_s), (explained, explained_s) = explain_blocks(
        bench.engine, catalog, router, users, bench.settings.explain_requests
    )
    note = "alternating request by request with the other side; QPS over busy time"
    bench.rows.append(summarize(DIRECT_PLAIN, 1, plain, plain_s, note=note))
    bench.rows.append(summarize(DIRECT_EXPLAIN, 1, explained, explained_s, note=note))
    say(f"in-process explain: p50 {bench.rows[-1].p50_ms:.0f} ms vs {bench.rows[-2].p50_ms:.0f} ms plain")


def measure_explain_only(bench: Bench, catalog: Any, router: Any, users: list[int]) -> None:
    """``--explain-only``: the explain comparison in-process and on one Serve run, nothing else."""
    measure_explain_in_process(bench, catalog, router, users)
    serve_phase(bench, f"{bench.name}-bench", None, explain_only=True)


def in_process_comparison(
    bench: Bench,
    catalog: Any,
    router: Any,
    users: list[int],
    blocks: list[list[tuple[list[float], float, list[float]]]],
) -> None:
    """Alternating in-process blocks of the optimized engine and today's (A B A B …), once at the
    start of the run and once at its end; each engine's row merges all of its blocks."""
    engines = [bench.engine] + ([bench.today.engine] if bench.today else [])
    settings = bench.settings
    blocks.append(
        alternating_blocks(engines, catalog, router, users, settings.direct_s, settings.alternations)
    )
    qps = " / ".join(f"{q:.2f}" for q in blocks[-1][0][2])
    say(
        f"in-process blocks ({len(blocks)}): optimized {qps} QPS"
        + (" / today " + " / ".join(f"{q:.2f}" for q in blocks[-1][1][2]) + " QPS" if bench.today else "")
    )


def in_process_rows(blocks: list[list[tuple[list[float], float, list[float]]]]) -> list[Row]:
    """One row per engine from every block it ran, its blocks' QPS in the note (the load drift)."""
    rows = []
    for n, label in enumerate((DIRECT, DIRECT_TODAY)):
        if n >= len(blocks[0]):
            break
        latencies = [s for run in blocks for s in run[n][0]]
        busy = sum(run[n][1] for run in blocks)
        qps = ", ".join(f"{q:.2f}" for run in blocks for q in run[n][2])
        note = f"sequential, blocks alternating between the two engines, at the start and the end; block QPS {qps}"
        rows.append(summarize(label, 1, latencies, busy, note=note))
    return rows


def measure_all(bench: Bench, catalog: Any, router: Any, users: list[int]) -> None:
    """In-process blocks (both engines, alternating), the full catalog, every server, then the
    in-process blocks again."""
    settings, engine = bench.settings, bench.engine
    blocks: list[list[tuple[list[float], float, list[float]]]] = []
    in_process_comparison(bench, catalog, router, users, blocks)
    measure_explain_in_process(bench, catalog, router, users)
    lat_full, el_full, bench.full_pairs = full_catalog(
        engine, catalog, users[: settings.full_users], settings.full_s, settings.catalog_limit
    )
    full_row = summarize(FULL, 1, lat_full, el_full, note=f"~{bench.full_pairs} pairs/request, no retrieval")
    bench.rows.append(full_row)
    say(f"full catalog: {full_row.ok} requests, p99 {full_row.p99_ms:.0f} ms")

    phases: list[tuple[str, Callable[[], None]]] = [
        ("Ray Serve (batching on)", lambda: serve_phase(bench, f"{bench.name}-bench", None)),
    ]
    today = bench.today
    if today is not None:
        phases.append(
            ("Ray Serve, today's path", lambda: serve_phase(bench, f"{today.name}-bench", None, today=True))
        )
    phases += [
        ("Ray Serve (batching off)", lambda: serve_phase(bench, f"{bench.name}-bench-nobatch", 1)),
        ("kserve ModelServer", lambda: kserve_phase(bench)),
        ("FastAPI + torch baseline", lambda: baseline_phase(bench)),
    ]
    for label, phase in phases:
        try:
            phase()
        except Exception as error:  # one broken path must not hide the others' figures
            bench.notes.append(f"{label} FAILED: {str(error).splitlines()[0][:300]}")
            say(f"{label} FAILED: {error}")

    in_process_comparison(bench, catalog, router, users, blocks)
    bench.rows[:0] = in_process_rows(blocks)


def header_lines(bench: Bench, optimized: Side, load_start: float, load_end: float) -> list[str]:
    settings, spec = bench.settings, bench.spec
    batching, autoscaling = spec.serving.batching, spec.serving.autoscaling
    sides = [optimized] + ([bench.today] if bench.today else [])
    levels = ", ".join(f"c={c}: {settings.level_requests(c)}" for c in settings.levels)
    header = [
        *[side.describe() for side in sides],
        f"request mix: recommend k={K} for {len(bench.recommend_bodies)} seeded random MovieLens users (cycled in "
        f"the same order on every path), retrieval.candidates={bench.candidates}",
        f"machine: {os.cpu_count()} CPUs shared with other work, load average {load_start:.1f} at start, "
        f"{load_end:.1f} at end; the load generator runs on the same cores as every HTTP server",
        f"HTTP levels are closed loops of whole rounds after a warm-up of 8 (no new request after "
        f"{settings.issue_s:g} s, {settings.level_s:g} s on a sweep level): the recommend sweep on both paths "
        f"({levels}), "
        f"{settings.explain_requests} requests without and {settings.explain_requests} with explain at c=1, "
        f"1-pair OIP c=32: {settings.requests(32, small=True)}, batching off recommend c=32: "
        f"{settings.requests(32)}; Serve autoscaling "
        f"{autoscaling.min_replicas}..{autoscaling.max_replicas} replicas of {spec.serving.resources.cpus:g} CPU, "
        f"batching maxBatchSize {batching.max_batch_size} / {batching.batch_wait_timeout_ms:g} ms",
    ]
    if settings.quick:
        header.append(
            f"QUICK smoke run: {bench.candidates} candidates, a {settings.catalog_limit}-movie 'full catalog', "
            f"checkpoints trained with `{' '.join(settings.train)}` in the quick state and quality gates opened "
            f"(maxDrop {QUICK_MAX_DROP:g}); the figures check that "
            "every path works, they are not the benchmark"
        )
    return header


EXPLAIN_NOTE = (
    'The explain comparison sends the same users without and with "explain": true, alternating '
    f"(in-process request by request, on Serve in blocks of {EXPLAIN_BLOCK}); its target compares the "
    "two Serve p50s at concurrency 1."
)


def reading_notes(bench: Bench) -> list[str]:
    """How to read the table: what each figure is, and why batching is judged on two request shapes."""
    batching = bench.spec.serving.batching
    today = (
        [
            "Optimized vs today: the two engines run in-process in alternating blocks (A B A B) at the start "
            "and again at the end of the run, so that a drift of the machine's load weighs on both; the two "
            "Serve sweeps run one after the other (optimized first, each on its own `recserve up`, "
            "the same users and levels), so their ratio is only as good as the load was steady: compare the "
            "in-process ratio, measured interleaved, with the Serve one.",
            "Saturation is a path's best level of the sweep; the table shows every level, and the plots "
            "(throughput against concurrency; the latency CDF at concurrency 1) draw the same rows.",
        ]
        if bench.today
        else []
    )
    return [
        *today,
        "QPS = successful requests / wall time of the level (first request sent to last answer); "
        "with few requests (column `ok`) p99 is close to the max.",
        "The Serve target compares Serve at its best concurrency level with the in-process engine run one "
        "request after another (the engine's capacity on these cores).",
        f"Batching is judged on two request shapes from the same two Serve runs (maxBatchSize "
        f"{batching.max_batch_size} vs 1). A recommend request already carries {bench.candidates} pairs, which the "
        f"engine runs in chunks of {chunk_pairs(bench.engine)}, so merging requests cannot fill a chunk further; "
        "batching pays where requests are small, which the 1-pair OIP rows measure.",
        "kserve rows send the pairs the router would rank (retrieval done by the client, untimed) to a "
        "kserve.Model whose synchronous predict calls the same engine; kserve's ModelServer does no dynamic "
        "batching.",
        "The baseline scores every unrated movie with torch eager fp32 (same max length), one request at a time.",
    ]


def run(args: argparse.Namespace) -> int:
    import yaml

    from recserve_serving.example_data import EXAMPLE_DATA, load_example
    from recserve_serving.paths import state_dir
    from recserve_serving.serve.api_models import RecommendRequest
    from recserve_serving.serve.catalog import Catalog
    from recserve_serving.serve.config import RouterConfig
    from recserve_serving.serve.recommend import plan_recommendation

    settings = Settings.for_mode(args.quick)
    started = datetime.now(UTC)
    load_start = os.getloadavg()
    state = state_dir(args.state)
    if args.quick:
        state = state_dir(state / QUICK_STATE)
    compare = not args.explain_only
    manifests = {"optimized": Path(args.manifest)} | ({"today": Path(args.today)} if compare else {})
    if args.quick:  # throwaway checkpoints: the quality gate is opened (the engines stay in the quick state)
        manifests = {
            label: quick_manifest(path, state / "manifests" / label) for label, path in manifests.items()
        }
    env = dict(os.environ, **OFFLINE_ENV, **LOCAL_RAY_ENV)
    uris = [yaml.safe_load(path.read_text())["spec"]["checkpoint"]["uri"] for path in manifests.values()]
    ensure_checkpoints(state, uris, settings.train, env)
    sides = {label: load_side(label, path, state, settings.candidates) for label, path in manifests.items()}
    optimized, today = sides["optimized"], sides.get("today")
    spec, name = optimized.spec, optimized.name
    if today is not None and today.name == name:
        raise SystemExit(f"{args.today} and {args.manifest} have the same metadata.name {name!r}: rename one")
    candidates = settings.candidates or spec.serving.retrieval.candidates
    engine = optimized.engine

    index_dir = str(state / "retrieval")
    catalog = Catalog.open(load_example(), index_dir)
    max_k = min(spec.serving.retrieval.max_k, candidates)
    retrieval = spec.serving.retrieval.model_copy(update={"candidates": candidates, "max_k": max_k})
    router = RouterConfig(
        model_name=name,
        data=EXAMPLE_DATA,
        index_dir=index_dir,
        retrieval=retrieval,
        explain=spec.serving.explain,
    )
    rng = random.Random(SEED)
    known = [catalog.dataset.user_id(c) for c in catalog.dataset.user_codes()]
    users = [rng.choice(known) for _ in range(settings.users)]
    plans = [plan_recommendation(RecommendRequest(user_id=u, k=K), catalog, router) for u in users]
    say(f"{len(users)} users, {candidates} candidates each, k={K}; load average {load_start[0]:.1f}")

    tmp = Path(tempfile.mkdtemp(prefix="rsb-", dir="/tmp"))  # short: Ray's socket paths must fit
    bench = Bench(
        settings=settings,
        name=name,
        document=optimized.document,
        spec=spec,
        candidates=candidates,
        state=private_state(state, tmp / "state"),
        tmp=tmp,
        env=dict(env, RECSERVE_RAY_TMP=str(tmp / "ray")),
        engine=engine,
        engine_dir=optimized.engine_dir,
        checkpoint_dir=optimized.checkpoint_dir,
        index_dir=index_dir,
        recommend_bodies=[json.dumps({"user_id": u, "k": K}).encode() for u in users],
        explain_bodies=[json.dumps({"user_id": u, "k": K, "explain": True}).encode() for u in users],
        pair_bodies=[json.dumps(oip_pairs_body(p.user_texts, p.item_texts)).encode() for p in plans],
        one_pair_bodies=[
            json.dumps(oip_ids_body(u, p.external_ids[0])).encode() for u, p in zip(users, plans, strict=True)
        ],
        today=today,
    )
    bench.env["RECSERVE_HOME"] = str(bench.state)
    for side, expected in ((optimized, "prefix"), (today, "cross")):
        if (
            side is not None and side.shape != expected
        ):  # e.g. a seed model registered before the prefix shape
            warning = (
                f"the {side.label} path's checkpoint {side.checkpoint_uri} has the {side.shape} shape, not "
                f"{expected}: the comparison is not the one issue 13 asks for (a state trained before the "
                "prefix shape? `recserve train` registers a new version; point the manifest at it)"
            )
            bench.notes.append(warning)
            say(f"WARNING: {warning}")
    try:
        for side in sides.values():
            side.engine.score(plans[-1].user_texts, plans[-1].item_texts)
        (measure_explain_only if args.explain_only else measure_all)(bench, catalog, router, users)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    header = header_lines(bench, optimized, load_start[0], os.getloadavg()[0])
    flags = [flag for flag, on in (("--quick", args.quick), ("--explain-only", args.explain_only)) if on]
    if Path(args.today).resolve() != TODAY_MANIFEST.resolve() and compare:
        flags.append(f"--today {args.today}")
    command = " ".join([".venv/bin/python bench/serving.py", *flags])
    suffix = "".join(f"-{flag.removeprefix('--')}" for flag in flags if flag in ("--quick", "--explain-only"))
    plots = (
        write_plots(
            bench.rows,
            RESULTS,
            f"{started:%Y-%m-%d}, {candidates} candidates, {os.cpu_count()} shared CPUs"
            + (", QUICK smoke run" if args.quick else ""),
            suffix,
        )
        if compare
        else []
    )
    report = render_report(
        command=command,
        started=started,
        header=header,
        rows=bench.rows,
        targets=[explain_target(bench.rows)] if args.explain_only else evaluate_targets(bench.rows),
        notes=bench.notes + ([EXPLAIN_NOTE] if args.explain_only else [*reading_notes(bench), EXPLAIN_NOTE]),
        plots=[str(plot) for plot in plots],
    )
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serving-{started:%Y-%m-%d}{suffix}.md"
    out.write_text(report)
    say(f"wrote {out}" + "".join(f", {plot}" for plot in plots))
    return 0
