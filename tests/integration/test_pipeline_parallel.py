"""Two pipeline stages as Ray actors in a STRICT_PACK placement group score like one device."""

from __future__ import annotations

import numpy as np
import pytest

from recserve_serving.engine.pipeline import PipelineEngine, stage_ranges
from recserve_serving.errors import EngineError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def torch_engine(tmp_path_factory):
    from recserve_serving.engine.build import build_engine
    from recserve_serving.engine.digests import directory_digest
    from recserve_serving.evaluate import EvalSettings
    from recserve_serving.model import new_ranker, save_checkpoint
    from recserve_serving.recipe import OptimizationRecipe
    from recserve_serving.registry import ResolvedCheckpoint

    root = tmp_path_factory.mktemp("pp")
    checkpoint = root / "ckpt"
    save_checkpoint(new_ranker(max_len=64, layers=2), checkpoint)  # one encoder layer per stage
    resolved = ResolvedCheckpoint(checkpoint.as_uri(), "ckpt", None, checkpoint, directory_digest(checkpoint))
    recipe = OptimizationRecipe(backend="torch", precision="fp32", max_sequence_length=64)
    # A small gate evaluation: what these tests compare is the stages' scores against one device,
    # not the engine's gate (tests/integration/test_engine_build.py's). The default, 100 users x
    # 50 candidates scored by the checkpoint and again by the engine plus 10 latency repeats, was
    # most of this fixture's ~110 s on a loaded 2-core machine; 30 x 20 is an eighth of the pairs,
    # and a torch fp32 engine of the checkpoint drops nothing on any of them.
    evaluation = EvalSettings(users=30, candidates=20, latency_repeats=2)
    return build_engine(resolved, recipe, root / "engines", evaluation=evaluation)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    import ray

    ray.init(
        num_cpus=3,
        include_dashboard=False,
        _temp_dir=str(tmp_path_factory.mktemp("r")),
        _node_ip_address="127.0.0.1",
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


def test_stage_ranges_cover_every_layer_once():
    assert stage_ranges(6, 2) == [range(0, 3), range(3, 6)]
    assert stage_ranges(7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    with pytest.raises(EngineError, match="cannot split 2 encoder layers into 3"):
        stage_ranges(2, 3)


def test_two_stage_scores_match_single_device(torch_engine, ray_cluster):
    from ray.util.placement_group import placement_group, remove_placement_group

    from recserve_serving.engine.runtime import load_engine

    users = [f"likes: Toy Story (1995) | genres: Comedy, user {i}" for i in range(12)]
    items = [f"Movie {i} ({1990 + i}) | Drama | {'hit' if i % 2 else 'niche'}" for i in range(12)]
    single = load_engine(torch_engine.path).score(users, items)

    group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    ray_cluster.get(group.ready(), timeout=60)
    try:
        pipeline = PipelineEngine(torch_engine.path, torch_engine.manifest, stages=2, placement_group=group)
        staged = pipeline.score(users, items)
        # Each stage is its own live actor (a dead one raises here).
        alive = [ray_cluster.get(s.__ray_ready__.remote(), timeout=60) for s in pipeline.stages]
        pipeline.close()
    finally:
        remove_placement_group(group)
    assert len(alive) == 2
    np.testing.assert_allclose(staged, single, atol=1e-4)
    assert np.std(single) > 0, "scores should differ between pairs"


def test_pipeline_refuses_non_torch_engines(tmp_path, torch_engine):
    bad = torch_engine.manifest.model_copy(update={"backend": "onnxruntime"})
    with pytest.raises(EngineError, match="pipeline parallelism runs torch engines"):
        PipelineEngine(torch_engine.path, bad, stages=2)


def test_pipeline_refuses_a_prefix_shaped_engine(torch_engine):
    prefix = torch_engine.manifest.model_copy(update={"model_shape": "prefix"})
    with pytest.raises(EngineError, match="pipeline stages run cross-shaped checkpoints only"):
        PipelineEngine(torch_engine.path, prefix, stages=2)


def _chained(engine_dir, precision: str, gpus: float, users, items):
    """Two stages chained in this process (no Ray), as the actors chain their object refs."""
    from recserve_serving.engine.pipeline import Stage
    from recserve_serving.tokens import encode, load_tokenizer

    stages = [Stage(str(engine_dir), i, 2, precision=precision, gpus=gpus) for i in range(2)]
    encoded = encode(load_tokenizer(engine_dir), users, items, 64)
    mask = np.asarray(encoded["attention_mask"])
    hidden = stages[0].forward({k: np.asarray(encoded[k]) for k in ("input_ids", "token_type_ids")}, mask)
    return stages, stages[1].forward(hidden, mask), encoded


def _single(engine_dir, precision: str, device: str, encoded):
    import torch

    from recserve_serving.engine.precision import place
    from recserve_serving.model import load_checkpoint, torch_inputs

    model = place(load_checkpoint(engine_dir).model.eval(), precision, device, "reference")
    with torch.inference_mode():
        return model(**torch_inputs(encoded, device)).float().cpu().numpy()


USERS = [f"likes: Toy Story (1995) | genres: Comedy, user {i}" for i in range(8)]
ITEMS = [f"Movie {i} ({1990 + i}) | Drama | {'hit' if i % 2 else 'niche'}" for i in range(8)]


@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-5), ("bf16", 2e-2), ("int8", 1e-4)])
def test_cpu_stages_run_the_engines_precision(torch_engine, precision, atol):
    """Stages on CPU run fp32, bf16 (activations cross stages as raw bf16 bits) and INT8 like
    the whole model placed the same way."""
    stages, staged, encoded = _chained(torch_engine.path, precision, 0, USERS, ITEMS)
    assert all(s.device == "cpu" for s in stages)
    np.testing.assert_allclose(staged, _single(torch_engine.path, precision, "cpu", encoded), atol=atol)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_stages_run_on_cuda_close_to_fp32(torch_engine, precision):
    stages, staged, encoded = _chained(torch_engine.path, precision, 1, USERS, ITEMS)
    assert all(s.device == "cuda" for s in stages)
    reference = _single(torch_engine.path, "fp32", "cpu", encoded)
    np.testing.assert_allclose(staged, reference, atol=5e-2)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_stage_actors_get_their_bundles_gpu_and_run_on_it(torch_engine, ray_cluster):
    """Two fp32 stages sharing one GPU (half each, so one GPU suffices): each actor asks for its
    bundle's GPU, Ray grants it, and the scores match the single device's."""
    from ray.util.placement_group import placement_group, remove_placement_group

    from recserve_serving.engine.runtime import load_engine
    from recserve_serving.serving_spec import ResourcesSpec

    single = load_engine(torch_engine.path).score(USERS, ITEMS)
    shard = ResourcesSpec(cpus=1, gpus=0.5)
    group = placement_group([shard.bundle(), shard.bundle()], strategy="STRICT_PACK")
    ray_cluster.get(group.ready(), timeout=60)
    try:
        pipeline = PipelineEngine(
            torch_engine.path, torch_engine.manifest, stages=2, placement_group=group, resources=shard
        )
        staged = pipeline.score(USERS, ITEMS)
        devices = [
            ray_cluster.get(s.__ray_call__.remote(lambda stage: stage.device)) for s in pipeline.stages
        ]
        pipeline.close()
    finally:
        remove_placement_group(group)
    assert devices == ["cuda", "cuda"]
    np.testing.assert_allclose(staged, single, atol=1e-3)
