"""From a recommend request to the texts the ranker scores, and back to a ranked answer.

Kept free of Ray so that it is unit-tested directly; the router only adds version choice
and the remote call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recserve_serving.diversity import mmr
from recserve_serving.errors import InvalidRequest
from recserve_serving.fusion import FusionHead
from recserve_serving.serve.api_models import (
    ExternalId,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
)
from recserve_serving.serve.catalog import Catalog
from recserve_serving.serve.config import RouterConfig
from recserve_serving.serve.explain import require_explain
from recserve_serving.serving_spec import DiversitySpec


@dataclass(frozen=True)
class RecommendationPlan:
    user_id: ExternalId | None
    history: list[int]
    """The liked item codes the user's text was built from, oldest first: what reasons come from."""
    user_text: str
    item_ids: list[int]
    """The candidates' item codes."""
    external_ids: list[ExternalId]
    """The candidates' ids as the platform writes them: what the answer carries."""
    user_texts: list[str]
    item_texts: list[str]
    titles: list[str]
    k: int
    features: np.ndarray | None = None
    """The candidates' retrieval features (``hybrid.FEATURES``), for the ranker's fusion head."""
    diversity: DiversitySpec | None = None
    """spec.serving.retrieval.diversity: when set, the top k is re-ranked by MMR."""
    vectors: np.ndarray | None = None
    """The candidates' L2-normalised item embeddings, row i for item_ids[i]; only with diversity."""

    def respond(
        self, scores: list[float], version: str, fusion: FusionHead | None = None
    ) -> RecommendResponse:
        """The top k: by score, or by MMR over the best ``pool`` scores. With the ranker's
        fusion head, the score is the head's blend of the ranker's score and the retrieval
        features; each item carries the score it was ranked by."""
        if fusion is not None and self.features is not None and len(scores):
            scores = [float(s) for s in fusion.apply(np.asarray(scores), self.features)]
        order = self._order(scores)
        items = [
            RecommendedItem(item_id=self.external_ids[i], title=self.titles[i], score=scores[i])
            for i in order
        ]
        return RecommendResponse(user_id=self.user_id, version=version, items=items)

    def codes_of(self, items: Sequence[RecommendedItem]) -> list[int]:
        """The item codes of answered items, which carry the platform's ids."""
        code = dict(zip(self.external_ids, self.item_ids, strict=True))
        return [code[item.item_id] for item in items]

    def _order(self, scores: list[float]) -> list[int]:
        by_score = sorted(range(len(scores)), key=lambda i: -scores[i])
        if self.diversity is None or self.vectors is None:
            return by_score[: self.k]
        pool = by_score[: max(self.diversity.pool or len(scores), self.k)]
        picked = mmr(np.asarray(scores)[pool], self.vectors[pool], self.k, self.diversity.lambda_)
        return [pool[i] for i in picked]


def _k(request: RecommendRequest, config: RouterConfig) -> int:
    k = config.retrieval.default_k if request.k is None else request.k
    if not 1 <= k <= config.retrieval.max_k:
        raise InvalidRequest(f"k must be between 1 and {config.retrieval.max_k}, got {k}")
    return k


def plan_recommendation(
    request: RecommendRequest, catalog: Catalog, config: RouterConfig
) -> RecommendationPlan:
    k = _k(request, config)
    if request.explain:
        require_explain(config.explain)
    history = None
    if request.history is not None:
        if not request.history:
            raise InvalidRequest("history is empty; omit it to use the stored history of user_id")
        # Documented behaviour: only the most recent max_history items are read.
        history = catalog.codes(request.history[-config.max_history :], "history")
    past = catalog.past(request.user_id)
    user_text = catalog.user_text(request.user_id, history, past)
    seen = set(history or ())
    if past is not None:
        seen |= past.seen
    if request.exclude:
        seen |= set(catalog.codes(request.exclude, "exclude"))
    liked = catalog.history(request.user_id, history, past)
    if request.candidates is not None:
        if not request.candidates:
            raise InvalidRequest("candidates is empty; omit it to let retrieval choose")
        if len(request.candidates) > config.retrieval.candidates:
            raise InvalidRequest(
                f"at most {config.retrieval.candidates} candidates, got {len(request.candidates)}"
            )
        given = catalog.codes(request.candidates, "candidates")
        item_ids, features = catalog.retrieve(liked, seen, 0, list(dict.fromkeys(given)))
    else:
        item_ids, features = catalog.retrieve(liked, seen, config.retrieval.candidates)
    diversity = config.retrieval.diversity
    return RecommendationPlan(
        user_id=request.user_id,
        history=liked,
        user_text=user_text,
        item_ids=item_ids,
        external_ids=[catalog.item_id(m) for m in item_ids],
        user_texts=[user_text] * len(item_ids),
        item_texts=[catalog.item_text(m) for m in item_ids],
        titles=[catalog.title(m) for m in item_ids],
        k=min(k, len(item_ids)),
        features=features,
        diversity=diversity,
        vectors=None if diversity is None else catalog.item_vectors(item_ids),
    )
