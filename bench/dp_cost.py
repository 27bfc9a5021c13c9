"""What differential privacy costs a retrain: the same retrain with and without DP-SGD, side by side.

Run after ``bench/replayed_week.py`` on its work directory: both retrains warm-start from the
stale version (v1, trained to T0), read the same replayed feedback log and are scored with the
stale version on the same newest held-out slice. Neither moves an alias the replayed week's
model follows (each gets its own ``candidateAlias``). Prints a markdown table and writes it to
``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RECSERVE = [sys.executable, "-m", "recserve_operator.cli"]
STALE_ALIAS = "stale"


def _retrain(work: Path, env: dict[str, str], name: str, training: dict[str, Any]) -> dict[str, Any]:
    manifest = yaml.safe_load((work / "model.yaml").read_text())
    registered = manifest["spec"]["checkpoint"]["uri"].split("/")[1].split("@")[0]
    manifest["spec"]["checkpoint"]["uri"] = f"models:/{registered}@{STALE_ALIAS}"
    manifest["spec"]["training"] = {**manifest["spec"].get("training", {}), **training}
    path = work / f"model-{name}.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    report = work / f"retrain-{name}.json"
    feedback = work / "state/online" / manifest["metadata"]["name"] / "feedback"
    done = subprocess.run(
        [
            *RECSERVE,
            "retrain",
            manifest["metadata"]["name"],
            "-f",
            str(path),
            "--feedback-dir",
            str(feedback),
            "--report",
            str(report),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"retrain {name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(report.read_text()))


def _point_stale_at_v1(state: Path, registered: str) -> None:
    from recserve_serving.registry import Registry

    Registry(state).set_alias(registered, STALE_ALIAS, "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/recserve-replayed-week"))
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--out", type=Path, default=REPO / f"bench/results/dp-cost-{datetime.now(UTC):%Y-%m-%d}.md"
    )
    args = parser.parse_args()
    env = {**os.environ, "RECSERVE_HOME": str(args.work / "state")}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    manifest = yaml.safe_load((args.work / "model.yaml").read_text())
    registered = manifest["spec"]["checkpoint"]["uri"].split("/")[1].split("@")[0]
    _point_stale_at_v1(args.work / "state", registered)
    budget = {"budget": {"steps": args.steps}}
    plain = _retrain(args.work, env, "plain", {**budget, "candidateAlias": "plain-check"})
    private = _retrain(
        args.work, env, "dp", {**budget, "candidateAlias": "dp-check", "privacy": {"dpEpsilon": args.epsilon}}
    )
    rows = []
    for metric in ("ndcg@10", "hitrate@10", "auc"):
        rows.append(
            f"| {metric} | {plain['parent_metrics'][metric]:.3f} | {plain['new_metrics'][metric]:.3f} "
            f"| {private['new_metrics'][metric]:.3f} |"
        )
    epsilon = private.get("dp_epsilon")
    table = "\n".join(rows)
    text = f"""# DP-SGD cost on the replayed week ({args.steps} steps, target epsilon {args.epsilon})

Both retrains warm-start from the stale version 1 and are scored on the same newest held-out slice
({", ".join(f"{k} {v}" for k, v in plain.get("counts", {}).items())}).

| metric | stale (v1) | retrained | retrained, DP-SGD (epsilon {epsilon:.2f}, delta {private.get("dp_delta")}) |
| --- | ---: | ---: | ---: |
{table}

Verdicts: plain {plain["verdict"]} (v{plain["new_version"]}), DP {private["verdict"]} (v{private["new_version"]});
train seconds: plain {plain["train_seconds"]:.0f}, DP {private["train_seconds"]:.0f}.
"""
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
