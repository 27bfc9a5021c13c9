"""Fixtures shared by tests/ and e2e/: the registry of real, small rankers the serving tests run.

Mechanics (rollouts, routing, autoscaling, deletion) do not need the demo's six-layer ranker,
only a real one: ``movielens-ranker`` here is MiniLM's first two layers fine-tuned for 120 steps
on MovieLens (about a minute on two cores; it beats most-popular), and ``movielens-ranker-bad``
the same shape after one step, whose scores are nothing like it (the broken canary). Both live in
``.recserve-test/`` at the repository root with their engines, so a warm machine trains and
builds nothing. Training runs in subprocesses, so pytest itself never imports torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recserve_operator.embedded.local_ray import LOCAL_RAY_ENV
from recserve_serving.offline import OFFLINE_ENV

for _name, _value in {**OFFLINE_ENV, **LOCAL_RAY_ENV}.items():
    os.environ.setdefault(_name, _value)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

REPO = Path(__file__).resolve().parent
TEST_STATE = REPO / ".recserve-test"
EXAMPLE = REPO / "manifests/examples/movielens-ranker.yaml"
STABLE_MODEL = "movielens-ranker"
BAD_MODEL = "movielens-ranker-bad"
RANKER_LAYERS = "2"


def recserve(*args: str, state: Path = TEST_STATE) -> None:
    env = {**os.environ, "RECSERVE_HOME": str(state)}
    subprocess.run(
        [sys.executable, "-m", "recserve_operator.cli", *args], env=env, check=True, timeout=1800, cwd=REPO
    )


@pytest.fixture(scope="session")
def test_state() -> Path:
    """``.recserve-test`` with both rankers registered and the bad one's engine built (the example's
    recipe), so a canary test is about the rollback, not the build."""
    TEST_STATE.mkdir(exist_ok=True)
    small = ["--layers", RANKER_LAYERS, "--if-missing"]
    recserve("train", "--name", STABLE_MODEL, "--steps", "120", "--eval-users", "30", *small)
    recserve(
        "train", "--name", BAD_MODEL, "--steps", "1", "--eval-users", "10", "--negatives", "sampled", *small
    )
    recipe = json.dumps(yaml.safe_load(EXAMPLE.read_text())["spec"]["optimization"])
    recserve("build", "--checkpoint", f"models:/{BAD_MODEL}/1", "--recipe-json", recipe)
    return TEST_STATE


@pytest.fixture(scope="session")
def bad_model(test_state: Path) -> str:
    """The broken canary: it serves without errors, but its scores are noise."""
    return f"models:/{BAD_MODEL}/1"


TIERS = ("unit", "integration", "e2e")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """scripts/test.sh runs the suite tier by tier, so a test in no tier would never run."""
    untiered = [item.nodeid for item in items if not any(item.get_closest_marker(t) for t in TIERS)]
    if untiered:
        raise pytest.UsageError(f"tests in no tier ({', '.join(TIERS)}): {', '.join(untiered[:10])}")
