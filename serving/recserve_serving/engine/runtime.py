"""The one runtime interface: ``load_engine(dir).score(user_texts, item_texts)``.

Every backend (ONNX Runtime, torch, TensorRT) sits behind ``Engine``, so the serving app
never knows which one it runs. Loading verifies every file against the manifest first: an
engine whose bytes differ from what was built and gated is refused, not served.
"""

from __future__ import annotations

import os
from pathlib import Path

from recserve_serving.engine.base import DEFAULT_THREADS, Engine
from recserve_serving.engine.digests import file_digests
from recserve_serving.engine.gc import touch_used
from recserve_serving.engine.manifest import MANIFEST_FILE, EngineManifest
from recserve_serving.errors import EngineError


def verify(directory: Path, manifest: EngineManifest) -> None:
    """Refuse an engine whose files differ from the manifest (changed, missing or added)."""
    actual = file_digests(directory, exclude=frozenset({MANIFEST_FILE}))
    changed = sorted(p for p in manifest.files if p in actual and actual[p] != manifest.files[p])
    missing = sorted(set(manifest.files) - set(actual))
    added = sorted(set(actual) - set(manifest.files))
    if changed or missing or added:
        details = "; ".join(
            f"{label}: {', '.join(paths)}"
            for label, paths in (("changed", changed), ("missing", missing), ("unexpected", added))
            if paths
        )
        raise EngineError(f"engine {directory} does not match its manifest ({details}); rebuild it")


def _backend(name: str) -> type[Engine] | None:
    """The runtime class of a backend, imported only when an engine of it is loaded."""
    if name == "onnxruntime":
        from recserve_serving.engine.ort import OrtEngine

        return OrtEngine
    if name == "torch":
        from recserve_serving.engine.torch_backend import TorchEngine

        return TorchEngine
    if name == "tensorrt":
        from recserve_serving.engine.tensorrt import TensorRTEngine

        return TensorRTEngine
    return None


def open_manifest(directory: str | os.PathLike[str]) -> tuple[Path, EngineManifest]:
    """An engine directory's manifest, once every file is checked against it. A pipeline's
    coordinator needs no more than this: its stages load the weights, on their own devices."""
    path = Path(directory)
    if not path.is_dir():
        raise EngineError(f"engine directory {path} does not exist")
    manifest = EngineManifest.read(path)
    verify(path, manifest)
    touch_used(path)
    return path, manifest


def load_engine(directory: str | os.PathLike[str], threads: int = DEFAULT_THREADS) -> Engine:
    """Open a built engine directory after checking every file's digest; CPU backends run
    ``threads`` intra-op threads."""
    path, manifest = open_manifest(directory)
    backend = _backend(manifest.backend)
    if backend is None:
        raise EngineError(f"engine {path} needs backend {manifest.backend!r}, not available here")
    return backend(path, manifest, threads)
