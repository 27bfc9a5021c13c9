"""``Engine``, the interface every backend implements.

It lives apart from ``runtime`` because ``runtime`` imports the backends to load them: a
backend importing ``runtime`` back would be a cycle.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from recserve_serving.engine.manifest import EngineManifest
from recserve_serving.errors import CheckpointError, EngineError, InvalidRequest
from recserve_serving.tokens import encode, load_tokenizer

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
