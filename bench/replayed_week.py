"""The continuous-training loop, replayed on MovieLens: stale model → feedback → retrain → canary.

1. Train a ranker on the ratings up to a cut T0 (the model's data holds nothing later).
2. ``recserve up`` serves it; its manifest names ``models:/NAME@champion`` as stable and
   ``models:/NAME@candidate`` as the canary (not set yet: no canary).
3. The ratings between T0 and T1 arrive as users would send them: ``POST /v1/feedback``.
4. ``recserve retrain`` fine-tunes the stable version on them (plus replay), compares it with the
   stale one on the newest held-out slice, registers version 2 and moves ``@candidate``.
5. The running operator sees the alias move, canaries version 2 under steady traffic, promotes
   it and moves ``@champion``. Every request of the traffic is counted; none may fail.

``python bench/replayed_week.py`` writes ``bench/results/replayed-week-DATE.md``; the long test
``tests/integration/test_replayed_week.py`` runs the same ``run``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/integration"))

from up_process import Up  # noqa: E402

from recserve_operator.embedded.processes import free_port  # noqa: E402
from recserve_operator.loadgen import BackgroundTraffic  # noqa: E402

RECSERVE = [sys.executable, "-m", "recserve_operator.cli"]
RATINGS = REPO / "data/movielens-small/ratings.csv"
EXAMPLE = REPO / "manifests/examples/movielens-ranker.yaml"
NAME = "replayed-week"
REGISTERED = "replayed-week-ranker"
T0 = "2018-02-20"
T1 = "2018-09-25"
"""MovieLens small thins out at its end (a week holds ~200 ratings of 8 users): the "week" replayed
is the last seven months, 5,125 ratings of 45 users, so the newest slice has users to judge on."""
FEEDBACK_BATCH = 500


@dataclass
class ReplayedWeek:
    t0: str
    t1: str
    replayed_events: int
    replayed_users: int
    retrain: dict[str, Any]
    canary_steps: list[str]
    requests_during_rollout: int
    failed_requests: int
    champion_moved_to: str | None
    seconds: dict[str, float]


def _unix(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


def _manifest(work: Path, retrain_steps: int) -> dict[str, Any]:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["metadata"] = {"name": NAME}
    body = spec["spec"]
    body["checkpoint"] = {"uri": f"models:/{REGISTERED}@champion"}
    body["data"]["interactions"]["uri"] = (work / "ratings-until-t0.csv").as_uri()
    # One INT8 engine per version (no search): the loop is about versions, not recipes.
    body["optimization"] = {
        "backend": "onnxruntime",
        "precision": "int8",
        "maxBatchSize": 64,
        "maxSequenceLength": 128,
        "qualityGate": {"metric": "ndcg@10", "maxDrop": 0.05},
    }
    body["serving"]["retrieval"] = {"candidates": 20, "defaultK": 10, "maxK": 20}
    body["rollout"] = {
        "canary": {
            "checkpoint": {"uri": f"models:/{REGISTERED}@candidate"},
            "steps": [{"weight": 20, "pause": "20s"}, {"weight": 50, "pause": "20s"}],
            "stickyBy": "user_id",
            "analysis": {"maxErrorRate": 0.01, "minRequests": 5},
        }
    }
    body["training"] = {"budget": {"steps": retrain_steps}, "minNewInteractions": 100}
    return spec


def _recserve(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [*RECSERVE, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=3600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"recserve {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def replay(endpoint: str, ratings: pd.DataFrame) -> int:
    """The window's ratings, oldest first, as clients would report them; returns events accepted."""
    accepted = 0
    with httpx.Client(timeout=120) as client:
        for start in range(0, len(ratings), FEEDBACK_BATCH):
            batch = ratings.iloc[start : start + FEEDBACK_BATCH]
            events = [
                {
                    "user_id": int(r.userId),
                    "item_id": int(r.movieId),
                    "event": "rating",
                    "value": float(r.rating),
                    "ts": float(r.timestamp),
                }
                for r in batch.itertuples()
            ]
            answer = client.post(f"{endpoint}/v1/feedback", json={"events": events})
            answer.raise_for_status()
            accepted += int(answer.json()["accepted"])
    return accepted


def run(work: Path, env: dict[str, str], *, train_steps: int = 120, retrain_steps: int = 100) -> ReplayedWeek:
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **env,
        "RECSERVE_HOME": str(work / "state"),
        "RECSERVE_RAY_TMP": env.get("RECSERVE_RAY_TMP", str(work / "ray")),
    }
    ratings = pd.read_csv(RATINGS)
    t0, t1 = _unix(T0), _unix(T1)
    ratings[ratings.timestamp <= t0].to_csv(work / "ratings-until-t0.csv", index=False)
    window = ratings[(ratings.timestamp > t0) & (ratings.timestamp <= t1)].sort_values("timestamp")
    manifest = work / "model.yaml"
    manifest.write_text(yaml.safe_dump(_manifest(work, retrain_steps), sort_keys=False))
    seconds: dict[str, float] = {}

    started = time.monotonic()
    _recserve(
        env,
        "train",
        "--name",
        REGISTERED,
        "--data",
        str(manifest),
        "--layers",
        "2",
        "--steps",
        str(train_steps),
        "--eval-users",
        "30",
        "--if-missing",
        "--until",
        T0,
    )
    seconds["train_to_t0"] = time.monotonic() - started

    port = free_port()
    up = Up(manifest, env, port)
    traffic: BackgroundTraffic | None = None
    try:
        started = time.monotonic()
        up.wait_ready()
        seconds["up"] = time.monotonic() - started
        started = time.monotonic()
        accepted = replay(up.endpoint, window)
        seconds["replay"] = time.monotonic() - started

        started = time.monotonic()
        report = work / "retrain.json"
        _recserve(env, "retrain", NAME, "-f", str(manifest), "--report", str(report))
        retrain = json.loads(report.read_text())
        seconds["retrain"] = time.monotonic() - started

        traffic = BackgroundTraffic(up.endpoint, concurrency=2)
        started = time.monotonic()
        champion = None
        if retrain["verdict"] == "promoted-to-candidate":
            up.wait_printed(r"ChampionMoved", 1800)
            champion = retrain["new_version"]
        seconds["rollout"] = time.monotonic() - started
        rounds = traffic.finish()
        traffic = None
        steps = [line for line in up.lines if "Canary" in line or "ChampionMoved" in line]
        return ReplayedWeek(
            t0=T0,
            t1=T1,
            replayed_events=accepted,
            replayed_users=int(window.userId.nunique()),
            retrain=retrain,
            canary_steps=steps,
            requests_during_rollout=sum(r.requests for r in rounds),
            failed_requests=sum(r.errors for r in rounds),
            champion_moved_to=champion,
            seconds=seconds,
        )
    finally:
        if traffic is not None:
            traffic.finish()
        up.down()


def markdown(result: ReplayedWeek) -> str:
    retrain = result.retrain
    gate = retrain["gate_metric"]
    parent, new = retrain["parent_metrics"], retrain["new_metrics"]
    rows = "\n".join(
        f"| {metric} | {parent.get(metric, float('nan')):.3f} | {new.get(metric, float('nan')):.3f} |"
        for metric in ("ndcg@10", "hitrate@10", "auc")
    )
    counts = ", ".join(f"{k} {v}" for k, v in retrain.get("counts", {}).items())
    return f"""# Replayed week: {result.t0} → {result.t1} (MovieLens ml-latest-small)

Trained on ratings up to {result.t0}; {result.replayed_events} ratings of {result.replayed_users} users
after it replayed through `POST /v1/feedback`; `recserve retrain` fine-tuned version
{retrain["parent_version"]} into version {retrain["new_version"]} (verdict: {retrain["verdict"]}); the
running operator canaried it and moved @champion to {result.champion_moved_to}.

Newest held-out slice (gate: {gate}, {counts}):

| metric | stale (v{retrain["parent_version"]}) | retrained (v{retrain["new_version"]}) |
| --- | ---: | ---: |
{rows}

Requests during the rollout: {result.requests_during_rollout}, failed: {result.failed_requests}.

Timings (s): {", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items())}.

Operator output:

```
{chr(10).join(result.canary_steps)}
```
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/recserve-replayed-week"))
    parser.add_argument("--train-steps", type=int, default=120)
    parser.add_argument("--retrain-steps", type=int, default=100)
    parser.add_argument(
        "--out", type=Path, default=REPO / f"bench/results/replayed-week-{datetime.now(UTC):%Y-%m-%d}.md"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    result = run(args.work, env, train_steps=args.train_steps, retrain_steps=args.retrain_steps)
    args.out.write_text(markdown(result))
    (args.work / "result.json").write_text(json.dumps(asdict(result), indent=2))
    print(markdown(result))
    return 0 if result.failed_requests == 0 and result.champion_moved_to else 1


if __name__ == "__main__":
    raise SystemExit(main())
