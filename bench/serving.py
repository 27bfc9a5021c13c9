"""Serving paths side by side: Ray Serve vs the engine in-process vs a plain server vs kserve.

    .venv/bin/python bench/serving.py [--quick] [--explain-only] [--state DIR] [--manifest FILE]

One run on this machine, one engine (the example manifest's ORT INT8 engine, fetched from
or built into the engine cache exactly as ``recserve up`` does), one request mix: recommend
k=10 for a seeded list of random MovieLens users, retrieval handing the manifest's
``retrieval.candidates`` to the ranker. Measured, in this order:

1. the engine in-process, sequentially: ``plan_recommendation`` + ``engine.score`` (the
   engine's capacity on these cores; measured before and after everything else), and the same
   with ``"explain": true`` (the occlusion call added), alternating request by request with
   plain requests;
2. the same engine on the whole catalog (every movie the user has not rated);
3. the Ray Serve HTTP path: ``recserve up`` of a copy of the manifest on its own port: recommend
   at concurrency 1 without and then with ``"explain": true`` (the explain target: p50 at most
   2× the plain one), at 8 and 32, plus 1-pair OIP infer at 32; then again with
   ``batching.maxBatchSize: 1`` (batching off) at concurrency 32;
4. kserve's ModelServer hosting the same engine, OIP v2 infer of the same pairs;
5. a plain baseline: the fine-tuned checkpoint in torch eager fp32 behind FastAPI/uvicorn,
   scoring every catalog movie the user has not rated (no retrieval), a bounded number of
   requests.

The machine is shared and noisy: only the ratios of this one run mean anything, and the
load generator shares the 2 cores with every HTTP server it measures. Every process the
bench starts is in its own process group and is stopped by pid (``recserve down NAME`` for
``recserve up``) however the run ends; all servers bind 127.0.0.1.

This file is the command line; the parts are in ``bench/serving_bench``: ``run`` (the order
of the phases and the report's context), ``phases`` (one per server variant), ``measure``
(rows from HTTP levels through ``recserve_operator.loadgen`` and from in-process blocks),
``servers`` (the variants compared), ``processes`` (starting, waiting for and stopping them)
and ``report`` (table, ratios, targets).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Run as a script, only bench/ is on the path; the parts are imported from the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving_bench.processes import run_interruptibly
from bench.serving_bench.run import DEFAULT_MANIFEST, run
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
    parser.add_argument("--quick", action="store_true", help="short smoke run of every path (a few minutes)")
    parser.add_argument(
        "--explain-only",
        action="store_true",
        help="only recommend without and with explain (k=10), in-process and on one Serve run",
    )
    parser.add_argument(
        "--state", default=None, help="state directory (default $RECSERVE_HOME or ./.recserve)"
    )
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="the RecommenderModel to serve")
    args = parser.parse_args(argv)
    return run_interruptibly(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
