"""``recserve eval``'s engine: the protocol's split, every method on it, one report.

The served pipeline is evaluated through the router's own request planning
(``plan_recommendation``) with the chosen ranker, so the offline figure is what
``/v1/recommend`` would return; ``--endpoint`` sends the same requests over HTTP to a live
router, so the figure is what a running server does return.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recserve_serving.collaborative import AlsSettings, ItemKnn, fit_als, interaction_matrix
from recserve_serving.data import Dataset
from recserve_serving.errors import RecserveError
from recserve_serving.fusion import FusionHead
from recserve_serving.hybrid import DEFAULT_ALS
from recserve_serving.quality import methods as mt
from recserve_serving.quality.metrics import ndcg_at
from recserve_serving.quality.report import EvalReport, ItemSpace, MethodResult, run_method
from recserve_serving.quality.split import EvalUser, ProtocolSplit, protocol_split, validation_split
from recserve_serving.serve.api_models import RecommendRequest
from recserve_serving.serve.catalog import Catalog, interaction_snapshot
from recserve_serving.serve.config import MAX_REQUEST_HISTORY, RouterConfig
from recserve_serving.serve.recommend import plan_recommendation
from recserve_serving.serving_spec import DiversitySpec

log = logging.getLogger(__name__)

ALS_GRID = tuple(
    AlsSettings(factors=f, regularization=r, alpha=a)
    for f in (32, 64, 128)
    for r in (1.0, 10.0, 30.0)
    for a in (1.0, 10.0)
)
SCORE_CHUNK = 256


@dataclass(frozen=True)
class RankerUnderTest:
    """A ranker as the router would serve it: its pair scorer and its fusion head, if any."""

    label: str
    scorer: mt.PairScorer
    fusion: FusionHead | None = None


@dataclass(frozen=True)
class EvalOptions:
    users: int | None = 200
    """Test users sampled (all of them when None); every method ranks the same users."""
    seed: int = 0
    tune_als: bool = True
    progress: bool = True


def chunked(scorer: mt.PairScorer) -> mt.PairScorer:
    def score(users: list[str], items: list[str]) -> np.ndarray:
        parts = [
            scorer(users[i : i + SCORE_CHUNK], items[i : i + SCORE_CHUNK])
            for i in range(0, len(users), SCORE_CHUNK)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    return score


def item_space(data: Dataset, catalog: Catalog, split: ProtocolSplit) -> ItemSpace:
    counts = split.snapshot.groupby("item").size()
    return ItemSpace(
        item_ids=catalog.retriever.item_ids,
        genres={int(x): frozenset(data.categories(int(x))) for x in data.item_ids},
        vectors=catalog.index.vectors,
        counts={int(k): int(v) for k, v in counts.items()},
        snapshot_users=int(split.snapshot.user.nunique()),
    )


def _warm_user_factors(
    split: ProtocolSplit, catalog_ids: np.ndarray, settings: AlsSettings
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    matrix, users = interaction_matrix(
        split.snapshot.user.to_numpy(), split.snapshot.item.to_numpy(), catalog_ids
    )
    user_factors, item_factors = fit_als(matrix, settings, seed=split.seed)
    return {int(u): user_factors[i] for i, u in enumerate(users)}, item_factors


def _counts(split: ProtocolSplit, catalog_ids: np.ndarray) -> np.ndarray:
    counts = split.snapshot.groupby("item").size()
    return np.array([counts.get(int(x), 0) for x in catalog_ids], dtype=np.float32)


def als_method(split: ProtocolSplit, catalog_ids: np.ndarray, settings: AlsSettings) -> mt.ScoreMethod:
    factors, items = _warm_user_factors(split, catalog_ids, settings)
    return mt.als(catalog_ids, factors, items, settings, _counts(split, catalog_ids))


def tune_als(
    split: ProtocolSplit, catalog_ids: np.ndarray, *, progress: bool
) -> tuple[AlsSettings, dict[str, float]]:
    """The ALS setting with the best warm-user NDCG@10 on the validation slice (never the test side)."""
    from tqdm import tqdm

    validation = validation_split(split)
    scores: dict[str, float] = {}
    best, best_ndcg = DEFAULT_ALS, -1.0
    for settings in tqdm(ALS_GRID, desc="tuning ALS on validation", disable=not progress, leave=False):
        method = als_method(validation, catalog_ids, settings)
        warm = [u for u in validation.users if not u.cold]
        ndcg = float(np.mean([ndcg_at(method.rank(u).items, u.relevant) for u in warm]))
        scores[settings.describe()] = ndcg
        if ndcg > best_ndcg:
            best, best_ndcg = settings, ndcg
    return best, scores


def baselines(
    split: ProtocolSplit, catalog: Catalog, *, tune: bool, progress: bool
) -> tuple[list[mt.Method], dict[str, object]]:
    ids = catalog.retriever.item_ids
    notes: dict[str, object] = {}
    settings = DEFAULT_ALS
    if tune:
        settings, grid = tune_als(split, ids, progress=progress)
        notes["als_validation_ndcg@10"] = grid
    notes["als_settings"] = settings.describe()
    collaborative = catalog.retriever.collaborative
    counts = _counts(split, ids)
    return [
        mt.most_popular(ids, counts),
        als_method(split, ids, settings),
        mt.item_knn(ids, ItemKnn(collaborative.knn_indices, collaborative.knn_sims), counts),
        mt.hybrid_retrieval(catalog.retriever),
    ], notes


class ServedPipeline:
    """The router's request planning and a ranker, in-process: what ``/v1/recommend`` returns."""

    def __init__(
        self,
        name: str,
        catalog: Catalog,
        config: RouterConfig,
        scorer: mt.PairScorer,
        fusion: FusionHead | None = None,
    ) -> None:
        self.name = name
        self.catalog = catalog
        self.config = config
        self.scorer = chunked(scorer)
        self.fusion = fusion

    def rank(self, user: EvalUser) -> mt.Ranked:
        request = RecommendRequest(**external_request(self.catalog, user))
        plan = plan_recommendation(request, self.catalog, self.config)
        scores = self.scorer(plan.user_texts, plan.item_texts)
        response = plan.respond([float(s) for s in scores], "eval", self.fusion)
        return mt.Ranked(plan.codes_of(response.items), plan.item_ids)


def external_request(catalog: Catalog, user: EvalUser) -> dict[str, Any]:
    """A held-out user's request body, in the platform's ids as a client would send it."""
    return {
        "history": [catalog.item_id(m) for m in user.history],
        "exclude": [catalog.item_id(m) for m in sorted(user.seen)],
        "k": 10,
    }


class EndpointPipeline:
    """The same requests sent to a live router: retrieval depth is not visible, so no recall."""

    def __init__(self, url: str, catalog: Catalog, *, timeout: float = 60.0) -> None:
        import httpx

        self.catalog = catalog
        self.name = f"served endpoint {url}"
        self.url = url.rstrip("/") + "/v1/recommend"
        self.client = httpx.Client(timeout=timeout)

    def rank(self, user: EvalUser) -> mt.Ranked:
        answer = self.client.post(self.url, json=external_request(self.catalog, user))
        if answer.status_code != 200:
            raise RecserveError(
                f"{self.url} answered {answer.status_code} for a held-out user's request: {answer.text[:300]}"
            )
        return mt.Ranked(
            self.catalog.codes([item["item_id"] for item in answer.json()["items"]], "items"), []
        )


def content_pipeline(data: Dataset, catalog: Catalog, scorer: mt.PairScorer) -> mt.TwoStage:
    return mt.TwoStage(
        "content-only retrieval + ranker (before hybrid)",
        mt.content_retrieval(catalog.index),
        lambda user: data.user_text(None, history=list(user.history)[-MAX_REQUEST_HISTORY:]),
        data.item_text,
        chunked(scorer),
    )


def served_variants(setup_: Setup, ranker: RankerUnderTest, lambdas: Sequence[float]) -> list[mt.Method]:
    """The served pipeline as configured by default, and with MMR diversity at each λ.

    The ranker's scores do not depend on λ, so every variant re-ranks one cached scoring."""
    base = RouterConfig(model_name="eval", index_dir="-")
    head = "" if ranker.fusion is None else " + fusion head"
    cached = cache_scores(ranker.scorer)
    variants: list[mt.Method] = [
        ServedPipeline(f"served: hybrid + {ranker.label}{head}", setup_.catalog, base, cached, ranker.fusion)
    ]
    for lam in lambdas:
        retrieval = base.retrieval.model_copy(update={"diversity": DiversitySpec(lambda_=lam)})
        config = base.model_copy(update={"retrieval": retrieval})
        variants.append(
            ServedPipeline(f"served, MMR lambda={lam:g}", setup_.catalog, config, cached, ranker.fusion)
        )
    return variants


def cache_scores(scorer: mt.PairScorer) -> mt.PairScorer:
    """A scorer that remembers (user text, item text) scores: variants of one pipeline share them."""
    memory: dict[tuple[str, str], float] = {}

    def score(users: list[str], items: list[str]) -> np.ndarray:
        missing = [(u, i) for u, i in zip(users, items, strict=True) if (u, i) not in memory]
        if missing:
            fresh = chunked(scorer)([u for u, _ in missing], [i for _, i in missing])
            memory.update(zip(missing, (float(x) for x in fresh), strict=True))
        return np.array([memory[(u, i)] for u, i in zip(users, items, strict=True)], dtype=np.float32)

    return score


@dataclass
class Setup:
    data: Dataset
    split: ProtocolSplit
    catalog: Catalog
    space: ItemSpace


def setup(data: Dataset, index_dir: Path, options: EvalOptions) -> Setup:
    split = protocol_split(data.interactions)
    catalog = Catalog.open(data, index_dir)
    if len(interaction_snapshot(data)) != len(split.snapshot):
        raise RecserveError(
            "the served snapshot and the evaluation split differ; they must be one construction"
        )
    return Setup(
        data, split.sample(options.users, seed=options.seed), catalog, item_space(data, catalog, split)
    )


def evaluate(
    setup_: Setup,
    options: EvalOptions,
    *,
    ranker: RankerUnderTest | None = None,
    endpoint: str | None = None,
    baselines_too: bool = True,
    content_too: bool = True,
    diversity: Sequence[float] = (),
    extra: Callable[[Setup], list[mt.Method]] | None = None,
) -> EvalReport:
    """Every requested method on the same sampled users, in one report."""
    started = time.perf_counter()
    methods: list[mt.Method] = []
    notes: dict[str, object] = {}
    if baselines_too:
        found, notes = baselines(
            setup_.split, setup_.catalog, tune=options.tune_als, progress=options.progress
        )
        methods.extend(found)
    if ranker is not None:
        if content_too:
            methods.append(content_pipeline(setup_.data, setup_.catalog, ranker.scorer))
        methods.extend(served_variants(setup_, ranker, diversity))
    if extra is not None:
        methods.extend(extra(setup_))
    if endpoint is not None:
        methods.append(EndpointPipeline(endpoint, setup_.catalog))
    results: list[MethodResult] = []
    for method in methods:
        results.append(run_method(method, setup_.split, setup_.space, progress=options.progress))
        log.info("%s: %.1fs", method.name, results[-1].seconds)
    notes["seconds"] = round(time.perf_counter() - started, 1)
    return EvalReport(setup_.split.describe(), results, notes)


def served_metrics(
    ranker: RankerUnderTest, data: Dataset, index_dir: Path, users: int, *, seed: int = 0
) -> dict[str, float]:
    """The served pipeline's NDCG@10 and genre diversity on ``users`` protocol users: what the
    engine gate and the engine benchmark put next to the teacher's."""
    context = setup(data, index_dir, EvalOptions(users=users, seed=seed, progress=False))
    (method,) = served_variants(context, ranker, ())
    cohort = run_method(method, context.split, context.space, progress=False).cohorts["all"]
    return {"served_ndcg@10": cohort["ndcg@10"], "served_diversity": cohort["ild_genres"]}
