"""The retrieval stage: cheap candidates so the cross-encoder never scores the whole catalog.

Items are embedded once with the bundled all-MiniLM-L6-v2 sentence encoder (mean pooling,
normalised), which is what that model was trained for; a user is the mean of the
embeddings of what they liked, most recent first weighted higher, so a request costs one
small matrix product and no encoder call. The index is cached on disk, keyed by the
catalog files and the encoder, and reused by every replica and restart. Building it takes
torch; reading it takes numpy only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from recserve_serving.errors import RecserveError
from recserve_serving.paths import base_model_path

INDEX_FORMAT = 1
_ENCODE_BATCH = 64
_ENCODE_MAX_LEN = 48
RECENCY_DECAY = 0.9


def index_key(item_texts: dict[int, str]) -> str:
    """The index's content address: the texts it embeds (by item code) and the encoder."""
    digest = hashlib.sha256(f"recserve-retrieval-v{INDEX_FORMAT}".encode())
    for item in sorted(item_texts):
        digest.update(f"{item}\t{item_texts[item]}\n".encode())
    digest.update((base_model_path() / "model.safetensors").read_bytes()[: 1 << 20])
    return digest.hexdigest()


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """Normalised mean-pooled MiniLM sentence embeddings (float32, [n, 384])."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = base_model_path()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # the base checkpoint's unused pooler is expected, not news
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), _ENCODE_BATCH):
            batch = tokenizer(
                list(texts[start : start + _ENCODE_BATCH]),
                truncation=True,
                max_length=_ENCODE_MAX_LEN,
                padding=True,
                return_tensors="pt",
            )
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(chunks).astype(np.float32)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ItemIndex:
    """Item ids and their embeddings, with inner-product search for a user's history."""

    def __init__(self, item_ids: np.ndarray, vectors: np.ndarray) -> None:
        self.item_ids = item_ids
        self.vectors = vectors
        self.row = {int(m): i for i, m in enumerate(item_ids)}

    def user_vector(self, history: Sequence[int]) -> np.ndarray | None:
        """Recency-weighted mean of the liked items' vectors (history is oldest first)."""
        rows = [self.row[m] for m in history if m in self.row]
        if not rows:
            return None
        weights = RECENCY_DECAY ** np.arange(len(rows))[::-1]
        vector = (self.vectors[rows] * weights[:, None]).sum(0)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else None

    def search(self, history: Sequence[int], exclude: set[int], n: int) -> list[int]:
        """The ``n`` items closest to the user's history, never one in ``exclude``."""
        vector = self.user_vector(history)
        if vector is None:
            return []
        scores = self.vectors @ vector
        take = min(len(scores), n + len(exclude))
        top = np.argpartition(-scores, take - 1)[:take]
        ordered = top[np.argsort(-scores[top])]
        picked = [int(self.item_ids[i]) for i in ordered if int(self.item_ids[i]) not in exclude]
        return picked[:n]


def build_once(path: Path, what: str, needs: str, build: Callable[[], None]) -> None:
    """Run ``build`` to create ``path`` under a file lock, unless it exists.

    Only build steps may build (they have ``needs``: torch, implicit); a router, whose image has
    neither, must find the file there, written by a build Job into the artifact store."""
    if path.exists():
        return
    if importlib.util.find_spec(needs) is None:
        raise RecserveError(
            f"the {what} {path} is missing, and this installation cannot build it ({needs} is not "
            "installed, as in the serving image): a build Job writes it (`recserve build --index-dir "
            f"DIR`), or run that where {needs} is installed"
        )
    with locked(path):
        if not path.exists():
            build()


def index_path(index_dir: Path, item_texts: dict[int, str]) -> Path:
    """Where this catalog's index lives in ``index_dir`` (its name is its key)."""
    return Path(index_dir) / f"items-{index_key(item_texts)[:32]}.npz"


def load_or_build_index(index_dir: Path, item_texts: dict[int, str]) -> ItemIndex:
    """This catalog's index from ``index_dir``, built there (under a file lock) if missing.

    An index already there is read without the lock: it is written under a temporary name and
    renamed into place, so a reader never sees part of one, and a read-only directory works.
    That is how routers in a cluster read it: build Jobs write it into the artifact store
    (``recserve build --index-dir``), which serving pods mount read-only, because building it
    takes torch and the serving image has none.
    """
    path = index_path(index_dir, item_texts)

    def build() -> None:
        ids = np.array(sorted(item_texts), dtype=np.int64)
        vectors = embed_texts([item_texts[int(i)] for i in ids])
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(temp, item_ids=ids, vectors=vectors)
        os.replace(temp, path)

    build_once(path, "retrieval index", "torch", build)
    with np.load(path) as stored:
        return ItemIndex(stored["item_ids"], stored["vectors"])
