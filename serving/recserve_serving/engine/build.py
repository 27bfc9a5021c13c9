"""Turn a resolved checkpoint and a recipe into a gated, cached engine directory.

Order matters for "bad input leaves the cache untouched": the recipe is checked against
this machine, the checkpoint digest is re-verified and the checkpoint loaded (which names
any missing or corrupt file), and the recipe is checked against the checkpoint, all before
anything is written to the cache. The build then happens in a private temp directory:
optimize (distill, prune) → backend build → quality and latency gate → report and manifest
(written last) → atomic publish. A failed gate discards the temp directory and keeps only
its report under ``reports/``. A cached engine that no longer verifies is quarantined under
the key's lock and built again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recserve_serving.data import Dataset
from recserve_serving.engine import cache
from recserve_serving.engine.digests import directory_digest, file_digests
from recserve_serving.engine.distill import distill, encoder_layers
from recserve_serving.engine.gate import REPORT_FILE, GateReport, engine_metrics, judge, reference_metrics
from recserve_serving.engine.gc import touch_used
from recserve_serving.engine.manifest import MANIFEST_FILE, CheckpointRef, EngineManifest
from recserve_serving.engine.prune import prune
from recserve_serving.engine.quantize import calibration_batches
from recserve_serving.engine.reuse import intact
from recserve_serving.engine.runtime import load_engine, verify
from recserve_serving.errors import CheckpointError, EngineError, QualityGateFailed, RecipeError
from recserve_serving.evaluate import EvalSettings, eval_set
from recserve_serving.example_data import load_example
from recserve_serving.fusion import FUSION_FILE, FusionHead, read_fusion
from recserve_serving.model import Checkpoint, CheckpointMeta, count_parameters, load_checkpoint, score_pairs
from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.registry import ResolvedCheckpoint
from recserve_serving.tokens import TOKENIZER_FILES

REPORTS = "reports"
REFERENCES = "references"


@dataclass(frozen=True)
class BuiltEngine:
    path: Path
    manifest: EngineManifest
    cache_hit: bool
    report: GateReport | None = None


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return cache.gpu_capability() is not None


def cuda_available() -> bool:
    return cache.gpu_capability() is not None


def concrete_backend(recipe: OptimizationRecipe) -> str:
    """``auto`` becomes TensorRT where it imports and a GPU exists, else ONNX Runtime."""
    if recipe.backend != "auto":
        return recipe.backend
    return "tensorrt" if tensorrt_available() else "onnxruntime"


def backend_version(backend: str) -> str:
    if backend == "onnxruntime":
        import onnxruntime

        return f"onnxruntime-{onnxruntime.__version__}"
    if backend == "torch":
        import torch

        return f"torch-{torch.__version__}"
    import tensorrt

    return f"tensorrt-{tensorrt.__version__}"


def check_recipe(recipe: OptimizationRecipe, backend: str) -> None:
    """Contradictions that depend on this machine, which the pydantic model cannot see."""
    if backend == "tensorrt" and not tensorrt_available():
        raise RecipeError(
            "backend tensorrt needs the tensorrt package and a CUDA GPU; this machine lacks one"
        )
    if backend == "onnxruntime" and recipe.precision == "fp16":
        raise RecipeError("precision fp16 needs a GPU backend; onnxruntime here runs on CPU (fp32 or int8)")
    if backend == "torch" and recipe.precision == "fp16" and not cuda_available():
        raise RecipeError("precision fp16 with backend torch needs a CUDA GPU; use fp32 or int8 on CPU")
    if backend == "torch" and recipe.precision == "int8" and cuda_available():
        raise RecipeError(
            "backend torch runs int8 on CPU only, and this machine has a GPU; use tensorrt for int8 or fp16"
        )


def check_against_checkpoint(recipe: OptimizationRecipe, checkpoint: Checkpoint) -> None:
    if checkpoint.meta.shape == "prefix" and recipe.backend == "tensorrt":
        raise RecipeError(
            "backend tensorrt builds cross-shaped checkpoints only; this checkpoint has the prefix "
            "shape (the user encoded once per request): use backend onnxruntime or torch"
        )
    item_budget = checkpoint.meta.item_max_len
    if checkpoint.meta.shape == "prefix" and recipe.max_sequence_length < item_budget + 8:
        raise RecipeError(
            f"maxSequenceLength {recipe.max_sequence_length} leaves the user fewer than 8 tokens: this "
            f"prefix-shaped checkpoint gives each candidate {item_budget}; use at least {item_budget + 8} "
            f"(it was trained with {checkpoint.meta.max_len})"
        )
    layers = encoder_layers(checkpoint)
    if recipe.distill is not None and recipe.distill.layers >= layers:
        raise RecipeError(
            f"distill.layers {recipe.distill.layers} is not fewer than the teacher's {layers} layers; "
            f"a student must be shallower (1..{layers - 1})"
        )


def optimize(
    checkpoint: Checkpoint, recipe: OptimizationRecipe, data: Dataset, seed: int
) -> tuple[Checkpoint, dict[str, float]]:
    """Distil, then prune (recovering against the distilled model): each step shrinks compute."""
    metrics: dict[str, float] = {}
    model = checkpoint
    if recipe.distill is not None:
        model, found = distill(model, data, recipe.distill, seed=seed)
        metrics.update(found)
    if recipe.prune is not None and (recipe.prune.heads > 0 or recipe.prune.ffn > 0):
        model, found = prune(model, data, recipe.prune, seed=seed)
        metrics.update(found)
    metrics["params"] = float(count_parameters(model.model))
    return model, metrics


def _backend_build(
    backend: str,
    model: Checkpoint,
    recipe: OptimizationRecipe,
    target: Path,
    calibration: Callable[[], Iterator[dict[str, np.ndarray]]],
) -> str:
    if backend == "onnxruntime":
        from recserve_serving.engine import ort

        return ort.build(model, recipe, target, calibration)
    if backend == "torch":
        from recserve_serving.engine import torch_backend

        return torch_backend.build(model, recipe, target)
    from recserve_serving.engine import tensorrt

    return tensorrt.build(model, recipe, target, calibration)


def _cache_hit(final: Path, *, quarantine: bool = False) -> BuiltEngine | None:
    manifest = intact(final, quarantine=quarantine)
    if manifest is None:
        return None
    return BuiltEngine(final, manifest, cache_hit=True, report=GateReport.read(final / REPORT_FILE))


def _manifest(
    key: str,
    resolved: ResolvedCheckpoint,
    recipe: OptimizationRecipe,
    version: str,
    hardware_id: str,
    max_len: int,
    model_file: str,
    meta: CheckpointMeta,
    metrics: dict[str, float],
    directory: Path,
) -> EngineManifest:
    return EngineManifest(
        key=key,
        checkpoint=CheckpointRef(
            uri=resolved.uri, digest=resolved.digest, name=resolved.name, version=resolved.version
        ),
        recipe=recipe,
        backend=recipe.backend,
        backend_version=version,
        precision=recipe.precision,
        hardware=hardware_id,
        max_sequence_length=max_len,
        model_file=model_file,
        model_shape=meta.shape,
        item_max_length=meta.item_max_len if meta.shape == "prefix" else None,
        metrics=metrics,
        files=file_digests(directory, exclude=frozenset({MANIFEST_FILE})),
    )


def served_of(
    scorer: Callable[[list[str], list[str]], np.ndarray],
    fusion: FusionHead | None,
    data: Dataset,
    users: int,
    index_dir: Path,
) -> dict[str, float]:
    from recserve_serving.quality.run import RankerUnderTest, served_metrics

    return served_metrics(RankerUnderTest("gate", scorer, fusion), data, index_dir, users)


def served_reference(
    checkpoint: Checkpoint,
    resolved: ResolvedCheckpoint,
    data: Dataset,
    users: int,
    index_dir: Path,
    cache: Path,
) -> dict[str, float]:
    """The unoptimized checkpoint's served-pipeline metrics (eager fp32), once per checkpoint,
    data and size."""
    name = f"{resolved.digest.removeprefix('sha256:')[:32]}-{data.digest[:16]}-served-{users}.json"
    path = cache / name
    if path.is_file():
        cached: dict[str, float] = json.loads(path.read_text())
        return cached
    import torch

    torch.set_num_threads(2)

    def score(users_: list[str], items: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return score_pairs(checkpoint, users_, items)

    metrics = served_of(score, read_fusion(resolved.path), data, users, index_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    temp.replace(path)
    return metrics


def build_engine(
    resolved: ResolvedCheckpoint,
    recipe: OptimizationRecipe,
    cache_root: Path,
    *,
    data: Dataset | None = None,
    evaluation: EvalSettings | None = None,
    seed: int = 0,
    index_dir: Path | None = None,
) -> BuiltEngine:
    """Build (or fetch from the cache) the engine for ``resolved`` under ``recipe``.

    Raises RecipeError / CheckpointError for bad input (cache untouched) and
    QualityGateFailed when the optimized engine loses too much quality or time.
    ``index_dir`` holds the retrieval indexes the served-pipeline evaluation
    (``qualityGate.servedUsers``) reads; by default the ``retrieval`` folder beside the cache.
    """
    if recipe.search is not None:
        raise RecipeError("a recipe with search names several engines; build_best picks one (search_build)")
    backend = concrete_backend(recipe)
    check_recipe(recipe, backend)
    concrete = recipe.model_copy(update={"backend": backend})
    version = backend_version(backend)
    hardware_id = cache.hardware(
        backend, device="cuda" if backend != "onnxruntime" and cuda_available() else "cpu"
    )
    key = cache.engine_key(resolved.digest, concrete, version, hardware_id)
    cache_root = Path(cache_root)
    final = cache_root / key
    hit = _cache_hit(final)
    if hit is not None:
        return hit
    actual = directory_digest(resolved.path)
    if actual != resolved.digest:
        raise CheckpointError(
            f"{resolved.uri}: files at {resolved.path} have digest {actual}, expected {resolved.digest}"
        )
    checkpoint = load_checkpoint(resolved.path)
    check_against_checkpoint(concrete, checkpoint)
    data = data if data is not None else load_example()
    settings = evaluation or EvalSettings()
    max_len = min(concrete.max_sequence_length, checkpoint.meta.max_len)
    with cache.key_lock(cache_root, key):
        hit = _cache_hit(final, quarantine=True)
        if hit is not None:
            return hit
        cache.sweep(cache_root)
        evals = eval_set(data, users=settings.users, candidates=settings.candidates, seed=settings.seed)
        reference = reference_metrics(
            checkpoint, resolved.digest, data, evals, settings, cache_root / REFERENCES
        )
        served_users = concrete.quality_gate.served_users
        index = Path(index_dir) if index_dir is not None else cache_root.parent / "retrieval"
        if served_users:
            reference = {
                **reference,
                **served_reference(checkpoint, resolved, data, served_users, index, cache_root / REFERENCES),
            }
        temp = cache.new_temp(cache_root, key)
        try:
            model, metrics = optimize(checkpoint, concrete, data, seed)
            samples = concrete.quantization.calibration_samples
            model_file = _backend_build(
                backend,
                model,
                concrete,
                temp,
                lambda: calibration_batches(model, data, samples=samples, max_len=max_len, seed=seed),
            )
            for name in TOKENIZER_FILES:
                shutil.copyfile(resolved.path / name, temp / name)
            if (resolved.path / FUSION_FILE).is_file():
                shutil.copyfile(resolved.path / FUSION_FILE, temp / FUSION_FILE)
            metrics["size_bytes"] = float((temp / model_file).stat().st_size)
            args = (key, resolved, concrete, version, hardware_id, max_len, model_file, model.meta)
            _manifest(*args, metrics, temp).write(temp)
            engine = load_engine(temp)
            metrics.update(engine_metrics(engine, data, evals, settings))
            if served_users:
                metrics.update(served_of(engine.score, read_fusion(temp), data, served_users, index))
            del engine
            metrics.update(
                {f"{name}_drop": reference[name] - metrics[name] for name in ("ndcg@10", "hitrate@10", "auc")}
            )
            report = judge(concrete.quality_gate, reference, metrics, settings.describe())
            report_path = cache_root / REPORTS / f"{key}.json"
            report.write(report_path)
            if not report.passed:
                raise QualityGateFailed(
                    f"engine for {resolved.uri} failed its gate (report: {report_path})\n" + report.table(),
                    report=str(report_path),
                )
            report.write(temp / REPORT_FILE)
            manifest = _manifest(*args, metrics, temp)
            manifest.write(temp)
            verify(temp, manifest)
            published = cache.publish(temp, final)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    if not published:
        winner = _cache_hit(final)
        if winner is None:
            raise EngineError(f"engine {final} was published by another build but does not verify")
        return winner
    touch_used(final)
    return BuiltEngine(final, manifest, cache_hit=False, report=report)
