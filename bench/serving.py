"""Serving paths side by side: Ray Serve vs the engine in-process vs a plain server vs kserve.

    .venv/bin/python bench/serving.py [--quick] [--state DIR] [--manifest FILE]

One run on this machine, one engine (the example manifest's ORT INT8 engine, fetched from
or built into the engine cache exactly as ``recserve up`` does), one request mix: recommend
k=10 for a seeded list of random MovieLens users, retrieval handing the manifest's
``retrieval.candidates`` to the ranker. Measured, in this order:

1. the engine in-process, sequentially: ``plan_recommendation`` + ``engine.score`` (the
   engine's capacity on these cores; measured before and after everything else);
2. the same engine on the whole catalog (every movie the user has not rated);
3. the Ray Serve HTTP path: ``recserve up`` of a copy of the manifest on its own port, at
   concurrency 1, 8 and 32, plus 1-pair OIP infer at 32; then again with
   ``batching.maxBatchSize: 1`` (batching off) at concurrency 32;
4. kserve's ModelServer hosting the same engine, OIP v2 infer of the same pairs;
5. a plain baseline: the fine-tuned checkpoint in torch eager fp32 behind FastAPI/uvicorn,
   scoring every catalog movie the user has not rated (no retrieval), a bounded number of
   requests.

The machine is shared and noisy: only the ratios of this one run mean anything, and the
load generator shares the 2 cores with every HTTP server it measures. Every process the
bench starts is in its own process group and is stopped by pid (``recserve down NAME`` for
``recserve up``) however the run ends; all servers bind 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from recserve_operator.embedded.local_ray import LOCAL_RAY_ENV
from recserve_serving.offline import OFFLINE_ENV
from recserve_serving.serve.metrics import BATCH_SIZE

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = REPO / "manifests" / "examples" / "movielens-ranker.yaml"
RESULTS = REPO / "bench" / "results"
CHILD_ENV = "RECSERVE_BENCH_CHILD"
K = 10
SEED = 7

# The serving targets the benchmark checks.
SERVE_VS_DIRECT = 0.85
BATCHING_ON_VS_OFF = 2.0
FULL_VS_TWO_STAGE_P99 = 5.0

# Row labels, used for ratios and targets.
DIRECT = "engine in-process (2-stage)"
FULL = "engine in-process, full catalog"
SERVE = "Ray Serve /v1/recommend"
SERVE_OFF = "Ray Serve /v1/recommend, batching off"
SERVE_OIP1 = "Ray Serve OIP infer, 1 pair"
SERVE_OIP1_OFF = "Ray Serve OIP infer, 1 pair, batching off"
KSERVE = "kserve ModelServer OIP infer"
BASELINE = "FastAPI + torch fp32, full catalog"


# --------------------------------------------------------------------------------------
# Pure helpers (tested in tests/integration/test_bench_serving.py)
# --------------------------------------------------------------------------------------


def percentile_ms(latencies_s: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) in milliseconds, linear interpolation; nan when empty."""
    if not latencies_s:
        return math.nan
    ordered = sorted(latencies_s)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return 1000 * value


@dataclass
class Row:
    """One measured path at one concurrency: successful requests over the wall time of the block."""

    path: str
    concurrency: int
    ok: int
    errors: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    note: str = ""

    @property
    def qps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else math.nan


def summarize(
    path: str,
    concurrency: int,
    latencies_s: Sequence[float],
    elapsed_s: float,
    errors: int = 0,
    note: str = "",
) -> Row:
    """A table row from the latencies of the successful requests and the block's wall time."""
    return Row(
        path=path,
        concurrency=concurrency,
        ok=len(latencies_s),
        errors=errors,
        elapsed_s=elapsed_s,
        p50_ms=percentile_ms(latencies_s, 50),
        p99_ms=percentile_ms(latencies_s, 99),
        note=note,
    )


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, nan when either is missing or the denominator is zero."""
    if any(not isinstance(x, int | float) or math.isnan(x) for x in (numerator, denominator)):
        return math.nan
    return numerator / denominator if denominator else math.nan


def find(rows: Sequence[Row], path: str, concurrency: int | None = None) -> Row | None:
    for row in rows:
        if row.path == path and (concurrency is None or row.concurrency == concurrency):
            return row
    return None


def _num(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _times(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}×"


def format_table(rows: Sequence[Row]) -> str:
    """Markdown table; QPS ratios against the in-process engine (2) and the plain baseline (3)."""
    direct = find(rows, DIRECT)
    baseline = find(rows, BASELINE)
    direct_qps = direct.qps if direct else math.nan
    baseline_qps = baseline.qps if baseline else math.nan
    lines = [
        "| path | conc. | ok | err | QPS | p50 ms | p99 ms | QPS × engine in-process | QPS × baseline | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.path} | {r.concurrency} | {r.ok} | {r.errors} | {_num(r.qps, 2)} | {_num(r.p50_ms)} "
            f"| {_num(r.p99_ms)} | {_times(ratio(r.qps, direct_qps))} | {_times(ratio(r.qps, baseline_qps))} "
            f"| {r.note} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class TargetResult:
    name: str
    value: float
    threshold: float
    detail: str

    @property
    def met(self) -> bool:
        return not math.isnan(self.value) and self.value >= self.threshold

    def line(self) -> str:
        verdict = "MET" if self.met else "MISSED"
        return f"- {self.name}: {_times(self.value)} (target ≥ {self.threshold:g}×) → **{verdict}** ({self.detail})"


def saturation_row(rows: Sequence[Row], path: str) -> Row | None:
    """The highest-throughput concurrency level of a path (its saturation point)."""
    candidates = [r for r in rows if r.path == path and r.ok > 0]
    return max(candidates, key=lambda r: r.qps) if candidates else None


def evaluate_targets(rows: Sequence[Row]) -> list[TargetResult]:
    results = []
    direct = find(rows, DIRECT)
    serve = saturation_row(rows, SERVE)
    results.append(
        TargetResult(
            "Ray Serve path vs engine in-process, throughput at saturation",
            ratio(serve.qps if serve else math.nan, direct.qps if direct else math.nan),
            SERVE_VS_DIRECT,
            f"best Serve level c={serve.concurrency if serve else '?'} "
            f"{_num(serve.qps if serve else math.nan, 2)} QPS vs {_num(direct.qps if direct else math.nan, 2)} QPS",
        )
    )
    for label, on_path, off_path in (
        ("recommend, the bench's request mix", SERVE, SERVE_OFF),
        ("OIP infer, 1 pair per request", SERVE_OIP1, SERVE_OIP1_OFF),
    ):
        on, off = find(rows, on_path, 32), find(rows, off_path, 32)
        results.append(
            TargetResult(
                f"batching on vs off at concurrency 32 ({label})",
                ratio(on.qps if on else math.nan, off.qps if off else math.nan),
                BATCHING_ON_VS_OFF,
                f"{_num(on.qps if on else math.nan, 2)} vs {_num(off.qps if off else math.nan, 2)} QPS",
            )
        )
    two_stage, full = find(rows, DIRECT), find(rows, FULL)
    results.append(
        TargetResult(
            "two-stage recommend p99 lower than full-catalog scoring (same engine, in-process)",
            ratio(full.p99_ms if full else math.nan, two_stage.p99_ms if two_stage else math.nan),
            FULL_VS_TWO_STAGE_P99,
            f"p99 {_num(full.p99_ms if full else math.nan, 0)} ms full (n={full.ok if full else 0}) "
            f"vs {_num(two_stage.p99_ms if two_stage else math.nan, 0)} ms two-stage",
        )
    )
    return results


def histogram_stats(exposition: str, name: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram, added over every label set."""
    total = count = 0.0
    for line in exposition.splitlines():
        match = re.match(rf"^{re.escape(name)}_(sum|count)(?:\{{[^}}]*\}})? ([0-9.eE+-]+|NaN)$", line)
        if match:
            value = float(match.group(2))
            if match.group(1) == "sum":
                total += value
            else:
                count += value
    return total, count


def mean_between(before: str, after: str, name: str) -> float:
    """Mean of a histogram's observations made between two scrapes."""
    s0, c0 = histogram_stats(before, name)
    s1, c1 = histogram_stats(after, name)
    return (s1 - s0) / (c1 - c0) if c1 > c0 else math.nan


def manifest_variant(document: dict[str, Any], name: str, *, max_batch_size: int | None = None) -> dict:
    """A copy of a RecommenderModel document under another name, optionally with another batch size."""
    copy = json.loads(json.dumps(document))
    copy["metadata"]["name"] = name
    if max_batch_size is not None:
        copy["spec"].setdefault("serving", {}).setdefault("batching", {})["maxBatchSize"] = max_batch_size
    return copy


def oip_pairs_body(user_texts: Sequence[str], item_texts: Sequence[str]) -> dict[str, Any]:
    n = len(user_texts)
    return {
        "inputs": [
            {"name": "user_text", "datatype": "BYTES", "shape": [n], "data": list(user_texts)},
            {"name": "item_text", "datatype": "BYTES", "shape": [n], "data": list(item_texts)},
        ]
    }


def oip_ids_body(user_id: int, movie_id: int) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "user_id", "datatype": "INT64", "shape": [1], "data": [user_id]},
            {"name": "movie_id", "datatype": "INT64", "shape": [1], "data": [movie_id]},
        ]
    }


@dataclass(frozen=True)
class Settings:
    """How much each block runs. ``--quick`` is a smoke run of every path with small requests."""

    quick: bool
    users: int  # distinct request bodies, cycled in the same order on every path
    direct_s: float  # each of the two in-process blocks
    full_users: int  # full-catalog requests (at most; none starts after full_s)
    full_s: float
    baseline_requests: int
    catalog_limit: int | None  # quick: "full catalog" is cut to this many movies
    candidates: int | None  # quick: retrieval.candidates override
    issue_s: float  # no new request of a level starts after this

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls(True, 80, 4, 1, 0, 1, 500, 20, 60)
        return cls(False, 400, 20, 2, 150, 1, None, None, 300)

    def requests(self, concurrency: int, *, small: bool = False) -> int:
        """Closed-loop requests of one level: whole rounds of ``concurrency`` (so the last round is full)."""
        if small:  # 1-pair requests are cheap: many rounds
            return concurrency * (10 if self.quick else 20)
        if concurrency == 1:
            return 4 if self.quick else 10
        return concurrency * 2 if self.quick or concurrency >= 32 else concurrency * 3


def render_report(
    *,
    command: str,
    started: datetime,
    header: Sequence[str],
    rows: Sequence[Row],
    targets: Sequence[TargetResult],
    notes: Sequence[str],
) -> str:
    parts = [
        f"# Serving benchmark, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        *[f"- {line}" for line in header],
        "",
        format_table(rows),
        "",
        "Targets:",
        "",
        *[t.line() for t in targets],
        "",
        "Notes:",
        "",
        *[f"- {n}" for n in notes],
        "",
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def _say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait(check: Callable[[], bool], timeout: float, what: str, child: Child, interval: float = 0.5) -> None:
    """``wait_for`` that ends at once, with the child's log, when the child exits."""
    from recserve_serving.waiting import wait_for

    def done() -> bool:
        return not child.alive() or check()

    wait_for(done, timeout, interval=interval, message=what)
    child.check_alive()


def non_loopback_listeners(pids: Sequence[int]) -> list[str]:
    """Listening sockets of these process trees that are not bound to loopback."""
    import psutil

    from recserve_operator.embedded.processes import process_tree

    found = []
    for proc in process_tree(pids):
        with contextlib.suppress(psutil.Error):
            listing = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
            for conn in listing(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.ip not in ("127.0.0.1", "::1"):
                    found.append(f"{proc.name()}[{proc.pid}] {conn.laddr.ip}:{conn.laddr.port}")
    return sorted(set(found))


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while stopping what the bench started, so that nothing is left half-stopped."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def owned(stop: Callable[[], None]) -> Iterator[None]:
    """Run the body, then ``stop()`` however it ends (error, Ctrl-C, SIGTERM)."""
    try:
        yield
    finally:
        with uninterrupted():
            stop()


class Exited(RuntimeError):
    """A server the bench started exited before it was ready."""


class Child:
    """A server subprocess in its own process group, stopped by pid (tree and group)."""

    def __init__(self, label: str, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.label = label
        self.command = command
        self.log = log
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from recserve_operator.embedded.processes import spawn

        self.process = spawn(self.command, self.log, self.env)
        _say(f"{self.label}: started pid {self.process.pid} (log {self.log})")

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise Exited(f"{self.label} exited with code {self.process.returncode}:\n{_tail(self.log)}")

    def stop(self) -> None:
        from recserve_operator.embedded.processes import stop_tree

        if self.process is None:
            return
        stopped = stop_tree([self.process.pid], pgids=[self.process.pid], grace=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        _say(f"{self.label}: stopped pids {sorted(stopped)}")


class ServeRun:
    """``recserve up MANIFEST --port P`` as a subprocess; stopped with ``recserve down NAME``."""

    def __init__(self, name: str, manifest: Path, state: Path, port: int, env: dict[str, str], log: Path):
        self.name = name
        self.state = state
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.recserve = str(Path(sys.executable).with_name("recserve"))
        self.ray_pid = 0
        self.dashboard = ""
        self.stopped = False
        self.child = Child(
            f"recserve up {name}",
            [self.recserve, "up", str(manifest), "--port", str(port), "--state", str(state)],
            log,
            env,
        )

    def start(self, timeout: float) -> None:
        self.child.start()

        def ready() -> bool:
            return any(line.startswith("READY ") for line in _tail(self.child.log, 400).splitlines())

        _wait(ready, timeout, f"recserve up {self.name}", self.child, interval=1.0)
        record = json.loads((self.state / "runs" / f"{self.name}.json").read_text())
        self.ray_pid = int((record.get("ray") or {}).get("pid", 0))
        self.dashboard = str((record.get("ray") or {}).get("dashboard_url", ""))

    def replicas(self) -> int | None:
        """Running ranker replicas (the one version's application), from the Serve REST API
        (None when unknown)."""
        import httpx

        try:
            apps = httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=5).json()
            (deployment,) = [
                app["deployments"]["Ranker"]
                for app in apps["applications"].values()
                if "Ranker" in app.get("deployments", {})
            ]
            return sum(1 for r in deployment["replicas"] if r.get("state") == "RUNNING")
        except Exception:
            return None

    def metrics(self) -> str:
        import httpx

        try:
            return httpx.get(f"{self.url}/metrics", timeout=10).text
        except httpx.HTTPError:
            return ""

    def stop(self) -> None:
        from recserve_operator.embedded.processes import pid_alive, stop_tree

        if self.child.process is None or self.stopped:
            return
        self.stopped = True
        if self.ray_pid == 0:  # stopped before READY: the record may still name the Ray head
            with contextlib.suppress(OSError, ValueError):
                record = json.loads((self.state / "runs" / f"{self.name}.json").read_text())
                if int(record.get("pid", 0)) == self.child.pid:
                    self.ray_pid = int((record.get("ray") or {}).get("pid", 0))
        try:
            done = subprocess.run(
                [self.recserve, "down", self.name, "--state", str(self.state)],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=150,
                start_new_session=True,
            )
            _say(
                f"recserve down {self.name}: rc {done.returncode} {done.stdout.strip()} {done.stderr.strip()}"
            )
        except subprocess.TimeoutExpired:
            _say(f"recserve down {self.name}: timed out; stopping by pid")
        self.child.stop()
        if self.ray_pid and pid_alive(self.ray_pid):
            stop_tree([self.ray_pid], pgids=[self.ray_pid])
            _say(f"ray head {self.ray_pid} was still alive: stopped by pid")


# --------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------


@dataclass
class Block:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    codes: dict[int, int] = field(default_factory=dict)
    first_error: str = ""
    elapsed: float = 0.0


async def _http_block(
    url: str, bodies: Sequence[bytes], concurrency: int, seconds: float, max_requests: int, timeout: float
) -> Block:
    import httpx

    block = Block()
    counter = [0]
    started = time.monotonic()
    deadline = started + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            while time.monotonic() < deadline and counter[0] < max_requests:
                body = bodies[counter[0] % len(bodies)]
                counter[0] += 1
                start = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError as error:
                    block.errors += 1
                    block.first_error = block.first_error or repr(error)
                    continue
                took = time.perf_counter() - start
                block.codes[response.status_code] = block.codes.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    block.latencies.append(took)
                else:
                    block.errors += 1
                    block.first_error = block.first_error or f"{response.status_code} {response.text[:200]}"

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    block.elapsed = time.monotonic() - started
    return block


def http_block(
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    seconds: float,
    max_requests: int,
    timeout: float = 120.0,
) -> Block:
    """Bounded closed-loop load: ``concurrency`` workers until the deadline or the request budget."""
    return asyncio.run(_http_block(url, bodies, concurrency, seconds, max_requests, timeout))


def measure_http(
    label: str,
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    settings: Settings,
    *,
    small: bool = False,
    note: str = "",
) -> Row:
    """One closed-loop level: a whole number of rounds of ``concurrency`` requests, timed end to end."""
    block = http_block(
        url, bodies, concurrency, settings.issue_s, settings.requests(concurrency, small=small), timeout=600
    )
    if block.errors:
        note = (note + "; " if note else "") + f"first error: {block.first_error[:120]}"
    row = summarize(label, concurrency, block.latencies, block.elapsed, block.errors, note)
    _say(
        f"{label} c={concurrency}: {row.ok} ok, {row.errors} err, {row.qps:.2f} QPS, "
        f"p50 {row.p50_ms:.0f} ms, p99 {row.p99_ms:.0f} ms"
    )
    return row


def warm_up(url: str, bodies: Sequence[bytes]) -> None:
    """A few requests (other users than the measured ones) so that first-call costs are not measured."""
    block = http_block(url, list(reversed(bodies)), 4, 300, 8, timeout=600)
    if block.errors:
        raise RuntimeError(f"warm-up of {url} failed: {block.first_error[:300]}")


def wait_http(url: str, child: Child, timeout: float) -> None:
    import httpx

    def ready() -> bool:
        return httpx.get(url, timeout=5).status_code == 200

    _wait(ready, timeout, child.label, child)


# --------------------------------------------------------------------------------------
# Child servers: kserve ModelServer and the plain FastAPI baseline
# --------------------------------------------------------------------------------------


def _input_texts(tensor: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]


def kserve_child(config: dict[str, Any]) -> None:
    """kserve's ModelServer hosting the engine: a ``kserve.Model`` whose predict calls ``engine.score``."""
    sys.argv = sys.argv[:1]  # kserve parses sys.argv at import
    import kserve
    import kserve.model_server as model_server
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    from recserve_serving.engine.runtime import load_engine

    class LoopbackRESTServer(model_server.RESTServer):  # type: ignore[misc]
        """kserve binds its REST server to 0.0.0.0 unconditionally; the bench binds loopback only."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = "127.0.0.1"

    model_server.RESTServer = LoopbackRESTServer

    class EngineModel(kserve.Model):  # type: ignore[misc]
        def __init__(self, name: str, engine_dir: str) -> None:
            super().__init__(name)
            self.engine_dir = engine_dir
            self.engine: Any = None

        def load(self) -> bool:
            self.engine = load_engine(self.engine_dir)
            self.engine.score(["likes: warm"], ["up"])
            self.ready = True
            return True

        def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
            inputs = {tensor.name: tensor for tensor in payload.inputs}
            scores = self.engine.score(_input_texts(inputs["user_text"]), _input_texts(inputs["item_text"]))
            output = InferOutput("score", [len(scores)], "FP32", [float(s) for s in scores])
            return InferResponse(payload.id or "", self.name, [output])

    model = EngineModel(config["model"], config["engine_dir"])
    model.load()
    kserve.ModelServer(
        http_port=config["port"], enable_grpc=False, workers=1, enable_latency_logging=False
    ).start([model])


def baseline_child(config: dict[str, Any]) -> None:
    """What a user might write instead: FastAPI + the transformers checkpoint, scoring every candidate."""
    import torch
    import uvicorn
    from fastapi import FastAPI

    from recserve_serving.model import encode, load_checkpoint, torch_inputs
    from recserve_serving.serve.catalog import Catalog

    torch.set_num_threads(2)
    catalog = Catalog.load(config["data_dir"], config["index_dir"])
    checkpoint = load_checkpoint(Path(config["checkpoint"]))
    model = checkpoint.model.eval()
    max_len = int(config["max_len"])
    batch = int(config["batch"])
    limit = config.get("limit")  # quick runs only: a cut catalog
    movie_ids = [int(m) for m in catalog.movielens.movie_ids]
    item_text = {m: catalog.item_text(m) for m in movie_ids}

    @torch.inference_mode()
    def score(user_text: str, candidates: list[int]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(candidates), batch):
            chunk = candidates[start : start + batch]
            encoded = encode(
                checkpoint.tokenizer, [user_text] * len(chunk), [item_text[m] for m in chunk], max_len
            )
            scores.extend(model(**torch_inputs(encoded)).float().tolist())
        return scores

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/recommend")
    def recommend(body: dict[str, int]) -> dict[str, Any]:
        user_id, k = int(body["user_id"]), int(body.get("k", K))
        seen = catalog.seen(user_id)
        candidates = [m for m in movie_ids if m not in seen][:limit]
        scores = score(catalog.user_text(user_id, None), candidates)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        return {"user_id": user_id, "items": [{"movie_id": candidates[i], "score": scores[i]} for i in order]}

    score("likes: warm", movie_ids[:batch])
    uvicorn.run(app, host="127.0.0.1", port=int(config["port"]), log_level="warning")


def start_child(kind: str, config: dict[str, Any], log: Path) -> Child:
    env = dict(os.environ, **{CHILD_ENV: json.dumps({"kind": kind, **config})})
    return Child(kind, [sys.executable, str(Path(__file__).resolve())], log, env)


# --------------------------------------------------------------------------------------
# In-process measurements
# --------------------------------------------------------------------------------------


def direct_block(
    engine: Any, catalog: Any, router: Any, users: Sequence[int], seconds: float
) -> tuple[list[float], float]:
    """Two-stage recommend in-process, one request after another: latencies and wall time."""
    from recserve_serving.serve.api_models import RecommendRequest
    from recserve_serving.serve.recommend import plan_recommendation

    latencies = []
    started = time.monotonic()
    for i in range(100_000):
        if time.monotonic() - started >= seconds:
            break
        start = time.perf_counter()
        plan = plan_recommendation(RecommendRequest(user_id=users[i % len(users)], k=K), catalog, router)
        scores = engine.score(plan.user_texts, plan.item_texts)
        plan.respond(scores.tolist(), "direct")
        latencies.append(time.perf_counter() - start)
    return latencies, time.monotonic() - started


def unrated(catalog: Any, user: int, limit: int | None) -> list[int]:
    """Every catalog movie the user has not rated (the first ``limit`` of them in a quick run)."""
    seen = catalog.seen(user)
    return [int(m) for m in catalog.movielens.movie_ids if int(m) not in seen][:limit]


def full_catalog(
    engine: Any, catalog: Any, users: Sequence[int], seconds: float, limit: int | None
) -> tuple[list[float], float, int]:
    """The same engine scoring every movie each user has not rated (no retrieval stage)."""
    latencies, pairs = [], 0
    started = time.monotonic()
    for n, user in enumerate(users):
        if n and time.monotonic() - started >= seconds:
            break
        start = time.perf_counter()
        candidates = unrated(catalog, user, limit)
        user_text = catalog.user_text(user, None)
        scores = engine.score([user_text] * len(candidates), [catalog.item_text(m) for m in candidates])
        sorted(range(len(scores)), key=lambda i: -scores[i])[:K]
        latencies.append(time.perf_counter() - start)
        pairs += len(candidates)
    return latencies, time.monotonic() - started, pairs // max(1, len(latencies))


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


SHARED_STATE = ("mlflow.db", "mlartifacts", "engines", "retrieval")


def private_state(shared: Path, private: Path) -> Path:
    """A state dir that shares the registry, engine cache and index but has its own runs/ and logs.

    ``recserve down`` without a name stops every run recorded in a state dir; other sessions
    use the shared one, so the bench's own ``up`` runs are recorded where nobody else looks.
    """
    private.mkdir(parents=True)
    for name in SHARED_STATE:
        (private / name).symlink_to(shared / name)
    return private


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
    data_dir: str
    index_dir: str
    recommend_bodies: list[bytes]
    pair_bodies: list[bytes]
    one_pair_bodies: list[bytes]
    full_pairs: int = 0
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check_loopback(self, what: str, pids: Sequence[int]) -> None:
        exposed = non_loopback_listeners(pids)
        if exposed:
            self.notes.append(f"{what} listens beyond loopback: {', '.join(exposed[:8])}")
            _say(f"WARNING: {what} listens beyond loopback: {exposed}")


def serve_phase(bench: Bench, variant_name: str, max_batch_size: int | None) -> None:
    """``recserve up`` of a manifest copy (retried once if it exits before READY), then its levels."""
    import yaml

    from recserve_operator.embedded.processes import free_port

    variant = manifest_variant(bench.document, variant_name, max_batch_size=max_batch_size)
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
                _say(f"{variant_name}: `recserve up` exited before READY, retrying once: {error}")
        serve_levels(bench, runs[-1], variant_name, off=max_batch_size is not None)


def serve_levels(bench: Bench, serve: ServeRun, variant_name: str, *, off: bool) -> None:
    """Recommend at 1/8/32 (32 only when batching is off) and 1-pair OIP at 32.

    Concurrency 32 on recommend runs last: its requests are the longest, and nothing after it
    on this server can be slowed by what it leaves behind.
    """
    recommend = f"{serve.url}/v1/recommend"
    infer = f"{serve.url}/v2/models/{variant_name}/infer"
    plan = [] if off else [(SERVE, recommend, bench.recommend_bodies, c) for c in (1, 8)]
    plan += [
        (SERVE_OIP1_OFF if off else SERVE_OIP1, infer, bench.one_pair_bodies, 32),
        (SERVE_OFF if off else SERVE, recommend, bench.recommend_bodies, 32),
    ]
    _say(f"{variant_name} READY on {serve.url} (Ray head pid {serve.ray_pid})")
    bench.check_loopback(f"`recserve up {variant_name}` process tree", [serve.child.pid, serve.ray_pid])
    warm_up(recommend, bench.recommend_bodies)
    for label, url, bodies, concurrency in plan:
        before = serve.metrics()
        small = bodies is bench.one_pair_bodies
        row = measure_http(label, url, bodies, concurrency, bench.settings, small=small)
        mean_batch = mean_between(before, serve.metrics(), BATCH_SIZE)
        prefix = f"replicas after: {serve.replicas()}, mean batch {_num(mean_batch)} req"
        row.note = prefix + (f"; {row.note}" if row.note else "")
        bench.rows.append(row)


def kserve_phase(bench: Bench) -> None:
    from recserve_operator.embedded.processes import free_port

    port = free_port()
    config = {"model": bench.name, "engine_dir": str(bench.engine_dir), "port": port}
    kserve = start_child("kserve", config, bench.tmp / "kserve.log")
    base = f"http://127.0.0.1:{port}/v2/models/{bench.name}"
    with owned(kserve.stop):
        kserve.start()
        wait_http(f"{base}/ready", kserve, 300)
        bench.check_loopback("kserve ModelServer", [kserve.pid])
        warm_up(f"{base}/infer", bench.pair_bodies)
        note = f"{bench.candidates} pairs/request (retrieval by the client, untimed)"
        for concurrency in (1, 32):
            bench.rows.append(
                measure_http(
                    KSERVE, f"{base}/infer", bench.pair_bodies, concurrency, bench.settings, note=note
                )
            )


def baseline_phase(bench: Bench) -> None:
    from recserve_operator.embedded.processes import free_port

    port = free_port()
    settings = bench.settings
    config = {
        "checkpoint": str(bench.checkpoint_dir),
        "data_dir": bench.data_dir,
        "index_dir": bench.index_dir,
        "max_len": bench.engine.manifest.max_sequence_length,
        "batch": 64,
        "limit": settings.catalog_limit,
        "port": port,
    }
    baseline = start_child("baseline", config, bench.tmp / "baseline.log")
    with owned(baseline.stop):
        baseline.start()
        wait_http(f"http://127.0.0.1:{port}/health", baseline, 300)
        bench.check_loopback("FastAPI baseline", [baseline.pid])
        url = f"http://127.0.0.1:{port}/recommend"
        block = http_block(url, bench.recommend_bodies, 1, 1, settings.baseline_requests, timeout=1200)
    note = f"~{bench.full_pairs} pairs/request in batches of 64, {settings.baseline_requests} request(s)"
    if block.errors:
        note += f"; first error: {block.first_error[:120]}"
    bench.rows.append(summarize(BASELINE, 1, block.latencies, block.elapsed, block.errors, note))
    _say(f"baseline: {bench.rows[-1].ok} ok, p50 {bench.rows[-1].p50_ms:.0f} ms")


def run(args: argparse.Namespace) -> int:
    import yaml

    from recserve_operator.validate import load_model
    from recserve_serving.engine.build import build_engine
    from recserve_serving.engine.runtime import load_engine
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

    _say(f"resolving {spec.checkpoint.uri} in {state}")
    resolved = Registry(state).resolve(spec.checkpoint.uri)  # never trains: a missing model is an error
    _say("engine: from the cache, or built as `recserve up` would (not timed)")
    built = build_engine(resolved, spec.optimization, state / "engines")
    engine = load_engine(built.path)
    _say(f"engine {engine.name} ({'cached' if built.cache_hit else 'built'}): {built.path}")
    data_dir, index_dir = str(movielens_dir()), str(state / "retrieval")
    catalog = Catalog.load(data_dir, index_dir)
    max_k = min(spec.serving.retrieval.max_k, candidates)
    retrieval = spec.serving.retrieval.model_copy(update={"candidates": candidates, "max_k": max_k})
    router = RouterConfig(model_name=name, data_dir=data_dir, index_dir=index_dir, retrieval=retrieval)
    rng = random.Random(SEED)
    known = catalog.movielens.user_ids()
    users = [rng.choice(known) for _ in range(settings.users)]
    plans = [plan_recommendation(RecommendRequest(user_id=u, k=K), catalog, router) for u in users]
    _say(f"{len(users)} users, {candidates} candidates each, k={K}; load average {load_start[0]:.1f}")

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
        pair_bodies=[json.dumps(oip_pairs_body(p.user_texts, p.item_texts)).encode() for p in plans],
        one_pair_bodies=[
            json.dumps(oip_ids_body(u, p.movie_ids[0])).encode() for u, p in zip(users, plans, strict=True)
        ],
    )
    bench.env["RECSERVE_HOME"] = str(bench.state)
    try:
        # The engine in-process (block A), then on the whole catalog.
        engine.score(plans[-1].user_texts, plans[-1].item_texts)
        lat_a, el_a = direct_block(engine, catalog, router, users, settings.direct_s)
        _say(f"in-process block A: {len(lat_a)} requests, {len(lat_a) / el_a:.2f} QPS")
        lat_full, el_full, bench.full_pairs = full_catalog(
            engine, catalog, users[: settings.full_users], settings.full_s, settings.catalog_limit
        )
        full_row = summarize(
            FULL, 1, lat_full, el_full, note=f"~{bench.full_pairs} pairs/request, no retrieval"
        )
        bench.rows.append(full_row)
        _say(f"full catalog: {full_row.ok} requests, p99 {full_row.p99_ms:.0f} ms")

        phases: list[tuple[str, Callable[[], None]]] = [
            ("Ray Serve (batching on)", lambda: serve_phase(bench, f"{name}-bench", None)),
            ("Ray Serve (batching off)", lambda: serve_phase(bench, f"{name}-bench-nobatch", 1)),
            ("kserve ModelServer", lambda: kserve_phase(bench)),
            ("FastAPI + torch baseline", lambda: baseline_phase(bench)),
        ]
        for label, phase in phases:
            try:
                phase()
            except Exception as error:  # one broken path must not hide the others' figures
                bench.notes.append(f"{label} FAILED: {str(error).splitlines()[0][:300]}")
                _say(f"{label} FAILED: {error}")

        # The engine in-process again (block B); its row merges both blocks.
        lat_b, el_b = direct_block(engine, catalog, router, users, settings.direct_s)
        note = f"sequential; first/last block {len(lat_a) / el_a:.2f}/{len(lat_b) / el_b:.2f} QPS"
        bench.rows.insert(0, summarize(DIRECT, 1, lat_a + lat_b, el_a + el_b, note=note))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows, notes = bench.rows, bench.notes
    targets = evaluate_targets(rows)
    load_end = os.getloadavg()
    batching = spec.serving.batching
    autoscaling = spec.serving.autoscaling
    header = [
        f"engine: {engine.name} (`{built.path.name}`), {engine.threads} ORT threads, max length "
        f"{engine.manifest.max_sequence_length}, chunks of {engine.max_batch_size} pairs; checkpoint {resolved.uri}",
        f"request mix: recommend k={K} for {len(users)} seeded random MovieLens users (cycled in the same order "
        f"on every path), retrieval.candidates={candidates}",
        f"machine: {os.cpu_count()} CPUs shared with other work, load average {load_start[0]:.1f} at start, "
        f"{load_end[0]:.1f} at end; the load generator runs on the same cores as every HTTP server",
        "HTTP levels are closed loops of whole rounds (c=1: "
        f"{settings.requests(1)} requests, c=8: {settings.requests(8)}, c=32: {settings.requests(32)}, "
        f"1-pair OIP c=32: {settings.requests(32, small=True)}) after a warm-up of 8; Serve autoscaling "
        f"{autoscaling.min_replicas}..{autoscaling.max_replicas} replicas of {spec.serving.resources.cpus:g} CPU, "
        f"batching maxBatchSize {batching.max_batch_size} / {batching.batch_wait_timeout_ms:g} ms",
    ]
    if settings.quick:
        header.append(
            f"QUICK smoke run: {candidates} candidates and a {settings.catalog_limit}-movie 'full catalog'; "
            "the figures check that every path works, they are not the benchmark"
        )
    notes += [
        "QPS = successful requests / wall time of the level (first request sent to last answer); "
        "with few requests (column `ok`) p99 is close to the max.",
        "The Serve target compares Serve at its best concurrency level with the in-process engine run one "
        "request after another (the engine's capacity on these cores).",
        f"Batching is judged on two request shapes from the same two Serve runs (maxBatchSize "
        f"{batching.max_batch_size} vs 1). A recommend request already carries {candidates} pairs, which the "
        f"engine runs in chunks of {engine.max_batch_size}, so merging requests cannot fill a chunk further; "
        "batching pays where requests are small, which the 1-pair OIP rows measure.",
        "kserve rows send the pairs the router would rank (retrieval done by the client, untimed) to a "
        "kserve.Model whose synchronous predict calls the same engine; kserve's ModelServer does no dynamic "
        "batching.",
        "The baseline scores every unrated movie with torch eager fp32 (same max length), one request at a time.",
    ]
    command = ".venv/bin/python bench/serving.py" + (" --quick" if args.quick else "")
    report = render_report(
        command=command, started=started, header=header, rows=rows, targets=targets, notes=notes
    )
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serving-{started:%Y-%m-%d}{'-quick' if args.quick else ''}.md"
    out.write_text(report)
    _say(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    child = os.environ.get(CHILD_ENV)
    if child:
        config = json.loads(child)
        {"kserve": kserve_child, "baseline": baseline_child}[config.pop("kind")](config)
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name, value in {**OFFLINE_ENV, **LOCAL_RAY_ENV}.items():
        os.environ.setdefault(name, value)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run of every path (a few minutes)")
    parser.add_argument(
        "--state", default=None, help="state directory (default $RECSERVE_HOME or ./.recserve)"
    )
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="the RecommenderModel to serve")
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        _say("interrupted; everything started was stopped")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
