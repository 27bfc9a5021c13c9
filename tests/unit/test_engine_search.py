"""optimization.search without building anything: candidates, the choice, the front, the key,
and the runner's record with the build and the timing scripted."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from recserve_serving.engine import search_build
from recserve_serving.engine.search import SearchReport, Trial, choose, pareto_front, search_key, summary
from recserve_serving.engine.throughput import Workload, measure
from recserve_serving.errors import QualityGateFailed, RecipeError
from recserve_serving.recipe import OptimizationRecipe

pytestmark = pytest.mark.unit


def recipe(**fields: object) -> OptimizationRecipe:
    return OptimizationRecipe.model_validate(fields)


def test_candidates_are_the_base_with_each_override_put_in():
    base = recipe(
        maxBatchSize=32,
        qualityGate={"maxDrop": 0.02},
        search={"candidates": [{"precision": "fp32"}, {"precision": "int8", "distill": {"layers": 3}}]},
    )
    fp32, student = base.candidates()
    assert (fp32.precision, fp32.distill, fp32.max_batch_size) == ("fp32", None, 32)
    assert (student.precision, student.distill and student.distill.layers) == ("int8", 3)
    assert student.quality_gate.max_drop == 0.02, "every candidate is judged by the base's gate"
    assert fp32.search is None and student.search is None


def test_a_recipe_without_search_is_its_own_only_candidate_and_keeps_its_engine_key_fields():
    plain = recipe(precision="fp32")
    assert plain.candidates() == [plain]
    assert "search" not in plain.to_dict(), "existing engine keys must not change"


def test_preset_candidates_do_not_inherit_the_base_prune_or_distill():
    base = recipe(prune={"heads": 0.5}, search={"preset": "cpu"})
    names = [summary(c) for c in base.candidates()]
    assert names == [
        "fp32",
        "int8",
        "int8 distill=3",
        "int8 prune=0.25/0.25",
        "int8 distill=3 prune=0.25/0.25",
    ]


def test_a_misspelt_override_field_is_named():
    with pytest.raises(ValidationError) as caught:
        recipe(search={"candidates": [{"precison": "int8"}]})
    assert "search.candidates.0.precison" in str(caught.value)


def test_an_invalid_or_repeated_candidate_is_named_by_its_index():
    with pytest.raises(ValidationError) as caught:
        recipe(
            search={
                "candidates": [
                    {"precision": "int8"},
                    {"precision": "fp16", "backend": "onnxruntime"},
                    {"precision": "int8"},
                ]
            }
        )
    message = str(caught.value)
    assert "search.candidates.1: this candidate is not a valid recipe: precision fp16 needs a GPU" in message
    assert "search.candidates.2: is the same recipe as candidate 0" in message


@pytest.mark.parametrize("search", [{}, {"preset": "cpu", "candidates": [{"precision": "int8"}]}])
def test_search_takes_exactly_one_of_preset_and_candidates(search):
    with pytest.raises(ValidationError, match="exactly one of preset"):
        recipe(search=search)


def trials() -> list[Trial]:
    return [
        Trial("fp32", passed=True, quality=0.50, drop=0.0, pairs_per_s=400.0),
        Trial("int8", passed=True, quality=0.495, drop=0.005, pairs_per_s=900.0),
        Trial(
            "int8 distill=3",
            passed=False,
            reason="ndcg@10 dropped 0.03 > maxDrop 0.01",
            quality=0.47,
            drop=0.03,
            pairs_per_s=1500.0,
        ),
        Trial("int8 prune=0.25/0.25", passed=True, quality=0.48, drop=0.02, pairs_per_s=800.0),
        Trial("int8 distill=9", passed=False, reason="not built: distill.layers 9 is not fewer than 6"),
    ]


def test_the_fastest_candidate_within_the_gate_is_chosen_not_a_faster_one_that_failed():
    assert choose(trials()) == 1


def test_when_none_passed_the_error_lists_every_candidate_and_why():
    failed = [Trial(t.recipe, passed=False, reason=t.reason or "p99 too slow") for t in trials()]
    with pytest.raises(QualityGateFailed) as caught:
        choose(failed)
    message = str(caught.value)
    assert "none of the 5 search candidates passed" in message
    assert "2 int8 distill=3: ndcg@10 dropped 0.03" in message
    assert "4 int8 distill=9: not built: distill.layers 9" in message


def test_the_front_holds_the_undominated_measured_candidates_passed_or_not():
    assert pareto_front(trials()) == [0, 1, 2], "prune is beaten by int8 on both; distill=9 has no numbers"


def test_equal_candidates_are_both_on_the_front_and_the_first_listed_wins():
    same = [
        Trial("a", passed=True, quality=0.5, pairs_per_s=10.0),
        Trial("b", passed=True, quality=0.5, pairs_per_s=10.0),
    ]
    assert pareto_front(same) == [0, 1]
    assert choose(same) == 0


def test_the_search_key_is_stable_and_changes_with_each_input():
    args = (
        "sha256:ab",
        [{"precision": "fp32"}, {"precision": "int8"}],
        "cpu-x86_64-avx2",
        "pairs=200,threads=2,repeats=5",
    )
    key = search_key(*args)
    assert key == search_key(*args) and len(key) == 64
    assert key == search_key(args[0], [dict(reversed(c.items())) for c in args[1]], args[2], args[3])
    changed = [
        ("sha256:cd", *args[1:]),
        (args[0], list(reversed(args[1])), *args[2:]),
        (*args[:2], "cpu-x86_64-avx512f", args[3]),
        (*args[:3], "pairs=100,threads=2,repeats=5"),
    ]
    assert all(search_key(*other) != key for other in changed)


def test_the_report_round_trips_and_its_status_is_compact(tmp_path):
    report = SearchReport.decide("k", "sha256:ab", "ndcg@10", "pairs=200", trials())
    report.write(tmp_path / "search.json")
    again = SearchReport.read(tmp_path / "search.json")
    assert again == report and again.chosen == 1
    rows = again.status()
    assert rows[1] == {
        "recipe": "int8",
        "passed": True,
        "drop": 0.005,
        "pairsPerS": 900,
        "front": True,
        "chosen": True,
    }
    assert rows[4]["pairsPerS"] is None and not rows[4]["front"]
    assert "chosen" in report.table() and "not built" in report.table()


def test_an_unreadable_record_is_measured_again(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    assert SearchReport.read(tmp_path / "bad.json") is None
    assert SearchReport.read(tmp_path / "missing.json") is None


def test_measure_times_after_a_warm_up_and_counts_pairs_per_second():
    calls: list[int] = []
    ticks = iter([0.0, 0.1, 1.0, 1.2, 2.0, 2.1])
    speed = measure(
        lambda u, i: calls.append(len(u)) or np.zeros(len(u)), ["u"] * 20, ["i"] * 20, 3, lambda: next(ticks)
    )
    assert calls == [20] * 4, "one warm-up and three timed calls, all with the whole request"
    assert speed.best_ms == pytest.approx(100.0) and speed.median_ms == pytest.approx(100.0)
    assert speed.pairs_per_s == pytest.approx(200.0)


def scripted_search(monkeypatch, outcomes: dict[str, object]) -> list[str]:
    """build_engine, load_engine and the timing replaced: ``outcomes`` maps a candidate's summary
    to its pairs/s, or to the error its build raises."""
    built: list[str] = []

    def build_engine(resolved, candidate, cache_root, **_):
        name = summary(candidate)
        built.append(name)
        outcome = outcomes[name]
        if isinstance(outcome, Exception):
            raise outcome
        report = SimpleNamespace(engine={"ndcg@10": 0.5}, drop=0.001)
        manifest = SimpleNamespace(key=f"key-{name}", metrics={})
        return search_build.BuiltEngine(Path(cache_root) / name, manifest, False, report)  # type: ignore[arg-type]

    monkeypatch.setattr(search_build, "build_engine", build_engine)
    monkeypatch.setattr(search_build, "load_engine", lambda path, threads: SimpleNamespace(score=path.name))
    monkeypatch.setattr(search_build, "recommend_texts", lambda data, pairs: (["u"], ["i"]))
    monkeypatch.setattr(search_build, "_concrete", lambda c: c.to_dict())
    monkeypatch.setattr(search_build, "host_id", lambda: "cpu-test")

    def measure(score, users, items, repeats):
        return SimpleNamespace(pairs_per_s=outcomes[score], median_ms=1.0, best_ms=1.0)

    monkeypatch.setattr(search_build, "measure", measure)
    return built


def test_build_best_serves_the_fastest_passed_candidate_and_a_rerun_measures_nothing(monkeypatch, tmp_path):
    outcomes: dict[str, object] = {
        "fp32": 300.0,
        "int8": 700.0,
        "int8 distill=3": RecipeError("distill.layers 3 is not fewer than the teacher's 2 layers"),
    }
    built = scripted_search(monkeypatch, outcomes)
    resolved = SimpleNamespace(digest="sha256:ab", uri="models:/m/1")
    spec = recipe(
        search={"candidates": [{"precision": "fp32"}, {"precision": "int8"}, {"distill": {"layers": 3}}]}
    )
    first = search_build.build_best(resolved, spec, tmp_path, workload=Workload(), data=object())  # type: ignore[arg-type]
    assert first.path.name == "int8" and built == ["fp32", "int8", "int8 distill=3", "int8"]
    search = search_build.search_of(first)
    assert search is not None and "not built: distill.layers 3" in search.trials[2].reason
    built.clear()
    again = search_build.build_best(resolved, spec, tmp_path, workload=Workload(), data=object())  # type: ignore[arg-type]
    assert again.path.name == "int8" and built == ["int8"], "the recorded choice, no candidate re-measured"
    other = search_build.build_best(resolved, spec, tmp_path, workload=Workload(threads=4), data=object())  # type: ignore[arg-type]
    assert other.path.name == "int8" and built[1:] == ["fp32", "int8", "int8 distill=3", "int8"], (
        "another benchmark shape is another search"
    )


def test_build_best_fails_with_every_reason_when_no_candidate_passes(monkeypatch, tmp_path):
    outcomes: dict[str, object] = {
        "fp32": QualityGateFailed("p99 latency too high"),
        "int8": QualityGateFailed("ndcg@10 dropped 0.04 > maxDrop 0.01"),
    }
    scripted_search(monkeypatch, outcomes)
    resolved = SimpleNamespace(digest="sha256:ab", uri="models:/m/1")
    spec = recipe(search={"candidates": [{"precision": "fp32"}, {"precision": "int8"}]})
    with pytest.raises(QualityGateFailed) as caught:
        search_build.build_best(resolved, spec, tmp_path, data=object())  # type: ignore[arg-type]
    message = str(caught.value)
    assert "0 fp32: p99 latency too high" in message and "1 int8: ndcg@10 dropped 0.04" in message
    assert caught.value.report is not None and Path(caught.value.report).is_file()


def test_the_engine_a_searching_model_serves_is_the_one_its_recorded_search_chose(tmp_path):
    from recserve_serving.engine import cache
    from recserve_serving.engine.manifest import CheckpointRef, EngineManifest
    from recserve_serving.engine.search import chosen_engine_keys, record_path

    spec = recipe(search={"candidates": [{"precision": "fp32"}, {"precision": "int8"}]})
    for key, candidate in zip(("a" * 64, "b" * 64), spec.candidates(), strict=True):
        (tmp_path / key).mkdir()
        EngineManifest(
            key=key,
            checkpoint=CheckpointRef(uri="models:/m/1", digest="sha256:ab", name="m", version="1"),
            recipe=candidate,
            backend="onnxruntime",
            backend_version="onnxruntime-1",
            precision=candidate.precision,
            hardware=cache.hardware("onnxruntime"),
            max_sequence_length=128,
            model_file="model.onnx",
            files={},
        ).write(tmp_path / key)
    trials = [Trial("fp32", True, engine_key="a" * 64, quality=0.5, pairs_per_s=900.0)]
    trials.append(Trial("int8", True, engine_key="b" * 64, quality=0.5, pairs_per_s=100.0))
    SearchReport.decide("k", "sha256:ab", "ndcg@10", "w", trials).write(record_path(tmp_path, "k"))
    assert chosen_engine_keys(tmp_path) == {"a" * 64}
    assert cache.newest_cached(tmp_path, "m", "1", spec) == tmp_path / ("a" * 64)
    assert cache.newest_cached(tmp_path, "m", "1", spec.candidates()[1]) == tmp_path / ("b" * 64)
