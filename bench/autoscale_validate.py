"""The autoscaling simulator against the real thing: `recserve up` with two settings, one trace.

    .venv/bin/python bench/autoscale_validate.py [--quick] [--minutes 10] [--trace FILE] [--state DIR] [--manifest FILE]

One `recserve up` of a copy of the manifest (its registered checkpoint and cached engine, as
`recserve up` would use them; nothing is trained here) on a local Ray cluster bound to loopback:

1. one ranker replica is profiled (`recserve autoscale profile`'s measurement) and its start-up
   timed;
2. for two autoscaling settings in turn, a bounded trace (default: a 10-minute flash spike from
   0.3× to 1.5× one replica's capacity) is replayed open-loop while the Serve REST API is polled
   for the target and the replicas;
3. the simulator replays the same arrivals with the measured profile and start-up, and the
   replica-seconds, p99 and first upscale are compared with the issue's tolerances (±20%, ±30%,
   one decision interval).

Results go to bench/results/autoscale-validate-DATE.{md,json} and one overlay PNG per setting.
The full run takes about 35 minutes on 2 cores (profile ~5 min, two 10-minute replays, settling
and start-up in between); `--quick` (3-minute trace, short profile levels) about 15 and only
checks that the harness works. The machine is shared: run it when nothing else is busy, since a
replica's capacity is measured once and assumed for both replays.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, only bench/ is on the path; the parts are imported from the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.autoscale_bench.run import DEFAULT_MANIFEST, RESULTS, run
from bench.serving_bench.processes import run_interruptibly


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run of the harness")
    parser.add_argument("--minutes", type=float, help="length of the generated trace (default 10, quick 3)")
    parser.add_argument("--trace", help="replay this trace CSV instead of the generated flash spike")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrivals and request mix")
    parser.add_argument(
        "--state", default=None, help="state directory (default $RECSERVE_HOME or ./.recserve)"
    )
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="the RecommenderModel to serve")
    parser.add_argument("--out", default=str(RESULTS), help="where the report and plots go")
    args = parser.parse_args(argv)
    return run_interruptibly(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
