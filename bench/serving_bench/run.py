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

from bench.serving_bench.measure import SEED, K, Settings, direct_block, explain_blocks, full_catalog
from bench.serving_bench.phases import EXPLAIN_BLOCK, Bench, baseline_phase, kserve_phase, serve_phase
from bench.serving_bench.processes import say
from bench.serving_bench.report import (
    DIRECT,
    DIRECT_EXPLAIN,
    DIRECT_PLAIN,
    FULL,
    evaluate_targets,
    explain_target,
    render_report,
    summarize,
)
from bench.serving_bench.servers import oip_ids_body, oip_pairs_body, private_state
from recserve_operator.embedded.local_ray import LOCAL_RAY_ENV
from recserve_serving.offline import OFFLINE_ENV

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = REPO / "manifests" / "examples" / "movielens-ranker.yaml"
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


def measure_all(bench: Bench, catalog: Any, router: Any, users: list[int]) -> None:
    """In-process block A, the full catalog, every server, then in-process block B."""
    settings, engine = bench.settings, bench.engine
    lat_a, el_a = direct_block(engine, catalog, router, users, settings.direct_s)
    say(f"in-process block A: {len(lat_a)} requests, {len(lat_a) / el_a:.2f} QPS")
    measure_explain_in_process(bench, catalog, router, users)
    lat_full, el_full, bench.full_pairs = full_catalog(
        engine, catalog, users[: settings.full_users], settings.full_s, settings.catalog_limit
    )
    full_row = summarize(FULL, 1, lat_full, el_full, note=f"~{bench.full_pairs} pairs/request, no retrieval")
    bench.rows.append(full_row)
    say(f"full catalog: {full_row.ok} requests, p99 {full_row.p99_ms:.0f} ms")

    phases: list[tuple[str, Callable[[], None]]] = [
        ("Ray Serve (batching on)", lambda: serve_phase(bench, f"{bench.name}-bench", None)),
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

    # Block B; the in-process row merges both blocks.
    lat_b, el_b = direct_block(engine, catalog, router, users, settings.direct_s)
    note = f"sequential; first/last block {len(lat_a) / el_a:.2f}/{len(lat_b) / el_b:.2f} QPS"
    bench.rows.insert(0, summarize(DIRECT, 1, lat_a + lat_b, el_a + el_b, note=note))


def header_lines(
    bench: Bench, checkpoint_uri: str, load_start: float, load_end: float, threads: int
) -> list[str]:
    settings, spec, engine = bench.settings, bench.spec, bench.engine
    batching, autoscaling = spec.serving.batching, spec.serving.autoscaling
    header = [
        f"engine: {engine.name} (`{bench.engine_dir.name}`), {threads} ORT threads, max length "
        f"{engine.manifest.max_sequence_length}, chunks of {engine.max_batch_size} pairs; checkpoint {checkpoint_uri}",
        f"request mix: recommend k={K} for {len(bench.recommend_bodies)} seeded random MovieLens users (cycled in "
        f"the same order on every path), retrieval.candidates={bench.candidates}",
        f"machine: {os.cpu_count()} CPUs shared with other work, load average {load_start:.1f} at start, "
        f"{load_end:.1f} at end; the load generator runs on the same cores as every HTTP server",
        "HTTP levels are closed loops of whole rounds (c=1: "
        f"{settings.explain_requests} requests without and {settings.explain_requests} with explain, "
        f"c=8: {settings.requests(8)}, c=32: {settings.requests(32)}, "
        f"1-pair OIP c=32: {settings.requests(32, small=True)}) after a warm-up of 8; Serve autoscaling "
        f"{autoscaling.min_replicas}..{autoscaling.max_replicas} replicas of {spec.serving.resources.cpus:g} CPU, "
        f"batching maxBatchSize {batching.max_batch_size} / {batching.batch_wait_timeout_ms:g} ms",
    ]
    if settings.quick:
        header.append(
            f"QUICK smoke run: {bench.candidates} candidates and a {settings.catalog_limit}-movie 'full catalog'; "
            "the figures check that every path works, they are not the benchmark"
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
    return [
        "QPS = successful requests / wall time of the level (first request sent to last answer); "
        "with few requests (column `ok`) p99 is close to the max.",
        "The Serve target compares Serve at its best concurrency level with the in-process engine run one "
        "request after another (the engine's capacity on these cores).",
        f"Batching is judged on two request shapes from the same two Serve runs (maxBatchSize "
        f"{batching.max_batch_size} vs 1). A recommend request already carries {bench.candidates} pairs, which the "
        f"engine runs in chunks of {bench.engine.max_batch_size}, so merging requests cannot fill a chunk further; "
        "batching pays where requests are small, which the 1-pair OIP rows measure.",
        "kserve rows send the pairs the router would rank (retrieval done by the client, untimed) to a "
        "kserve.Model whose synchronous predict calls the same engine; kserve's ModelServer does no dynamic "
        "batching.",
        "The baseline scores every unrated movie with torch eager fp32 (same max length), one request at a time.",
    ]


def run(args: argparse.Namespace) -> int:
    import yaml

    from recserve_operator.validate import load_model
    from recserve_serving.engine.runtime import load_engine
    from recserve_serving.engine.search_build import build_best
    from recserve_serving.engine.throughput import Workload
    from recserve_serving.paths import movielens_dir, state_dir
    from recserve_serving.registry import Registry
    from recserve_serving.serve.api_models import RecommendRequest
    from recserve_serving.serve.catalog import Catalog
    from recserve_serving.serve.config import RouterConfig
    from recserve_serving.serve.recommend import plan_recommendation

    settings = Settings.for_mode(args.quick)
    started = datetime.now(UTC)
    load_start = os.getloadavg()
    state = state_dir(args.state)
    manifest_path = Path(args.manifest)
    model = load_model(manifest_path)
    name = model.metadata.name or "movielens-ranker"
    spec = model.spec
    candidates = settings.candidates or spec.serving.retrieval.candidates

    say(f"resolving {spec.checkpoint.uri} in {state}")
    resolved = Registry(state).resolve(spec.checkpoint.uri)  # never trains: a missing model is an error
    say("engine: from the cache, or built as `recserve up` would (not timed)")
    workload = Workload(
        pairs=spec.serving.retrieval.candidates, threads=spec.serving.resources.engine_threads
    )
    built = build_best(resolved, spec.optimization, state / "engines", workload=workload)
    engine = load_engine(built.path)
    say(f"engine {engine.name} ({'cached' if built.cache_hit else 'built'}): {built.path}")
    data_dir, index_dir = str(movielens_dir()), str(state / "retrieval")
    catalog = Catalog.load(data_dir, index_dir)
    max_k = min(spec.serving.retrieval.max_k, candidates)
    retrieval = spec.serving.retrieval.model_copy(update={"candidates": candidates, "max_k": max_k})
    router = RouterConfig(
        model_name=name,
        data_dir=data_dir,
        index_dir=index_dir,
        retrieval=retrieval,
        explain=spec.serving.explain,
    )
    rng = random.Random(SEED)
    known = catalog.movielens.user_ids()
    users = [rng.choice(known) for _ in range(settings.users)]
    plans = [plan_recommendation(RecommendRequest(user_id=u, k=K), catalog, router) for u in users]
    say(f"{len(users)} users, {candidates} candidates each, k={K}; load average {load_start[0]:.1f}")

    tmp = Path(tempfile.mkdtemp(prefix="rsb-", dir="/tmp"))  # short: Ray's socket paths must fit
    bench = Bench(
        settings=settings,
        name=name,
        document=yaml.safe_load(manifest_path.read_text()),
        spec=spec,
        candidates=candidates,
        state=private_state(state, tmp / "state"),
        tmp=tmp,
        env=dict(
            os.environ,
            RECSERVE_RAY_TMP=str(tmp / "ray"),
            **OFFLINE_ENV,
            **LOCAL_RAY_ENV,
        ),
        engine=engine,
        engine_dir=built.path,
        checkpoint_dir=resolved.path,
        data_dir=data_dir,
        index_dir=index_dir,
        recommend_bodies=[json.dumps({"user_id": u, "k": K}).encode() for u in users],
        explain_bodies=[json.dumps({"user_id": u, "k": K, "explain": True}).encode() for u in users],
        pair_bodies=[json.dumps(oip_pairs_body(p.user_texts, p.item_texts)).encode() for p in plans],
        one_pair_bodies=[
            json.dumps(oip_ids_body(u, p.movie_ids[0])).encode() for u, p in zip(users, plans, strict=True)
        ],
    )
    bench.env["RECSERVE_HOME"] = str(bench.state)
    try:
        engine.score(plans[-1].user_texts, plans[-1].item_texts)
        (measure_explain_only if args.explain_only else measure_all)(bench, catalog, router, users)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    header = header_lines(bench, resolved.uri, load_start[0], os.getloadavg()[0], engine.threads)
    flags = [flag for flag, on in (("--quick", args.quick), ("--explain-only", args.explain_only)) if on]
    command = " ".join([".venv/bin/python bench/serving.py", *flags])
    report = render_report(
        command=command,
        started=started,
        header=header,
        rows=bench.rows,
        targets=[explain_target(bench.rows)] if args.explain_only else evaluate_targets(bench.rows),
        notes=bench.notes + ([EXPLAIN_NOTE] if args.explain_only else [*reading_notes(bench), EXPLAIN_NOTE]),
    )
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "".join(f"-{flag.removeprefix('--')}" for flag in flags)
    out = RESULTS / f"serving-{started:%Y-%m-%d}{suffix}.md"
    out.write_text(report)
    say(f"wrote {out}")
    return 0
