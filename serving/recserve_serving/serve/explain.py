"""Explanations at the router: which pairs to occlude for a request, and the answers built from them.

Two ways in, one mechanism (``occlusion``):

- ``/v1/recommend`` with ``"explain": true`` explains the top k it returns. The top k are known
  only after ranking, so explaining is a second ranker call per request, on the version that
  ranked: k × (1 + the left-out texts) pairs, one engine call (or one batch of it). Folding the
  occlusion into the ranking call would save the call but occlude every candidate: with 200
  candidates and five left-out texts, 1,200 more pairs instead of 60 at k=10.
- ``/v2/models/{name}/explain`` explains given items for one user in the Open Inference
  Protocol's shape. It is a single ranker call: the full-history pairs it scores for the
  contributions are also the scores it answers with.

Privacy: a reason is always a item of the history that the request's own user text was built
from (the request's ``history``, else the stored likes of its ``user_id``), never anyone
else's. Nothing here logs, so explanations never reach a log with raw ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kserve.protocol.rest.v2_datamodels import InferenceRequest, RequestInput

from recserve_serving.errors import InvalidRequest
from recserve_serving.serve.api_models import Explanation, Reason, RecommendedItem
from recserve_serving.serve.catalog import Catalog
from recserve_serving.serve.config import RouterConfig
from recserve_serving.serve.occlusion import Occlusion, because, plan_occlusion, top_reasons
from recserve_serving.serve.oip import check_text, id_data, inputs_by_name, show_value
from recserve_serving.serving_spec import ExplainSpec

EXPLAIN_INPUTS = ("item_id", "user_id", "history")


def require_explain(spec: ExplainSpec) -> None:
    """Refuse a request for reasons when the model's spec turns them off."""
    if not spec.enabled:
        raise InvalidRequest(
            "explanations are disabled for this model (spec.serving.explain.enabled is false); "
            'send the request without "explain", or enable them in the spec'
        )


def occlude(
    catalog: Catalog,
    user_id: int | str | None,
    history: Sequence[int],
    user_text: str,
    item_ids: Sequence[int],
    spec: ExplainSpec,
) -> Occlusion:
    """The occlusion of ``item_ids`` for the user whose text ``user_text`` was built from
    ``history``; each left-out text is built the way the catalog built the full one."""

    def without(left_out: int) -> str:
        return catalog.user_text(user_id, [m for m in history if m != left_out])

    item_texts = [catalog.item_text(m) for m in item_ids]
    return plan_occlusion(user_text, history, item_texts, without, spec.max_history)


def explanation(considered: Sequence[int], contributions: Sequence[float], catalog: Catalog) -> Explanation:
    reasons = [
        Reason(item_id=catalog.item_id(item), title=catalog.title(item), contribution=contribution)
        for item, contribution in top_reasons(considered, contributions)
    ]
    return Explanation(reasons=reasons, text=because([r.title for r in reasons]))


def explain_items(
    items: Sequence[RecommendedItem], occlusion: Occlusion, scores: Sequence[float], catalog: Catalog
) -> list[RecommendedItem]:
    """``items`` (in the order the occlusion was planned for) with their explanations."""
    rows = occlusion.contributions(scores)
    if len(rows) != len(items):
        raise ValueError(f"an occlusion of {len(rows)} items for {len(items)} recommended items")
    return [
        item.model_copy(update={"explanation": explanation(occlusion.considered, row, catalog)})
        for item, row in zip(items, rows, strict=True)
    ]


@dataclass(frozen=True)
class ExplainPairs:
    """A valid OIP explain request: one user's items and the occlusion that explains them."""

    user_id: int | str | None
    occlusion: Occlusion


def _one_user(inputs: dict[str, RequestInput]) -> int | str | None:
    if "user_id" not in inputs:
        return None
    users = id_data(inputs, "user_id")
    if len(users) != 1:
        raise InvalidRequest(
            f"input 'user_id': one user per explain request, shape [1], got shape [{len(users)}]"
        )
    return users[0]


def _history(inputs: dict[str, RequestInput], max_history: int) -> list[int | str] | None:
    if "history" not in inputs:
        return None
    history = id_data(inputs, "history")
    if not history:
        raise InvalidRequest("input 'history' is empty; omit it to use the stored history of user_id")
    # As in /v1/recommend: only the most recent max_history items are read.
    return history[-max_history:]


def explain_pairs(request: InferenceRequest, catalog: Catalog, config: RouterConfig) -> ExplainPairs:
    """The occlusion an OIP explain request asks for, or ``InvalidRequest`` naming what is wrong.

    Inputs: ``item_id`` (INT64/INT32, shape [n]) with ``user_id`` (shape [1]: the stored
    history) and/or ``history`` (liked item ids, oldest first, shape [h]).
    """
    require_explain(config.explain)
    inputs = inputs_by_name(request)
    if request.id is not None:
        check_text("id", request.id)
    unknown = sorted(set(inputs) - set(EXPLAIN_INPUTS))
    if unknown or "item_id" not in inputs:
        got = ", ".join(map(show_value, sorted(inputs))) or "none"
        raise InvalidRequest(
            "explain inputs are item_id (INT64, shape [n]) with user_id (INT64, shape [1]) "
            f"and/or history (INT64, shape [h]), got {got}"
        )
    asked = id_data(inputs, "item_id")
    if not asked:
        raise InvalidRequest("input 'item_id' is empty; name the items to explain")
    if len(asked) > config.max_infer_pairs:  # each item is at least one pair: refuse before any text
        raise InvalidRequest(
            f"at most {config.max_infer_pairs} pairs per request, and {len(asked)} items are more"
        )
    user_id = _one_user(inputs)
    history = _history(inputs, config.max_history)
    if user_id is None and history is None:
        raise InvalidRequest("give user_id (to use the stored history) or history (liked item ids)")
    items = catalog.codes(asked, "item_id")
    given = None if history is None else catalog.codes(history, "history")
    past = None if given is not None else catalog.past(user_id)  # one read of the history source
    user_text = catalog.user_text(user_id, given, past)
    liked = catalog.history(user_id, given, past)
    occlusion = occlude(catalog, user_id, liked, user_text, items, config.explain)
    pairs = occlusion.width * len(items)
    if pairs > config.max_infer_pairs:
        raise InvalidRequest(
            f"explaining {len(items)} items takes {pairs} pairs ({occlusion.width} each), over the "
            f"limit of {config.max_infer_pairs}; send fewer item_id values"
        )
    return ExplainPairs(user_id, occlusion)


def explain_response(
    model: str,
    version: str,
    request_id: str | None,
    occlusion: Occlusion,
    scores: Sequence[float],
    catalog: Catalog,
) -> dict[str, Any]:
    """The OIP answer: ``score`` [n] (with the whole history), ``history`` [m] (the items that can
    be reasons, most recent first), ``contribution`` [n, m] (row-major: the drop of item i's
    score when history item j is left out) and ``explanation`` [n] (the reasons in a line)."""
    rows = occlusion.contributions(scores)
    n, m = len(rows), len(occlusion.considered)
    lines = [explanation(occlusion.considered, row, catalog).text for row in rows]
    considered = [catalog.item_id(m) for m in occlusion.considered]
    strings = any(isinstance(m, str) for m in considered)
    return {
        "model_name": model,
        "model_version": version,
        "id": request_id or "",
        "outputs": [
            {"name": "score", "shape": [n], "datatype": "FP32", "data": occlusion.full_scores(scores)},
            {
                "name": "history",
                "shape": [m],
                "datatype": "BYTES" if strings else "INT64",
                "data": considered,
            },
            {
                "name": "contribution",
                "shape": [n, m],
                "datatype": "FP32",
                "data": [value for row in rows for value in row],
            },
            {"name": "explanation", "shape": [n], "datatype": "BYTES", "data": lines},
        ],
    }
