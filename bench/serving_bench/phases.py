"""One phase per server variant: start it, check it binds loopback only, warm it up, measure its
levels, and stop it however the phase ends, so that the next variant has the cores to itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.serving_bench.measure import K, Settings, measure_http, row_of, warm_up
from bench.serving_bench.processes import (
    Exited,
    non_loopback_listeners,
    owned,
    say,
    uninterrupted,
    wait_http,
)
from bench.serving_bench.report import (
    BASELINE,
    KSERVE,
    SERVE,
    SERVE_EXPLAIN,
    SERVE_OFF,
    SERVE_OIP1,
    SERVE_OIP1_OFF,
    SERVE_PLAIN,
    SERVE_TODAY,
    Row,
    num,
)
from bench.serving_bench.servers import ServeRun, manifest_variant, mean_between, server_child
from bench.serving_bench.sides import Side
from recserve_operator.loadgen import LoadResult, generate
from recserve_serving.serve.metrics import BATCH_SIZE

RECOMMEND = "/v1/recommend"


@dataclass
class Bench:
    """Everything the phases share: the engine, the catalog, the request mix, and where to put logs."""

    settings: Settings
    name: str
    document: dict[str, Any]
    spec: Any
    candidates: int
    state: Path
    tmp: Path
    env: dict[str, str]
    engine: Any
    engine_dir: Path
    checkpoint_dir: Path
    index_dir: str
    recommend_bodies: list[bytes]
    explain_bodies: list[bytes]  # the same recommend requests with "explain": true
    pair_bodies: list[bytes]
    one_pair_bodies: list[bytes]
    today: Side | None = None  # today's path, compared side by side with the optimized one
    full_pairs: int = 0
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check_loopback(self, what: str, pids: Sequence[int]) -> None:
        exposed = non_loopback_listeners(pids)
        if exposed:
            self.notes.append(f"{what} listens beyond loopback: {', '.join(exposed[:8])}")
            say(f"WARNING: {what} listens beyond loopback: {exposed}")


def serve_phase(
    bench: Bench,
    variant_name: str,
    max_batch_size: int | None,
    *,
    explain_only: bool = False,
    today: bool = False,
) -> None:
    """``recserve up`` of a manifest copy (retried once if it exits before READY), then its levels
    (with ``explain_only``, only the explain comparison; with ``today``, today's manifest and
    only the recommend sweep)."""
    import yaml

    from recserve_operator.embedded.processes import free_port

    document = bench.today.document if today and bench.today else bench.document
    variant = manifest_variant(document, variant_name, max_batch_size=max_batch_size)
    if bench.candidates != bench.spec.serving.retrieval.candidates:  # quick runs: smaller requests
        retrieval = variant["spec"]["serving"].setdefault("retrieval", {})
        retrieval["candidates"] = bench.candidates
        retrieval["maxK"] = min(bench.spec.serving.retrieval.max_k, bench.candidates)
    path = bench.tmp / f"{variant_name}.yaml"
    path.write_text(yaml.safe_dump(variant, sort_keys=False))
    runs: list[ServeRun] = []

    def stop_all() -> None:
        for started in runs:
            started.stop()

    with owned(stop_all):
        for attempt in (1, 2):
            log = bench.tmp / f"{variant_name}-{attempt}.log"
            runs.append(ServeRun(variant_name, path, bench.state, free_port(), bench.env, log))
            try:
                runs[-1].start(timeout=900)
                break
            except Exited as error:  # e.g. `ray start --block` tearing down a head that came up too slowly
                with uninterrupted():
                    runs[-1].stop()
                if attempt == 2:
                    raise
                lines = str(error).splitlines()
                bench.notes.append(
                    f"`recserve up {variant_name}` exited before READY and was retried once: "
                    f"{lines[0]} … {lines[-1][:240]}"
                )
                say(f"{variant_name}: `recserve up` exited before READY, retrying once: {error}")
        if today:
            today_levels(bench, runs[-1], variant_name)
        else:
            serve_levels(
                bench, runs[-1], variant_name, off=max_batch_size is not None, explain_only=explain_only
            )


EXPLAIN_BLOCK = 5
"""Requests per block of the explain comparison: the sides alternate block by block."""


def explain_levels(bench: Bench, serve: ServeRun) -> None:
    """Recommend k=10 at concurrency 1 without and with ``"explain": true``, alternating in blocks
    of ``EXPLAIN_BLOCK`` requests on the same users, so that a change of load on the shared machine
    weighs on both sides alike (one level after the other measured the load, not the explanation);
    as many requests each as the settings say (more than a plain level's: a p50 is compared)."""
    count = bench.settings.explain_requests
    sides = ((SERVE_PLAIN, bench.recommend_bodies), (SERVE_EXPLAIN, bench.explain_bodies))
    results = {label: LoadResult() for label, _ in sides}
    for start in range(0, count, EXPLAIN_BLOCK):
        for label, bodies in sides:
            block = generate(
                serve.url,
                path=RECOMMEND,
                bodies=bodies[start : start + EXPLAIN_BLOCK],
                concurrency=1,
                seconds=bench.settings.issue_s,
                requests=min(EXPLAIN_BLOCK, count - start),
                timeout=600,
            )
            merged = results[label]
            merged.ok_latencies += block.ok_latencies
            merged.codes.update(block.codes)
            merged.failures += block.failures
            merged.first_error = merged.first_error or block.first_error
            merged.elapsed += block.elapsed
    for label, _ in sides:
        note = f"{count} requests alternating in blocks of {EXPLAIN_BLOCK} with the other side; QPS over busy time"
        row = row_of(label, 1, results[label], note)
        say(f"{label} c=1: {row.ok} ok, {row.errors} err, p50 {row.p50_ms:.0f} ms, p99 {row.p99_ms:.0f} ms")
        bench.rows.append(row)


def serve_levels(
    bench: Bench, serve: ServeRun, variant_name: str, *, off: bool, explain_only: bool = False
) -> None:
    """With batching on: the explain comparison (recommend at 1 without and with reasons), 1-pair
    OIP at 32, then the recommend sweep; with batching off, 1-pair OIP and recommend at 32 only.
    With ``explain_only``, the explain comparison only.

    The sweep runs last, from low to high concurrency: the highest level's requests are the
    longest, and nothing after it on this server can be slowed by what it leaves behind.
    """
    infer = f"/v2/models/{variant_name}/infer"
    say(f"{variant_name} READY on {serve.url} (Ray head pid {serve.ray_pid})")
    bench.check_loopback(f"`recserve up {variant_name}` process tree", [serve.child.pid, serve.ray_pid])
    warm_up(serve.url, RECOMMEND, bench.explain_bodies if not off else bench.recommend_bodies)
    if not off:
        explain_levels(bench, serve)
    if explain_only:
        return
    small: tuple[str, str, list[bytes], int, int | None] = (
        SERVE_OIP1_OFF if off else SERVE_OIP1,
        infer,
        bench.one_pair_bodies,
        32,
        None,
    )
    if off:
        plan = [small, (SERVE_OFF, RECOMMEND, bench.recommend_bodies, 32, None)]
    else:
        plan = [small] + [
            (SERVE, RECOMMEND, bench.recommend_bodies, c, bench.settings.level_requests(c))
            for c in bench.settings.levels
        ]
    for label, path, bodies, concurrency, requests in plan:
        measure_level(bench, serve, label, path, bodies, concurrency, requests)


def today_levels(bench: Bench, serve: ServeRun, variant_name: str) -> None:
    """Today's path: the same recommend sweep as the optimized path's, nothing else."""
    say(f"{variant_name} READY on {serve.url} (Ray head pid {serve.ray_pid})")
    bench.check_loopback(f"`recserve up {variant_name}` process tree", [serve.child.pid, serve.ray_pid])
    warm_up(serve.url, RECOMMEND, bench.recommend_bodies)
    for concurrency in bench.settings.levels:
        requests = bench.settings.level_requests(concurrency)
        measure_level(bench, serve, SERVE_TODAY, RECOMMEND, bench.recommend_bodies, concurrency, requests)


def measure_level(
    bench: Bench,
    serve: ServeRun,
    label: str,
    path: str,
    bodies: list[bytes],
    concurrency: int,
    requests: int | None,
) -> None:
    """One level on a running Serve app, noting its replicas and the mean batch it ran."""
    before = serve.metrics()
    small = bodies is bench.one_pair_bodies
    seconds = bench.settings.level_s if requests else None  # the sweep's levels are bounded in time
    row = measure_http(
        label,
        serve.url,
        path,
        bodies,
        concurrency,
        bench.settings,
        small=small,
        requests=requests,
        seconds=seconds,
    )
    mean_batch = mean_between(before, serve.metrics(), BATCH_SIZE)
    prefix = f"replicas after: {serve.replicas()}, mean batch {num(mean_batch)} req"
    row.note = prefix + (f"; {row.note}" if row.note else "")
    bench.rows.append(row)


def kserve_phase(bench: Bench) -> None:
    from recserve_operator.embedded.processes import free_port

    port = free_port()
    config = {"model": bench.name, "engine_dir": str(bench.engine_dir), "port": port}
    kserve = server_child("kserve", config, bench.tmp / "kserve.log")
    url, model = f"http://127.0.0.1:{port}", f"/v2/models/{bench.name}"
    with owned(kserve.stop):
        kserve.start()
        wait_http(f"{url}{model}/ready", kserve, 300)
        bench.check_loopback("kserve ModelServer", [kserve.pid])
        warm_up(url, f"{model}/infer", bench.pair_bodies)
        note = f"{bench.candidates} pairs/request (retrieval by the client, untimed)"
        for concurrency in (1, 32):
            bench.rows.append(
                measure_http(
                    KSERVE, url, f"{model}/infer", bench.pair_bodies, concurrency, bench.settings, note=note
                )
            )


def baseline_phase(bench: Bench) -> None:
    from recserve_operator.embedded.processes import free_port

    port = free_port()
    settings = bench.settings
    config = {
        "checkpoint": str(bench.checkpoint_dir),
        "index_dir": bench.index_dir,
        "max_len": bench.engine.manifest.max_sequence_length,
        "batch": 64,
        "k": K,
        "limit": settings.catalog_limit,
        "port": port,
    }
    baseline = server_child("baseline", config, bench.tmp / "baseline.log")
    url = f"http://127.0.0.1:{port}"
    with owned(baseline.stop):
        baseline.start()
        wait_http(f"{url}/health", baseline, 300)
        bench.check_loopback("FastAPI baseline", [baseline.pid])
        result = generate(
            url,
            path="/recommend",
            bodies=bench.recommend_bodies,
            concurrency=1,
            seconds=1,
            requests=settings.baseline_requests,
            timeout=1200,
        )
    note = f"~{bench.full_pairs} pairs/request in batches of 64, {settings.baseline_requests} request(s)"
    bench.rows.append(row_of(BASELINE, 1, result, note))
    say(f"baseline: {bench.rows[-1].ok} ok, p50 {bench.rows[-1].p50_ms:.0f} ms")
