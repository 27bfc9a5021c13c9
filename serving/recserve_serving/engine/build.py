"""Turn a resolved checkpoint and a recipe into a cached engine directory.

Order matters for "bad input leaves the cache untouched": the checkpoint digest and the
recipe are checked, and the checkpoint is loaded, before anything is written to the cache;
the build then happens in a private temp directory that is published atomically only after
the manifest (written last) is in place.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recserve_serving.engine import cache
from recserve_serving.engine.digests import directory_digest, file_digests
from recserve_serving.engine.export import export_onnx, fuse
from recserve_serving.engine.manifest import MANIFEST_FILE, CheckpointRef, EngineManifest
from recserve_serving.engine.quantize import quantize_dynamic_int8
from recserve_serving.engine.runtime import load_engine, verify
from recserve_serving.errors import CheckpointError, RecipeError
from recserve_serving.model import TOKENIZER_FILES, Checkpoint, load_checkpoint
from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.registry import ResolvedCheckpoint

MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class BuiltEngine:
    path: Path
    manifest: EngineManifest
    cache_hit: bool


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
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
    if backend == "tensorrt":
        try:
            import tensorrt
        except ImportError:
            raise RecipeError(
                "backend tensorrt requested but the tensorrt package is not installed"
            ) from None
        return f"tensorrt-{tensorrt.__version__}"
    raise RecipeError(f"unknown backend {backend!r}")


def check_recipe(recipe: OptimizationRecipe, backend: str) -> None:
    """Contradictions the pydantic model cannot see because they depend on this machine."""
    if backend == "onnxruntime" and recipe.precision == "fp16":
        raise RecipeError("precision fp16 needs a GPU backend; onnxruntime here runs on CPU (fp32 or int8)")
    if backend == "tensorrt" and not tensorrt_available():
        raise RecipeError(
            "backend tensorrt needs the tensorrt package and a CUDA GPU; neither is usable here"
        )
    if backend == "onnxruntime" and recipe.quantization.mode == "static" and recipe.precision == "int8":
        raise RecipeError("static int8 quantization is not built yet for onnxruntime; use mode: dynamic")
    if backend in ("torch", "tensorrt"):
        raise RecipeError(f"backend {backend} engines are not built yet; use backend onnxruntime")


def _build_onnxruntime(checkpoint: Checkpoint, recipe: OptimizationRecipe, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="recserve-export-") as scratch:
        raw = export_onnx(checkpoint, Path(scratch) / "raw.onnx")
        config = checkpoint.model.encoder.config
        fused = fuse(
            raw,
            Path(scratch) / "fused.onnx",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
        )
        if recipe.precision == "int8":
            quantize_dynamic_int8(fused, target / MODEL_FILE, per_channel=recipe.quantization.per_channel)
        else:
            shutil.copyfile(fused, target / MODEL_FILE)


def _cache_hit(final: Path) -> BuiltEngine:
    manifest = EngineManifest.read(final)
    verify(final, manifest)
    return BuiltEngine(final, manifest, cache_hit=True)


def build_engine(resolved: ResolvedCheckpoint, recipe: OptimizationRecipe, cache_root: Path) -> BuiltEngine:
    """Build (or fetch from the cache) the engine for ``resolved`` under ``recipe``."""
    backend = concrete_backend(recipe)
    check_recipe(recipe, backend)
    concrete = recipe.model_copy(update={"backend": backend})
    version = backend_version(backend)
    hardware_id = cache.hardware(backend)
    key = cache.engine_key(resolved.digest, concrete, version, hardware_id)
    cache_root = Path(cache_root)
    final = cache_root / key
    if cache.finished(final):
        return _cache_hit(final)
    actual = directory_digest(resolved.path)
    if actual != resolved.digest:
        raise CheckpointError(
            f"{resolved.uri}: files at {resolved.path} have digest {actual}, expected {resolved.digest}"
        )
    checkpoint = load_checkpoint(resolved.path)
    with cache.key_lock(cache_root, key):
        if cache.finished(final):
            return _cache_hit(final)
        cache.sweep(cache_root)
        temp = cache.new_temp(cache_root, key)
        try:
            _build_onnxruntime(checkpoint, concrete, temp)
            for name in TOKENIZER_FILES:
                shutil.copyfile(resolved.path / name, temp / name)
            files = file_digests(temp, exclude=frozenset({MANIFEST_FILE}))
            manifest = EngineManifest(
                key=key,
                checkpoint=CheckpointRef(
                    uri=resolved.uri, digest=resolved.digest, name=resolved.name, version=resolved.version
                ),
                recipe=concrete,
                backend=backend,
                backend_version=version,
                precision=concrete.precision,
                hardware=hardware_id,
                max_sequence_length=min(concrete.max_sequence_length, checkpoint.meta.max_len),
                model_file=MODEL_FILE,
                metrics={"size_bytes": float((temp / MODEL_FILE).stat().st_size)},
                files=files,
            )
            manifest.write(temp)
            load_engine(temp)
            published = cache.publish(temp, final)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    if not published:
        return _cache_hit(final)
    return BuiltEngine(final, manifest, cache_hit=False)
