"""Serving benchmark: the optimized path against today's; Ray Serve, in-process, kserve, FastAPI.

    PYTHONPATH=operator:serving:. .venv/bin/python bench/serving.py \
        [--quick] [--explain-only] [--state DIR] [--manifest FILE] [--today FILE]

Two paths are compared in one run (issue 13's "5× recommend throughput per core"):

- the **optimized** path: ``--manifest`` (default ``manifests/examples/movielens-ranker.yaml``):
  the prefix-shaped seed checkpoint ``models:/movielens-ranker/1`` (the user encoded once per
  request, each candidate reads its keys/values) under whatever engine the manifest resolves to
  (``build_best`` where the checkout has the recipe search, else ``build_engine``);
- **today's** path: ``--today`` (default ``bench/manifests/today.yaml``): the cross-shaped
  checkpoint ``models:/movielens-ranker-cross/1`` (full attention over each pair, max length 64,
  6 layers) under the old recipe, ORT dynamic INT8 in chunks of 64 pairs, served exactly as before.

Set-up (not timed): both checkpoints are made sure of in the state, ``recserve train --if-missing``
training the ones it knows when missing (``movielens-ranker`` with the defaults and
``movielens-ranker-cross --shape cross``: about 5 minutes each on a quiet 2-core machine, once);
then both engines are fetched from the engine cache or built exactly as ``recserve up`` does. One
request mix: recommend k=10 for a seeded list of random MovieLens users, retrieval handing the
manifest's ``retrieval.candidates`` (200) to the ranker. Measured, in this order:

1. both engines in-process, sequentially (``plan_recommendation`` + ``engine.score``), in blocks
   alternating optimized / today, so that a drift of the machine's load weighs on both;
   then the optimized engine with ``"explain": true`` alternating request by request with plain
   requests, and on the whole catalog (every movie the user has not rated);
2. the optimized path on Ray Serve: ``recserve up`` of a copy of the manifest on its own port:
   recommend at concurrency 1 without and with ``"explain": true`` (alternating blocks), 1-pair
   OIP infer at 32, then the recommend sweep at concurrency 1, 2, 4, 8, 16, 32;
3. today's path on Ray Serve, its own ``recserve up``: the same recommend sweep;
4. the optimized path with ``batching.maxBatchSize: 1`` (batching off): 1-pair OIP infer and
   recommend at 32 (the batching gain per request size);
5. kserve's ModelServer hosting the optimized engine, OIP v2 infer of the same pairs;
6. a plain baseline: the optimized manifest's checkpoint in torch eager fp32 behind
   FastAPI/uvicorn (``checkpoint.encode``, so either shape), scoring every catalog movie the user
   has not rated (no retrieval), a bounded number of requests;
7. both engines in-process again, alternating (the in-process rows merge both rounds).

The report (``bench/results/serving-DATE.md``) has the two paths side by side per level (QPS,
p50, p90, p99), the ratios (optimized / today at saturation, the optimized p50 at c=1, Serve /
in-process, batching on / off for 1-pair and full recommend requests), the targets (throughput
at saturation ≥ 5× today's; p50 at c=1 ≤ 200 ms; Serve ≥ 0.9× in-process; batching ≥ 2× on
1-pair requests; plus the explain and two-stage targets) with the missed ones and their figures,
and two plots written next to it for the README: ``serving-throughput.png`` (QPS against
concurrency, both paths on Serve) and ``serving-latency-cdf.png`` (latency CDF at c=1).

``--quick`` is a smoke run of every path with small requests (20 candidates, levels 1, 8 and 32,
a few requests each) in its own state, ``STATE/bench-quick``, whose two checkpoints are trained
with ``--steps 5 --eval-users 10``, so that its throwaway models are never found by a full run.
Under a load average of 6 on 2 cores the first quick run took about 18 minutes to train both
(mostly the retrieval index and the evaluations) and 4 to 5 minutes to build each engine, once
(7.5 minutes for the example's search of int8 and distilled int8); a quick run with everything
cached took 6 to 8.5 minutes. Its manifests are copies with the quality gate
opened (``maxDrop: 1``), as near-random checkpoints could fail a real one on INT8 noise alone.
Its figures check that every path works; they are not the benchmark.

The machine is shared and noisy: only the ratios of this one run mean anything, and the
load generator shares the 2 cores with every HTTP server it measures. Every process the
bench starts is in its own process group and is stopped by pid (``recserve down NAME`` for
``recserve up``) however the run ends; all servers bind 127.0.0.1.

This file is the command line; the parts are in ``bench/serving_bench``: ``run`` (the order
of the phases and the report's context), ``sides`` (the two paths: checkpoints and engines),
``phases`` (one per server variant), ``measure`` (rows from HTTP levels through
``recserve_operator.loadgen`` and from in-process blocks), ``servers`` (the variants compared),
``processes`` (starting, waiting for and stopping them), ``report`` (tables, ratios, targets)
and ``plots`` (the two figures).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Run as a script, only bench/ is on the path; the parts are imported from the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving_bench.processes import run_interruptibly
from bench.serving_bench.run import DEFAULT_MANIFEST, TODAY_MANIFEST, run
from bench.serving_bench.servers import CHILD_ENV, run_child
from recserve_operator.embedded.local_ray import LOCAL_RAY_ENV
from recserve_serving.offline import OFFLINE_ENV


def main(argv: list[str] | None = None) -> int:
    child = os.environ.get(CHILD_ENV)
    if child:
        run_child(child)
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name, value in {**OFFLINE_ENV, **LOCAL_RAY_ENV}.items():
        os.environ.setdefault(name, value)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short smoke run of every path (a few minutes; its own state, STATE/bench-quick)",
    )
    parser.add_argument(
        "--explain-only",
        action="store_true",
        help="only recommend without and with explain (k=10), in-process and on one Serve run",
    )
    parser.add_argument(
        "--state", default=None, help="state directory (default $RECSERVE_HOME or ./.recserve)"
    )
    parser.add_argument(
        "--manifest", default=str(DEFAULT_MANIFEST), help="the optimized path: the RecommenderModel to serve"
    )
    parser.add_argument(
        "--today",
        metavar="MANIFEST",
        default=str(TODAY_MANIFEST),
        help="today's path, measured side by side with the optimized one (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    return run_interruptibly(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
