"""Every recipe builds, gates, caches and loads; every kind of bad input fails specifically.

One small but real ranker (a short MiniLM fine-tune) is shared by the module; evaluation
lists are small so each build gates in seconds. Bad-input tests assert the cache root
was left exactly as it was.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from recserve_serving.engine.build import build_engine
from recserve_serving.engine.runtime import load_engine
from recserve_serving.errors import CheckpointError, QualityGateFailed, RecipeError
from recserve_serving.evaluate import EvalSettings
from recserve_serving.example_data import load_example
from recserve_serving.model import load_checkpoint, score_pairs
from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.registry import Registry, ResolvedCheckpoint
from recserve_serving.train import train_ranker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVAL = EvalSettings(users=30, candidates=20, latency_repeats=2)
LENIENT = {"qualityGate": {"maxDrop": 1.0}, "maxBatchSize": 16}


@pytest.fixture(scope="module")
def data():
    return load_example()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Registry, ResolvedCheckpoint]:
    state = tmp_path_factory.mktemp("state")
    metrics = train_ranker(data, state / "ranker", steps=40, batch_size=16, max_len=32, eval_users=30)
    registry = Registry(state)
    return registry, registry.register("ranker", state / "ranker", metrics)


def recipe(**fields) -> OptimizationRecipe:
    return OptimizationRecipe.model_validate({**LENIENT, **fields})


def snapshot(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def build(trained, data, cache_root: Path, spec: OptimizationRecipe):
    return build_engine(trained[1], spec, cache_root, data=data, evaluation=EVAL)


def sample_pairs(data, n: int = 12) -> tuple[list[str], list[str]]:
    users = [data.user_text(u) for u in data.user_codes()[:n]]
    return users, [data.item_text(m) for m in data.popular_items(n)]


def test_the_tiny_ranker_learned_something(trained) -> None:
    registry, resolved = trained
    run = registry.client.get_run(registry.client.get_model_version("ranker", resolved.version).run_id)
    assert run.data.metrics["auc"] > 0.55


@pytest.mark.parametrize(
    ("fields", "corr"),
    [
        ({"backend": "torch", "precision": "fp32"}, 0.999),
        ({"backend": "torch", "precision": "int8"}, 0.9),
    ],
)
def test_backends_and_precisions_track_the_checkpoint(trained, data, tmp_path, fields, corr) -> None:
    built = build(trained, data, tmp_path, recipe(**fields))
    assert (built.path / "report.json").is_file()
    assert built.report is not None and built.report.passed
    engine = load_engine(built.path)
    users, items = sample_pairs(data)
    reference = score_pairs(load_checkpoint(trained[1].path), users, items)
    assert np.corrcoef(engine.score(users, items), reference)[0, 1] > corr


@pytest.mark.parametrize(
    "fields",
    [
        {"precision": "fp32"},
        {"precision": "int8"},
        pytest.param(
            {"precision": "int8", "quantization": {"mode": "static", "calibrationSamples": 64}},
            marks=pytest.mark.long,
        ),
    ],
)
def test_a_prefix_engine_scores_each_pair_as_the_checkpoint_does_in_any_order(
    trained, data, tmp_path, fields
):
    """Several users' candidates, interleaved and shuffled, chunked by the engine: each pair's score
    is the checkpoint's (fp32: 1e-4 absolute; INT8: rank correlation)."""
    checkpoint = load_checkpoint(trained[1].path)
    assert checkpoint.meta.shape == "prefix"
    engine = load_engine(build(trained, data, tmp_path, recipe(backend="onnxruntime", **fields)).path)
    user_ids = data.user_codes()[:3]
    items = [data.item_text(m) for m in data.popular_items(45)]
    pairs = [(data.user_text(u), item) for u in user_ids for item in items]
    order = np.random.default_rng(0).permutation(len(pairs))
    users_, items_ = [pairs[i][0] for i in order], [pairs[i][1] for i in order]
    reference = score_pairs(checkpoint, users_, items_)
    scores = engine.score(users_, items_)
    if fields["precision"] == "fp32":
        np.testing.assert_allclose(scores, reference, atol=1e-4)
    else:
        assert np.corrcoef(scores, reference)[0, 1] > 0.95


@pytest.mark.long
def test_a_cross_shaped_checkpoint_still_builds_and_serves(data, tmp_path) -> None:
    """Today's shape (full attention over each pair) stays a supported input."""
    metrics = train_ranker(
        data, tmp_path / "cross", steps=4, batch_size=16, max_len=32, eval_users=10, shape="cross"
    )
    registry = Registry(tmp_path / "state")
    resolved = registry.register("cross", tmp_path / "cross", metrics)
    static = {"mode": "static", "calibrationSamples": 64}
    spec = recipe(backend="onnxruntime", precision="int8", quantization=static)
    built = build((registry, resolved), data, tmp_path / "engines", spec)
    assert built.manifest.model_shape == "cross"
    users, items = sample_pairs(data)
    reference = score_pairs(load_checkpoint(resolved.path), users, items)
    assert np.corrcoef(load_engine(built.path).score(users, items), reference)[0, 1] > 0.95


def test_distilled_and_pruned_engines_are_smaller_and_cached(trained, data, tmp_path) -> None:
    spec = recipe(
        backend="onnxruntime",
        precision="int8",
        distill={"layers": 3, "steps": 4},
        prune={"heads": 0.25, "ffn": 0.5, "recoverySteps": 2},
    )
    built = build(trained, data, tmp_path, spec)
    teacher = load_checkpoint(trained[1].path)
    assert built.manifest.metrics["params"] < 0.7 * sum(p.numel() for p in teacher.model.parameters())
    assert built.manifest.metrics["size_bytes"] < 20e6
    again = build(trained, data, tmp_path, spec)
    assert again.cache_hit and again.path == built.path
    engine = load_engine(built.path)
    scores = engine.score(*sample_pairs(data))
    assert np.isfinite(scores).all() and scores.std() > 0


def test_a_pruned_checkpoint_round_trips_through_its_files(trained, data, tmp_path) -> None:
    from recserve_serving.engine.prune import prune
    from recserve_serving.model import save_checkpoint
    from recserve_serving.recipe import PruneSpec

    teacher = load_checkpoint(trained[1].path)
    pruned, _ = prune(teacher, data, PruneSpec(heads=0.5, ffn=0.75, recovery_steps=0))
    layer = pruned.model.encoder.encoder.layer[0]
    assert layer.attention.self.query.out_features == 6 * 32
    assert layer.intermediate.dense.out_features == 384
    save_checkpoint(pruned, tmp_path / "pruned")
    users, items = sample_pairs(data)
    np.testing.assert_allclose(
        score_pairs(load_checkpoint(tmp_path / "pruned"), users, items),
        score_pairs(pruned, users, items),
        atol=1e-5,
    )


def test_two_concurrent_builds_of_one_key_build_once(trained, data, tmp_path) -> None:
    spec = recipe(backend="onnxruntime", precision="int8")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(build(trained, data, tmp_path, spec)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.cache_hit for r in results) == [False, True]
    assert results[0].path == results[1].path
    assert not list(tmp_path.glob(".building-*"))


def test_an_over_aggressive_recipe_fails_the_quality_gate(trained, data, tmp_path) -> None:
    spec = OptimizationRecipe.model_validate(
        {
            "backend": "onnxruntime",
            "precision": "int8",
            "distill": {"layers": 1, "steps": 1},
            "prune": {"heads": 0.9, "ffn": 0.9, "recoverySteps": 0},
            "qualityGate": {"metric": "auc", "maxDrop": 0.01},
            "maxBatchSize": 16,
        }
    )
    with pytest.raises(QualityGateFailed, match=r"auc dropped 0\.\d+ > maxDrop 0\.01") as failure:
        build(trained, data, tmp_path, spec)
    assert "gate (auc drop <= 0.01): FAILED" in str(failure.value)
    assert len(list((tmp_path / "reports").glob("*.json"))) == 1
    assert not [p for p in tmp_path.iterdir() if len(p.name) == 64 or p.name.startswith(".building-")]


def test_the_latency_gate_fails_a_too_slow_engine(trained, data, tmp_path) -> None:
    spec = recipe(
        backend="onnxruntime", precision="fp32", qualityGate={"maxDrop": 1.0, "maxP99LatencyMs": 0.01}
    )
    with pytest.raises(QualityGateFailed, match="p99 latency at maxBatchSize"):
        build(trained, data, tmp_path, spec)


# --- bad input: a specific error, and the cache root exactly as it was ---------------------------


def copy_checkpoint(trained, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(trained[1].path, target)
    return target


def refused(trained, data, tmp_path, resolved, spec, error, match) -> None:
    cache_root = tmp_path / "engines"
    before = snapshot(cache_root)
    with pytest.raises(error, match=match):
        build_engine(resolved, spec, cache_root, data=data, evaluation=EVAL)
    assert snapshot(cache_root) == before


def test_digest_mismatch(trained, data, tmp_path) -> None:
    wrong = ResolvedCheckpoint(trained[1].uri, "ranker", "1", trained[1].path, "sha256:" + "0" * 64)
    refused(trained, data, tmp_path, wrong, recipe(), CheckpointError, "have digest .* expected sha256:0000")


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: (d / "model.safetensors").unlink(), "model file\\(s\\) missing: model.safetensors"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "model.safetensors is corrupt"),
        (lambda d: (d / "head.safetensors").write_bytes(b"{}"), "head.safetensors is corrupt"),
        (lambda d: (d / "tokenizer.json").unlink(), "tokenizer file\\(s\\) missing: tokenizer.json"),
        (lambda d: (d / "tokenizer.json").write_text("{not json"), "tokenizer files are corrupt"),
        (lambda d: (d / "recserve.json").write_text("[]"), "recserve.json is corrupt"),
    ],
)
def test_missing_or_corrupt_files(trained, data, tmp_path, damage, match) -> None:
    directory = copy_checkpoint(trained, tmp_path)
    damage(directory)
    resolved = trained[0].resolve(directory.as_uri())
    refused(trained, data, tmp_path, resolved, recipe(), CheckpointError, match)


def test_a_sequence_too_short_for_the_prefix_users_is_refused(trained, data, tmp_path) -> None:
    with pytest.raises(RecipeError, match="leaves the user fewer than 8 tokens"):
        build(trained, data, tmp_path, recipe(maxSequenceLength=16))
    assert snapshot(tmp_path) == []


def test_a_student_deeper_than_its_teacher(trained, data, tmp_path) -> None:
    spec = recipe(distill={"layers": 6})
    refused(trained, data, tmp_path, trained[1], spec, RecipeError, "not fewer than the teacher's 6 layers")


def test_int8_on_a_backend_without_it(trained, data, tmp_path) -> None:
    from recserve_serving.engine.build import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is usable here")
    refused(
        trained,
        data,
        tmp_path,
        trained[1],
        recipe(backend="tensorrt"),
        RecipeError,
        "needs the tensorrt package",
    )


@pytest.mark.long
def test_the_gate_scores_the_served_pipeline_when_asked(trained, data, tmp_path, test_state) -> None:
    """``servedUsers`` puts the served pipeline's NDCG@10 (hybrid retrieval, the engine, its
    fusion head, the full catalog) next to the teacher's, and the gate can bound it."""
    index = test_state / "retrieval"
    gate = {"maxDrop": 1.0, "metric": "served_ndcg@10", "servedUsers": 8}
    built = build_engine(
        trained[1],
        recipe(qualityGate=gate),
        tmp_path / "engines",
        data=data,
        evaluation=EVAL,
        index_dir=index,
    )
    assert built.report is not None and built.report.passed
    teacher, engine = built.report.reference["served_ndcg@10"], built.manifest.metrics["served_ndcg@10"]
    assert 0.0 <= engine <= 1.0 and 0.0 <= teacher <= 1.0
    assert built.report.drop == pytest.approx(teacher - engine)
    strict = {**gate, "metric": "ndcg@10", "minimums": [{"metric": "served_ndcg@10", "min": 1.0}]}
    engines = tmp_path / "engines"
    before = {p.name for p in engines.iterdir()}
    with pytest.raises(QualityGateFailed, match=r"served_ndcg@10 [0-9.]+ < minimum 1"):
        build_engine(
            trained[1], recipe(qualityGate=strict), engines, data=data, evaluation=EVAL, index_dir=index
        )
    added = [p.name for p in engines.iterdir() if p.name not in before]
    assert not [name for name in added if len(name) == 64 or name.startswith(".building-")], added
