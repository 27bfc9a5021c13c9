"""A real search over two ONNX Runtime candidates (fp32, int8) of a tiny two-layer ranker: both
are built and gated, the passing ones timed, the fastest served, and a second search reads the
record instead of measuring."""

from __future__ import annotations

import pytest

from recserve_serving.engine import search_build
from recserve_serving.engine.build import build_engine
from recserve_serving.engine.throughput import Workload
from recserve_serving.errors import RecipeError
from recserve_serving.evaluate import EvalSettings
from recserve_serving.example_data import load_example
from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.registry import Registry
from recserve_serving.train import train_ranker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]

EVAL = EvalSettings(users=20, candidates=20, latency_repeats=2)


def test_a_real_search_serves_the_fastest_passing_engine_and_is_not_repeated(tmp_path, monkeypatch):
    data = load_example()
    state = tmp_path / "state"
    metrics = train_ranker(
        data, state / "ranker", steps=20, batch_size=16, max_len=32, eval_users=20, layers=2
    )
    resolved = Registry(state).register("ranker", state / "ranker", metrics)
    recipe = OptimizationRecipe.model_validate(
        {
            "backend": "onnxruntime",
            "maxBatchSize": 16,
            "maxSequenceLength": 32,
            "qualityGate": {"maxDrop": 1.0},
            "search": {"candidates": [{"precision": "fp32"}, {"precision": "int8"}]},
        }
    )
    with pytest.raises(RecipeError, match="build_best"):
        build_engine(resolved, recipe, tmp_path / "engines", data=data, evaluation=EVAL)
    workload = Workload(pairs=40, threads=1, repeats=2)
    run = {"data": data, "evaluation": EVAL, "workload": workload}
    built = search_build.build_best(resolved, recipe, tmp_path / "engines", **run)  # type: ignore[arg-type]
    search = search_build.search_of(built)
    assert search is not None and [t.recipe for t in search.trials] == [
        "onnxruntime-fp32 seq=32",
        "onnxruntime-int8 seq=32",
    ]
    assert all(t.passed and t.pairs_per_s and t.pairs_per_s > 0 for t in search.trials)
    assert search.chosen is not None and search.chosen in search.front
    winner = search.trials[search.chosen]
    assert built.manifest.key == winner.engine_key and built.manifest.recipe.search is None
    assert winner.pairs_per_s == max(t.pairs_per_s or 0 for t in search.trials)
    assert search_build.record_path(tmp_path / "engines", search.key).is_file()

    def no_measuring(*args: object, **kwargs: object) -> None:
        raise AssertionError("a recorded search must not be measured again")

    monkeypatch.setattr(search_build, "measure", no_measuring)
    again = search_build.build_best(resolved, recipe, tmp_path / "engines", **run)  # type: ignore[arg-type]
    assert again.cache_hit and again.path == built.path and search_build.search_of(again) == search
