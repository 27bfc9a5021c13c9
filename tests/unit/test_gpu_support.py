"""Validation and the runtime agree on what a replica can run, case by case (``gpu_support``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recserve_operator.api.types import RecommenderModelSpec
from recserve_operator.validate import check_document, load_model
from recserve_serving.engine.manifest import CheckpointRef, EngineManifest
from recserve_serving.engine.pipeline import check_runnable, stage_device
from recserve_serving.engine.precision import precision_problem
from recserve_serving.errors import EngineError
from recserve_serving.gpu_support import Combination, gpu_support
from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.serve.config import RankerConfig, RouterConfig, ServeAppConfig, render_serve_config

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"

# (backend, precision, pipeline, tensor, gpus) -> can a replica run it? Written by hand from what
# each backend does: torch runs fp32/bf16 anywhere, fp16 on CUDA, int8 on CPU; TensorRT needs a
# GPU; ONNX Runtime runs fp32/int8 on CPU; only torch engines split into pipeline stages; tensor
# parallelism has no runtime at all.
CASES: list[tuple[str, str, int, int, float, bool]] = [
    ("torch", "fp32", 1, 1, 0, True),
    ("torch", "fp32", 1, 1, 1, True),
    ("torch", "fp16", 1, 1, 1, True),
    ("torch", "fp16", 1, 1, 0, False),
    ("torch", "bf16", 1, 1, 1, True),
    ("torch", "bf16", 1, 1, 0, True),
    ("torch", "int8", 1, 1, 0, True),
    ("torch", "int8", 1, 1, 1, False),
    ("torch", "fp16", 2, 1, 1, True),
    ("torch", "bf16", 2, 1, 1, True),
    ("torch", "fp32", 2, 1, 0, True),
    ("torch", "int8", 2, 1, 0, True),
    ("torch", "fp16", 2, 1, 0, False),
    ("torch", "fp16", 1, 2, 1, False),
    ("torch", "fp16", 2, 2, 1, False),
    ("tensorrt", "fp16", 1, 1, 1, True),
    ("tensorrt", "int8", 1, 1, 1, True),
    ("tensorrt", "fp16", 1, 1, 0, False),
    ("tensorrt", "fp16", 2, 1, 1, False),
    ("tensorrt", "int8", 4, 1, 1, False),
    ("onnxruntime", "int8", 1, 1, 0, True),
    ("onnxruntime", "fp32", 1, 1, 0, True),
    ("onnxruntime", "int8", 2, 1, 0, False),
    ("onnxruntime", "fp32", 1, 2, 0, False),
]


def spec_document(backend: str, precision: str, pipeline: int, tensor: int, gpus: float) -> dict[str, Any]:
    return {
        "apiVersion": "recserve.dev/v1alpha1",
        "kind": "RecommenderModel",
        "metadata": {"name": "m"},
        "spec": {
            "checkpoint": {"uri": "models:/m/1"},
            "optimization": {"backend": backend, "precision": precision},
            "serving": {
                "resources": {"gpus": gpus},
                "parallelism": {"pipeline": pipeline, "tensor": tensor},
            },
        },
    }


def validation_accepts(backend: str, precision: str, pipeline: int, tensor: int, gpus: float) -> bool:
    model, _ = check_document(spec_document(backend, precision, pipeline, tensor, gpus))
    return model is not None


def manifest(backend: str, precision: str) -> EngineManifest:
    return EngineManifest(
        key="k" * 64,
        checkpoint=CheckpointRef(uri="models:/m/1", digest="sha256:" + "0" * 64, name="m"),
        recipe=OptimizationRecipe(backend="onnxruntime", precision="fp32"),
        backend=backend,
        backend_version="x",
        precision=precision,
        hardware="cpu",
        max_sequence_length=64,
        model_file="model",
        metrics={},
        files={},
    )


def runtime_accepts(backend: str, precision: str, pipeline: int, tensor: int, gpus: float) -> bool:
    """What the serving code does with the combination, asked of the code paths themselves."""
    if tensor > 1:
        return False  # a Ranker replica has no tensor-parallel engine: it would run unsharded
    if pipeline > 1:
        try:
            check_runnable(Path("engine"), manifest(backend, precision), pipeline, gpus)
        except EngineError:
            return False
    if backend == "torch":
        device = stage_device(gpus, cuda_available=True)
        return precision_problem(precision, device) is None
    if backend == "tensorrt":
        return gpus > 0  # TensorRTEngine refuses to start without CUDA
    return precision in ("fp32", "int8")  # ONNX Runtime engines are built for CPU


@pytest.mark.parametrize(("backend", "precision", "pipeline", "tensor", "gpus", "runs"), CASES)
def test_validation_agrees_with_the_runtime(
    backend: str, precision: str, pipeline: int, tensor: int, gpus: float, runs: bool
) -> None:
    case = (backend, precision, pipeline, tensor, gpus)
    assert runtime_accepts(*case) is runs
    assert validation_accepts(*case) is runs
    assert gpu_support(Combination(*case)) is runs


def problem_paths(backend: str, precision: str, pipeline: int, tensor: int, gpus: float) -> dict[str, str]:
    model, problems = check_document(spec_document(backend, precision, pipeline, tensor, gpus))
    assert model is None
    return {p.path: p.message for p in problems}


def test_tensorrt_with_pipeline_stages_is_refused_naming_both_fields() -> None:
    found = problem_paths("tensorrt", "fp16", 2, 1, 1)
    message = found["spec.serving.parallelism.pipeline"]
    assert "pipeline parallelism runs torch engines only" in message
    assert "optimization.backend to torch" in message
    assert "got backend tensorrt with pipeline 2" in message


def test_auto_backend_with_pipeline_stages_is_refused() -> None:
    """``auto`` becomes TensorRT or ONNX Runtime at build time, never torch."""
    assert "got backend auto" in problem_paths("auto", "fp32", 2, 1, 1)["spec.serving.parallelism.pipeline"]


def test_tensor_parallelism_is_refused_as_not_implemented() -> None:
    message = problem_paths("torch", "fp16", 1, 2, 1)["spec.serving.parallelism.tensor"]
    assert message.startswith("tensor parallelism is not implemented; use pipeline (got tensor 2)")


def test_bf16_needs_torch_and_torch_int8_needs_cpu() -> None:
    assert (
        "bf16 runs on the torch backend only"
        in problem_paths("tensorrt", "bf16", 1, 1, 1)["spec.optimization.precision"]
    )
    assert (
        "int8 with backend torch runs on CPU only"
        in problem_paths("torch", "int8", 1, 1, 1)["spec.optimization.precision"]
    )


def test_a_canary_recipe_is_judged_against_the_same_shards() -> None:
    doc = spec_document("torch", "fp16", 2, 1, 1)
    doc["spec"]["rollout"] = {
        "canary": {
            "checkpoint": {"uri": "models:/m/1"},
            "optimization": {"backend": "tensorrt", "precision": "fp16"},
            "steps": [{"weight": 10, "pause": "1m"}],
            "analysis": {"maxErrorRate": 0.01},
        }
    }
    model, problems = check_document(doc)
    assert model is None
    assert [p.path for p in problems] == ["spec.serving.parallelism.pipeline"]
    assert "set rollout.canary.optimization.backend to torch" in problems[0].message


def test_the_gpu_example_validates_and_is_supported() -> None:
    spec = load_model(EXAMPLES / "movielens-ranker-gpu.yaml").spec
    combo = Combination(
        spec.optimization.backend,
        spec.optimization.precision,
        spec.serving.parallelism.pipeline,
        spec.serving.parallelism.tensor,
        spec.serving.resources.gpus,
    )
    assert gpu_support(combo)
    assert (combo.backend, combo.pipeline) == ("torch", 2)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_validates(example: str) -> None:
    assert isinstance(load_model(EXAMPLES / example).spec, RecommenderModelSpec)


def test_each_stage_of_the_gpu_example_reserves_and_requests_its_gpu() -> None:
    """The placement group gives each stage bundle a GPU, and the stage actor asks for exactly
    its bundle: Ray then hands it that GPU, and the stage runs on CUDA."""
    spec = load_model(EXAMPLES / "movielens-ranker-gpu.yaml").spec
    ranker = RankerConfig(label="m/1", engine_dir="/engines/e", serving=spec.serving)
    app = ServeAppConfig(
        name="movielens-ranker-gpu",
        router=RouterConfig(model_name="m", index_dir="/i"),
        stable=ranker,
    )
    rendered = render_serve_config(app)
    (deployment,) = [
        d for a in rendered["applications"] for d in a["deployments"] if "placement_group_bundles" in d
    ]
    stages = deployment["placement_group_bundles"][1:]
    assert stages == [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert deployment["ray_actor_options"]["num_gpus"] == 0, "the coordinator holds no GPU"
    args = ranker.args()
    assert args.stage_resources is not None
    options = args.stage_resources.shard_actor_options()
    assert options == {"num_cpus": 4.0, "num_gpus": 1.0}
    for bundle in stages:
        assert options["num_cpus"] <= bundle["CPU"] and options["num_gpus"] <= bundle["GPU"]


def test_single_device_rankers_keep_their_application_names() -> None:
    """Stage resources travel in a ranker's args only with pipeline stages, so that a CPU
    model's application (named by a hash of its args) is not redeployed by this change."""
    assert "stageResources" not in RankerConfig(label="m/1", engine_dir="/e").args().to_dict()


def test_a_stage_that_reserved_a_gpu_but_sees_no_cuda_is_refused() -> None:
    assert stage_device(0, cuda_available=True) == "cpu"
    assert stage_device(1, cuda_available=True) == "cuda"
    with pytest.raises(EngineError, match="reserved 1 GPU"):
        stage_device(1, cuda_available=False)
