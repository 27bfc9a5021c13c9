"""The one runtime interface: ``load_engine(dir).score(user_texts, item_texts)``.

Every backend (ONNX Runtime, torch, TensorRT) sits behind ``Engine``, so the serving app
never knows which one it runs. Loading verifies every file against the manifest first: an
engine whose bytes differ from what was built and gated is refused, not served.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

import numpy as np

from recserve_serving.engine.digests import file_digests
from recserve_serving.engine.gc import touch_used
from recserve_serving.engine.manifest import MANIFEST_FILE, EngineManifest
from recserve_serving.errors import CheckpointError, EngineError, InvalidRequest
from recserve_serving.model import encode, load_tokenizer

DEFAULT_THREADS = 2
"""Threads of an engine loaded outside a Serve replica (the build gate, benchmarks). A replica
runs as many as its spec's ``resources.cpus`` reserves (``RankerArgs.threads``)."""


class Engine(abc.ABC):
    """Scores (user text, item text) pairs; higher means more likely to be liked."""

    def __init__(self, directory: Path, manifest: EngineManifest, threads: int = DEFAULT_THREADS) -> None:
        self.directory = directory
        self.manifest = manifest
        self.threads = threads
        try:
            self.tokenizer = load_tokenizer(directory)
        except CheckpointError as error:
            raise EngineError(str(error)) from None

    @property
    def name(self) -> str:
        m = self.manifest
        version = f"/{m.checkpoint.version}" if m.checkpoint.version else ""
        return f"{m.checkpoint.name}{version}:{m.backend}-{m.precision}:{m.key[:12]}"

    @property
    def max_batch_size(self) -> int:
        return self.manifest.recipe.max_batch_size

    def score(self, user_texts: list[str], item_texts: list[str]) -> np.ndarray:
        """float32 scores, one per pair; batches above maxBatchSize are split, not refused."""
        if len(user_texts) != len(item_texts):
            raise InvalidRequest(f"{len(user_texts)} user texts but {len(item_texts)} item texts")
        if not user_texts:
            return np.zeros(0, dtype=np.float32)
        step = self.max_batch_size
        parts = []
        for start in range(0, len(user_texts), step):
            encoded = encode(
                self.tokenizer,
                list(user_texts[start : start + step]),
                list(item_texts[start : start + step]),
                self.manifest.max_sequence_length,
            )
            parts.append(np.asarray(self._run(encoded), dtype=np.float32).reshape(-1))
        return np.concatenate(parts)

    @abc.abstractmethod
    def _run(self, encoded: dict[str, np.ndarray]) -> np.ndarray: ...


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


def load_engine(directory: str | os.PathLike[str], threads: int = DEFAULT_THREADS) -> Engine:
    """Open a built engine directory after checking every file's digest; CPU backends run
    ``threads`` intra-op threads."""
    path = Path(directory)
    if not path.is_dir():
        raise EngineError(f"engine directory {path} does not exist")
    manifest = EngineManifest.read(path)
    verify(path, manifest)
    touch_used(path)
    backend = _backend(manifest.backend)
    if backend is None:
        raise EngineError(f"engine {path} needs backend {manifest.backend!r}, not available here")
    return backend(path, manifest, threads)
