"""``Engine``, the interface every backend implements.

It lives apart from ``runtime`` because ``runtime`` imports the backends to load them: a
backend importing ``runtime`` back would be a cycle.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np

from recserve_serving.engine.manifest import EngineManifest
from recserve_serving.errors import CheckpointError, EngineError, InvalidRequest
from recserve_serving.tokens import (
    DEFAULT_ITEM_MAX_LEN,
    PrefixTokenizer,
    encode,
    layout_prefix,
    layout_users,
    load_tokenizer,
)

PREFIX_CHUNK = 32
"""Candidates per call of a prefix-shaped engine's candidate pass. Measured on 2 cores (ORT INT8,
200 candidates of one user): chunks of 32 took 0.44 s, one call of 200 took 1.14 s, because the
attention tensors of a small chunk stay in cache. The user pass runs once for all chunks."""

DEFAULT_THREADS = 2
"""Threads of an engine loaded outside a Serve replica (the build gate, benchmarks). A replica
runs as many as its spec's ``resources.cpus`` reserves (``RankerArgs.threads``)."""


class Engine(abc.ABC):
    """Scores (user text, item text) pairs; higher means more likely to be liked."""

    def __init__(self, directory: Path, manifest: EngineManifest, threads: int = DEFAULT_THREADS) -> None:
        self.directory = directory
        self.manifest = manifest
        self.threads = threads
        self._prefix_tokenizer: PrefixTokenizer | None = None
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
        if self.manifest.model_shape == "prefix":
            return self._score_prefix(list(user_texts), list(item_texts))
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

    def _score_prefix(self, user_texts: list[str], item_texts: list[str]) -> np.ndarray:
        """Each distinct user through the user pass once; then their candidates in chunks of
        similar token length, each chunk reading its users' cached states.

        Sorting by (user, item length) keeps a chunk's padding small and its users few.
        """
        tokens = self._prefix_tokens()
        users = list(dict.fromkeys(user_texts))
        row_of = {text: row for row, text in enumerate(users)}
        user_ids = tokens.users(users)
        rows = [row_of[text] for text in user_texts]
        items = tokens.items(item_texts)
        states = self._user_states(*layout_users(user_ids, tokens.pad))
        order = sorted(range(len(rows)), key=lambda i: (rows[i], len(items[i])))
        step = min(PREFIX_CHUNK, self.max_batch_size)
        scores = np.zeros(len(rows), dtype=np.float32)
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            local = list(dict.fromkeys(rows[i] for i in chunk))
            local_row = {row: n for n, row in enumerate(local)}
            encoded = layout_prefix(
                [user_ids[row] for row in local],
                [local_row[rows[i]] for i in chunk],
                [items[i] for i in chunk],
                tokens.pad,
            )
            width = encoded["user_mask"].shape[1]
            chunk_states = [state[local][:, :, :width] for state in states]
            scores[chunk] = np.asarray(
                self._candidate_scores(encoded, chunk_states), dtype=np.float32
            ).reshape(-1)
        return scores

    def _user_states(self, user_ids: np.ndarray, user_mask: np.ndarray) -> list[Any]:
        """Per layer the users' keys then values ([U, H, Lu, D], in the backend's own arrays)."""
        raise EngineError(f"backend {self.manifest.backend} cannot run prefix-shaped engines")

    def _candidate_scores(self, encoded: dict[str, np.ndarray], states: list[Any]) -> np.ndarray:
        """One score per ``encoded["pair_slots"]`` entry, from the chunk's users' ``states``."""
        raise EngineError(f"backend {self.manifest.backend} cannot run prefix-shaped engines")

    def _prefix_tokens(self) -> PrefixTokenizer:
        if self._prefix_tokenizer is None:
            item_max = self.manifest.item_max_length or DEFAULT_ITEM_MAX_LEN
            self._prefix_tokenizer = PrefixTokenizer(
                self.tokenizer, self.manifest.max_sequence_length, item_max
            )
        return self._prefix_tokenizer

    @abc.abstractmethod
    def _run(self, encoded: dict[str, np.ndarray]) -> np.ndarray: ...
