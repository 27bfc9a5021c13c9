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
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from recserve_operator.embedded.local_ray import LOCAL_RAY_ENV
from recserve_operator.embedded.processes import free_port, pid_alive, spawn, stop_tree
from recserve_serving.offline import OFFLINE_ENV
from recserve_serving.waiting import wait_for

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


def _test_state_ready(recipe: dict[str, object]) -> bool:
    """Whether both rankers are registered and the bad one's engine for ``recipe`` is cached, read
    in this process: what the three commands of ``test_state`` would find. Each of them is a
    process that imports torch and MLflow before it finds it has nothing to do (25 to 40 s apiece
    on a loaded 2-core machine), and every pytest session (the integration tier, then the e2e
    tier) asked them again."""
    if not (TEST_STATE / "mlflow.db").is_file():
        return False
    from recserve_serving.engine.cache import newest_cached
    from recserve_serving.recipe import OptimizationRecipe
    from recserve_serving.registry import Registry

    registry = Registry(TEST_STATE)
    if not (registry.has_model(STABLE_MODEL) and registry.has_model(BAD_MODEL)):
        return False
    built = newest_cached(TEST_STATE / "engines", BAD_MODEL, "1", OptimizationRecipe.model_validate(recipe))
    return built is not None


@pytest.fixture(scope="session")
def test_state() -> Path:
    """``.recserve-test`` with both rankers registered and the bad one's engine built (the example's
    recipe), so a canary test is about the rollback, not the build."""
    TEST_STATE.mkdir(exist_ok=True)
    optimization = yaml.safe_load(EXAMPLE.read_text())["spec"]["optimization"]
    if _test_state_ready(optimization):
        return TEST_STATE
    small = ["--layers", RANKER_LAYERS, "--if-missing"]
    recserve("train", "--name", STABLE_MODEL, "--steps", "120", "--eval-users", "30", *small)
    recserve(
        "train", "--name", BAD_MODEL, "--steps", "1", "--eval-users", "10", "--negatives", "sampled", *small
    )
    recserve("build", "--checkpoint", f"models:/{BAD_MODEL}/1", "--recipe-json", json.dumps(optimization))
    return TEST_STATE


def example_int8_recipe() -> dict[str, object]:
    """The example's recipe as its search's first candidate (``{precision: int8}``) builds it:
    the engine ``recserve up`` of the example serves (tests/integration/test_up_down.py) and the
    e2e rollouts serve. One cache key for all of them, so a cold run builds that INT8 engine once."""
    raw = dict(yaml.safe_load(EXAMPLE.read_text())["spec"]["optimization"])
    raw.pop("search", None)
    return {**raw, "precision": "int8"}


@pytest.fixture(scope="session")
def stable_int8_engine(test_state: Path) -> str:
    """The INT8 ONNX Runtime engine of ``movielens-ranker`` (``example_int8_recipe``), built once
    per machine into the test registry's cache; the tests that serve an INT8 stable share it."""
    from recserve_serving.engine.build import build_engine
    from recserve_serving.recipe import OptimizationRecipe
    from recserve_serving.registry import Registry

    resolved = Registry(test_state).resolve(f"models:/{STABLE_MODEL}/1")
    recipe = OptimizationRecipe.model_validate(example_int8_recipe())
    return str(build_engine(resolved, recipe, test_state / "engines").path)


@pytest.fixture(scope="session")
def bad_model(test_state: Path) -> str:
    """The broken canary: it serves without errors, but its scores are noise."""
    return f"models:/{BAD_MODEL}/1"


@pytest.fixture(scope="session")
def redis_binary() -> str:
    """Debian's redis-server, installed by scripts/redis-server.sh when the machine has none."""
    done = subprocess.run(
        ["bash", "scripts/redis-server.sh"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/redis-server.sh failed:\n{done.stderr[-3000:]}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def redis_server(redis_binary: str, tmp_path: Path) -> Iterator[str]:
    """A redis-server on 127.0.0.1 for this test only; yields Feast's connection string."""
    port = free_port()
    log = tmp_path / "redis.log"
    process = spawn(
        [
            redis_binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        log,
        {"PATH": "/usr/bin:/bin"},
    )
    # No retries: redis-py's default backoff would turn each "not up yet" into a second's wait.
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
    try:
        wait_for(
            lambda: process.poll() is not None or client.ping(),
            30,
            interval=0.05,
            message="redis-server ready",
        )
        assert process.poll() is None, log.read_text()[-3000:]
        yield f"127.0.0.1:{port}"
    finally:
        client.close()
        stop_tree([process.pid], pgids=[process.pid])
        assert not pid_alive(process.pid)


TIERS = ("unit", "integration", "e2e")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """scripts/test.sh runs the suite tier by tier, so a test in no tier would never run."""
    untiered = [item.nodeid for item in items if not any(item.get_closest_marker(t) for t in TIERS)]
    if untiered:
        raise pytest.UsageError(f"tests in no tier ({', '.join(TIERS)}): {', '.join(untiered[:10])}")
