"""The ranker's fusion head: the cross-encoder's score combined with the retrieval stage's signal.

A text cross-encoder reads titles, genres and tags; it cannot know what people with the same
taste watched, which is what the collaborative stages measure. Rather than make the encoder
rediscover that from text, a small linear head adds the retrieval features (see
``hybrid.FEATURES``) to its logit, with weights fitted on the validation slice. The head
travels with the checkpoint (``fusion.json``) into every engine built from it, and the
router applies it: engines stay pure text-pair scorers, so every backend keeps working.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recserve_serving.errors import CheckpointError

FUSION_FILE = "fusion.json"


@dataclass(frozen=True)
class FusionHead:
    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]
    ranker_weight: float
    ranker_mean: float
    ranker_std: float

    def apply(self, ranker_scores: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Final scores: a weighted sum of the standardised ranker score and features."""
        ranker = (np.asarray(ranker_scores, dtype=np.float64) - self.ranker_mean) / self.ranker_std
        standard = (np.asarray(features, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.std)
        fused: np.ndarray = self.ranker_weight * ranker + standard @ np.asarray(self.weights)
        return fused

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> FusionHead:
        try:
            head = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})  # type: ignore[arg-type]
        except TypeError as error:
            raise CheckpointError(f"{FUSION_FILE} is not a fusion head: {error}") from None
        if not len(head.features) == len(head.mean) == len(head.std) == len(head.weights):
            raise CheckpointError(f"{FUSION_FILE}: features, mean, std and weights differ in length")
        return head

    def write(self, directory: Path) -> None:
        (Path(directory) / FUSION_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def read_fusion(directory: Path) -> FusionHead | None:
    """The head of a checkpoint or engine directory; None for a plain text ranker."""
    path = Path(directory) / FUSION_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from None
    return FusionHead.from_dict(raw)


def fit_fusion(
    features: tuple[str, ...],
    ranker_scores: list[np.ndarray],
    matrices: list[np.ndarray],
    labels: list[np.ndarray],
    *,
    steps: int = 300,
    l2: float = 1e-3,
    seed: int = 0,
) -> FusionHead:
    """A linear head fitted listwise: softmax cross-entropy of each user's relevant candidates
    against the rest of that user's list, the ranking the metrics measure.

    A pointwise fit (logistic regression over all pairs) learns who has many relevant items
    rather than which item comes first for a user, and was measured to rank worse than the
    retrieval order it started from. Fitted on users the encoder was not trained on, so the
    ranker's weight reflects how well it generalises rather than how well it remembers.
    """
    import torch

    ranker = np.concatenate(ranker_scores).astype(np.float64)
    stacked = np.concatenate(matrices)
    ranker_mean, ranker_std = float(ranker.mean()), float(ranker.std() or 1.0)
    mean = stacked.mean(0)
    std = np.where(stacked.std(0) > 0, stacked.std(0), 1.0)
    lists = [
        (
            torch.tensor(
                np.column_stack([(r - ranker_mean) / ranker_std, (m - mean) / std]), dtype=torch.float32
            ),
            torch.tensor(y, dtype=torch.float32),
        )
        for r, m, y in zip(ranker_scores, matrices, labels, strict=True)
        if y.any() and not y.all()
    ]
    if not lists:
        raise ValueError("no list has both a relevant and a non-relevant candidate to fit the fusion head on")
    torch.manual_seed(seed)
    weights = torch.zeros(stacked.shape[1] + 1, requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = l2 * (weights**2).sum()
        for inputs, relevant in lists:
            log_probs = torch.log_softmax(inputs @ weights, dim=0)
            loss = loss - (log_probs * relevant).sum() / relevant.sum() / len(lists)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    coef = weights.detach().numpy().astype(np.float64)
    return FusionHead(
        features=features,
        mean=tuple(float(x) for x in mean),
        std=tuple(float(x) for x in std),
        weights=tuple(float(x) for x in coef[1:]),
        ranker_weight=float(coef[0]),
        ranker_mean=ranker_mean,
        ranker_std=ranker_std,
    )


def retrieval_order_head(features: tuple[str, ...], rank_feature: str = "log_rank") -> FusionHead:
    """The head that keeps the retrieval order (a falling weight on the rank) and ignores the ranker."""
    weights = tuple(-1.0 if name == rank_feature else 0.0 for name in features)
    ones = tuple(1.0 for _ in features)
    zeros = tuple(0.0 for _ in features)
    return FusionHead(features, zeros, ones, weights, ranker_weight=0.0, ranker_mean=0.0, ranker_std=1.0)
