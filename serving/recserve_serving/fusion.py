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
    ranker_scores: np.ndarray,
    matrix: np.ndarray,
    labels: np.ndarray,
    *,
    c: float = 1.0,
) -> FusionHead:
    """Logistic regression of relevance on the standardised ranker score and features.

    Fitted on users the encoder was not trained on, so the ranker's weight reflects how well
    it generalises rather than how well it remembers.
    """
    from sklearn.linear_model import LogisticRegression

    ranker = np.asarray(ranker_scores, dtype=np.float64)
    ranker_mean, ranker_std = float(ranker.mean()), float(ranker.std() or 1.0)
    mean = matrix.mean(0)
    std = np.where(matrix.std(0) > 0, matrix.std(0), 1.0)
    inputs = np.column_stack([(ranker - ranker_mean) / ranker_std, (matrix - mean) / std])
    model = LogisticRegression(C=c, max_iter=5000).fit(inputs, labels)
    coef = model.coef_.ravel()
    return FusionHead(
        features=features,
        mean=tuple(float(x) for x in mean),
        std=tuple(float(x) for x in std),
        weights=tuple(float(x) for x in coef[1:]),
        ranker_weight=float(coef[0]),
        ranker_mean=ranker_mean,
        ranker_std=ranker_std,
    )
