"""Ray Serve deployments: the router (HTTP ingress) and the ranker of each model version.

Each is built from its application's ``args`` alone, so that ``recserve up`` and KubeRay run
the very same thing. The router owns the catalog and retrieval and learns which ranker
applications to call from its ``user_config`` (a ``TrafficConfig``); the rankers own an
engine and nothing else, which keeps the expensive replicas small and lets each version
come and go as an application of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from recserve_serving.errors import InvalidRequest, NotFound, Overloaded, RecserveError, Unavailable
from recserve_serving.fusion import FusionHead, read_fusion
from recserve_serving.online.feedback_log import Compaction, FeedbackLog
from recserve_serving.online.maintenance import LogMaintenance
from recserve_serving.serve.api_models import RecommendRequest, RecommendResponse
from recserve_serving.serve.catalog import Catalog
from recserve_serving.serve.config import (
    RANKER_DEPLOYMENT,
    ROUTER_DEPLOYMENT,
    RankerArgs,
    Route,
    RouterConfig,
    TrafficConfig,
)
from recserve_serving.serve.erasure import ErasureResponse, erase_user
from recserve_serving.serve.explain import explain_items, explain_pairs, explain_response, occlude
from recserve_serving.serve.feedback import FeedbackRequest, FeedbackResponse, record_feedback
from recserve_serving.serve.frontdoor import FrontDoor, Gate, configure, mark_version
from recserve_serving.serve.http_errors import install_error_handlers
from recserve_serving.serve.metrics import ServingMetrics
from recserve_serving.serve.occlusion import Occlusion
from recserve_serving.serve.oip import check_text, infer_pairs, infer_response, model_metadata
from recserve_serving.serve.recommend import RecommendationPlan, plan_recommendation
from recserve_serving.serve.routing import choose_version
from recserve_serving.serve.scoring import score_each
from recserve_serving.serve.sources import open_catalog, router_pseudonyms

if TYPE_CHECKING:
    from recserve_serving.engine.base import Engine

log = logging.getLogger("recserve.serve")
ERASE_ROUTE = "/v1/users/{user_id:path}"
"""Any id, even one with a slash (sent as %2F): the path convertor takes the rest of the path."""

http_app = FastAPI(title="recserve", docs_url=None, redoc_url=None)
install_error_handlers(http_app)
http_app.add_middleware(FrontDoor)


def replica_died(error: BaseException) -> bool:
    """Whether a ranker call failed because its replica's process is gone or unreachable, not
    because of the request or the engine: only then can another replica answer differently.
    Ray raises the actor error itself, or a task error whose cause it is."""
    return isinstance(error, RayActorError) or isinstance(getattr(error, "cause", None), RayActorError)


@dataclass(frozen=True)
class Scored:
    """A ranker's answer: the scores, and how many requests shared the engine call."""

    scores: list[float]
    batch_size: int


class Ranker:
    """Scores (user text, item text) pairs with one engine, batching concurrent requests."""

    calls = 0
    """Scoring calls this replica has taken: the clock of a fault drill (``faultInjection``)."""

    def __init__(self, args: dict[str, Any]) -> None:
        from recserve_serving.engine.runtime import load_engine

        self.config = RankerArgs.model_validate(args)
        stages, threads = self.config.parallelism.pipeline, self.config.threads
        if stages > 1:
            from recserve_serving.engine.pipeline import PipelineEngine
            from recserve_serving.engine.runtime import open_manifest

            # The coordinator holds no GPU: it checks the files, and the stages load the weights.
            directory, manifest = open_manifest(self.config.engine_dir)
            self.engine: Engine = PipelineEngine(
                directory, manifest, stages, threads=threads, resources=self.config.stage_resources
            )
        else:
            self.engine = load_engine(self.config.engine_dir, threads)
        self.fusion = read_fusion(Path(self.config.engine_dir))
        batching = self.config.batching
        batcher: Any = self._score_batch  # serve.batch adds setters that its type does not declare
        batcher.set_max_batch_size(batching.max_batch_size)
        batcher.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    def ready(self) -> str:
        return self.config.label

    def fusion_head(self) -> dict[str, Any] | None:
        """The engine's fusion head (``fusion.json``), which the router applies to this ranker's scores."""
        return None if self.fusion is None else self.fusion.to_dict()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _score_batch(self, requests: list[tuple[list[str], list[str]]]) -> list[Scored | Exception]:
        results = await asyncio.to_thread(score_each, self.engine.score, requests)
        return [r if isinstance(r, Exception) else Scored(r, batch_size=len(requests)) for r in results]

    async def score(self, user_texts: list[str], item_texts: list[str]) -> Scored:
        """Scores of the pairs; a request the engine could not take is refused before it joins a
        batch, so that it cannot fail the requests batched with it."""
        if len(user_texts) != len(item_texts):
            raise InvalidRequest("user_texts and item_texts must have the same length")
        if not user_texts:
            return Scored([], batch_size=0)
        for name, texts in (("user_texts", user_texts), ("item_texts", item_texts)):
            for position, text in enumerate(texts):
                check_text(f"{name}[{position}]", text)
        fault = self.config.fault_injection
        self.calls += 1
        if fault is not None and fault.strikes(self.calls - 1):
            raise Unavailable(
                f"injected fault: {self.config.label} fails {fault.abort_percent:g}% of calls on purpose "
                "(spec.rollout.canary.faultInjection)"
            )
        result = await self._score_batch((user_texts, item_texts))
        if isinstance(result, Exception):
            raise result
        return result


def feedback_log(config: RouterConfig) -> FeedbackLog | None:
    """This replica's own writer of the model's interaction log (one per process, so replicas
    never share a file)."""
    directory = config.feedback_dir()
    if directory is None:
        return None
    writer = re.sub(r"[^A-Za-z0-9._-]", "-", f"router-{socket.gethostname()}-{os.getpid()}")
    return FeedbackLog(directory, writer)


class Router:
    """HTTP ingress: validation, retrieval, version choice, and the Open Inference Protocol."""

    def __init__(self, config: dict[str, Any], catalog: Catalog | None = None) -> None:
        """``catalog`` is loaded from the config's data when not given (Serve never gives one;
        in-process tests do, to check the HTTP behaviour without real data and its index)."""
        self.config = RouterConfig.model_validate(config)
        self.traffic = TrafficConfig()
        self.handles: dict[str, DeploymentHandle[Ranker]] = {}
        self.pseudonyms = router_pseudonyms(self.config)
        self.catalog = catalog or open_catalog(self.config, self.pseudonyms)
        self.rng = random.Random()
        self.metrics = ServingMetrics()
        configure(Gate(self.config.model_name, self.metrics, self.config.limits))
        self._background: set[asyncio.Task[None]] = set()
        self._fusion: dict[str, FusionHead | None] = {}
        self.feedback_log = feedback_log(self.config)
        self.log_maintenance = self._maintain(self.feedback_log)

    def _maintain(self, feedback: FeedbackLog | None) -> LogMaintenance | None:
        """Compact the model's log now and on the spec's schedule (``online/maintenance.py``)."""
        if feedback is None:
            return None
        spec, model = self.config.feedback_log, self.config.model_name
        compacted = self.metrics.feedback_compacted

        def count(done: Compaction) -> None:  # holds no reference to the router, so it can be collected
            compacted.labels(model, "erased").inc(done.removed)
            compacted.labels(model, "expired").inc(done.expired)

        return LogMaintenance(
            feedback,
            retention_days=spec.retention_days,
            every_seconds=spec.compact_every_minutes * 60,
            on_pass=count,
        ).start()

    def __del__(self) -> None:
        """Ray Serve calls this when it stops the replica: the pass under way finishes first."""
        maintenance = getattr(self, "log_maintenance", None)
        if maintenance is not None:
            maintenance.stop()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Point each role at its ranker application; requests already sent keep their handle."""
        traffic = TrafficConfig.model_validate(user_config)
        self.handles = {
            app: self.handles.get(app) or serve.get_deployment_handle(RANKER_DEPLOYMENT, app_name=app)
            for app in traffic.routed_apps()
        }
        self.traffic = traffic

    def _route(self, version: str) -> Route:
        route = self.traffic.canary if version == "canary" else self.traffic.stable
        if route is None:
            raise Unavailable(f"no {version} version is routed yet; the rollout is still starting")
        return route

    async def _score(
        self, route: Route, user_texts: list[str], item_texts: list[str], *, retry: bool, observe: bool = True
    ) -> list[float]:
        """The version's scores. With ``retry``, a call whose replica died is sent once more on
        the same handle, whose router then picks a live replica of the same version: scoring
        only reads, so a second call is safe, and one is enough to survive a single replica's
        death without hammering a version that is dying everywhere. The front door's request
        timeout bounds both calls together, and cancels whichever is running when it expires.
        Without ``observe``, the scores stay out of the score histogram that canary analysis
        compares between versions (an explanation's left-out pairs are not answers)."""
        labels = (self.config.model_name, route.label)
        handle = self.handles[route.app]
        queue = self.metrics.queue_length.labels(*labels)
        queue.inc()
        try:
            try:
                scored = await self._call(handle, user_texts, item_texts)
            except Exception as error:
                if not (retry and replica_died(error)):
                    raise
                log.warning("a replica of %s died while scoring; retrying once: %r", route.label, error)
                self.metrics.ranker_retries.labels(*labels).inc()
                scored = await self._call(handle, user_texts, item_texts)
        except RecserveError:
            raise
        except BackPressureError as error:
            raise self._overloaded(route, error) from error
        except Exception as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, RecserveError):
                raise cause from error
            log.error("ranker %s failed: %r", route.label, error)
            raise Unavailable(f"model version {route.label} failed to score: {error!r}") from error
        finally:
            queue.dec()
        self.metrics.batch_size.labels(*labels).observe(scored.batch_size)
        if observe:
            histogram = self.metrics.scores.labels(*labels)
            for value in scored.scores:
                histogram.observe(value)
        return scored.scores

    async def _fusion_of(self, route: Route) -> FusionHead | None:
        """The route's fusion head, asked of its ranker once: an application's engine never
        changes (a new engine is a new application)."""
        if route.app not in self._fusion:
            raw = await self.handles[route.app].fusion_head.remote()
            self._fusion[route.app] = None if raw is None else FusionHead.from_dict(raw)
        return self._fusion[route.app]

    @staticmethod
    async def _call(handle: DeploymentHandle[Ranker], user_texts: list[str], item_texts: list[str]) -> Scored:
        response = handle.score.remote(user_texts, item_texts)
        try:
            scored: Scored = await response
        except asyncio.CancelledError:
            response.cancel()  # type: ignore[no-untyped-call]  # timed out or abandoned: free the ranker
            raise
        return scored

    def _overloaded(self, route: Route, error: BackPressureError) -> Overloaded:
        retry_after = error.retry_after_s
        if retry_after is None:
            retry_after = self.config.limits.retry_after_seconds
        return Overloaded(
            f"model version {route.label} is at its queue limit ({error}; "
            f"spec.serving.limits.maxQueuedRequests); retry after {retry_after:g}s",
            retry_after_s=retry_after,
        )

    async def _scored(
        self,
        scope: MutableMapping[str, Any],
        user_id: int | str | None,
        user_texts: list[str],
        item_texts: list[str],
    ) -> tuple[Route, list[float]]:
        """Score with the version this user is routed to (its route and the scores), mirroring
        to the canary when asked. The version is marked on the request before it is called, so
        that its failures are answered and counted as that version's."""
        version = self._version_for(user_id)
        route = self._route(version)
        mark_version(scope, route.label)
        scores = await self._score(route, user_texts, item_texts, retry=True)
        canary = self.traffic.canary
        if (
            version == "stable"
            and canary is not None
            and self.rng.random() * 100 < self.traffic.shadow_percent
        ):
            task = asyncio.create_task(self._shadow(canary, user_texts, item_texts, scores))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return route, scores

    async def _shadow(
        self, canary: Route, user_texts: list[str], item_texts: list[str], stable_scores: list[float]
    ) -> None:
        """Not retried: no client waits for it, and it runs after the request's answer, outside
        the request timeout that bounds a retry."""
        try:
            canary_scores = await self._score(canary, user_texts, item_texts, retry=False)
        except Exception as error:  # a shadow failure never reaches the client, only the log and metrics
            log.warning("shadow request to canary failed: %r", error)
            return
        diff = float(np.mean(np.abs(np.asarray(canary_scores) - np.asarray(stable_scores))))
        self.metrics.shadow_diff.labels(self.config.model_name).observe(diff)

    def _version_for(self, user_id: int | str | None) -> str:
        return choose_version(user_id, self.traffic.canary_weight, self.rng)

    @http_app.post("/v1/feedback", response_model=FeedbackResponse)
    async def feedback(self, body: FeedbackRequest) -> FeedbackResponse:
        """Off the event loop: the append waits for the disk (fsync) and the store."""
        return await asyncio.to_thread(
            record_feedback, body, self.catalog, self.feedback_log, self.pseudonyms
        )

    @http_app.delete(ERASE_ROUTE, response_model=ErasureResponse, response_model_by_alias=True)
    async def erase(self, user_id: str) -> ErasureResponse:
        """Erase one user (``serve/erasure.py``). The id travels in the path, so Ray Serve's access
        log and the request metrics name the route template, never the path (``route_template``).
        Off the event loop: the tombstone waits for the disk, the erasure for the store."""
        return await asyncio.to_thread(
            erase_user, user_id, self.catalog.histories, self.feedback_log, self.pseudonyms
        )

    @http_app.post("/v1/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest, request: Request) -> RecommendResponse:
        plan = plan_recommendation(body, self.catalog, self.config)
        route, scores = await self._scored(request.scope, body.user_id, plan.user_texts, plan.item_texts)
        response = plan.respond(scores, route.label, await self._fusion_of(route))
        if body.explain:
            response = await self._explained(route, plan, response)
        return response

    async def _explained(
        self, route: Route, plan: RecommendationPlan, response: RecommendResponse
    ) -> RecommendResponse:
        """``response`` with reasons from the version that ranked it: one more ranker call, for
        the top k only (see ``serve/explain.py``)."""
        codes = plan.codes_of(response.items)
        occlusion = occlude(
            self.catalog, plan.user_id, plan.history, plan.user_text, codes, self.config.explain
        )
        scores = await self._occluded(route, occlusion)
        items = explain_items(response.items, occlusion, scores, self.catalog)
        return response.model_copy(update={"items": items})

    async def _occluded(self, route: Route, occlusion: Occlusion) -> list[float]:
        """An explanation's scores. Never shadowed to the canary, and kept out of the score
        histogram: its pairs are counterfactuals, and would skew the score shift between versions."""
        user_texts, item_texts = occlusion.pairs()
        return await self._score(route, user_texts, item_texts, retry=True, observe=False)

    @http_app.post("/v2/models/{name}/infer")
    async def infer(self, name: str, body: InferenceRequest, request: Request) -> dict[str, Any]:
        self._check_model(name)
        limits = self.config.limits
        pairs = infer_pairs(body, self.catalog, self.config.max_infer_pairs, limits.max_text_chars)
        route, scores = await self._scored(
            request.scope, pairs.sticky_user, pairs.user_texts, pairs.item_texts
        )
        return infer_response(name, route.label, body.id, scores)

    @http_app.post("/v2/models/{name}/explain")
    async def explain(self, name: str, body: InferenceRequest, request: Request) -> dict[str, Any]:
        """Open Inference Protocol explain: one user's items with each history item's contribution."""
        self._check_model(name)
        pairs = explain_pairs(body, self.catalog, self.config)
        route = self._route(self._version_for(pairs.user_id))
        mark_version(request.scope, route.label)
        scores = await self._occluded(route, pairs.occlusion)
        return explain_response(name, route.label, body.id, pairs.occlusion, scores, self.catalog)

    @http_app.get("/v2/models/{name}")
    async def metadata(self, name: str, request: Request) -> dict[str, Any]:
        self._check_model(name)
        mark_version(request.scope, self._route("stable").label)
        routes = [r for r in (self.traffic.stable, self.traffic.canary) if r is not None]
        return model_metadata(name, sorted(r.label for r in routes))

    @http_app.get("/v2/models/{name}/ready")
    async def model_ready(self, name: str) -> dict[str, Any]:
        self._check_model(name)
        return {"name": name, "ready": await self._all_ready()}

    @http_app.get("/metrics")
    async def prometheus(self) -> PlainTextResponse:
        return PlainTextResponse(self.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @http_app.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @http_app.get("/v2/health/ready")
    async def ready(self, response: Response) -> dict[str, bool]:
        ready = await self._all_ready()
        if not ready:
            response.status_code = 503
        return {"ready": ready}

    async def _all_ready(self) -> bool:
        handles = [self.handles[app] for app in self.traffic.routed_apps()]
        if self.traffic.stable is None:
            return False
        try:
            await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in handles)), 5)
        except Exception:
            return False
        return True

    def _check_model(self, name: str) -> None:
        if name != self.config.model_name:
            raise NotFound(f"unknown model {name!r}; this server serves {self.config.model_name!r}")


RankerDeployment = serve.deployment()(Ranker)
RouterDeployment = serve.deployment()(serve.ingress(http_app)(Router))


def build_router(args: dict[str, Any]) -> serve.Application:
    """The router application's builder (``import_path``); ``args`` is a ``RouterConfig``."""
    return RouterDeployment.options(name=ROUTER_DEPLOYMENT).bind(RouterConfig.model_validate(args).to_dict())


def build_ranker(args: dict[str, Any]) -> serve.Application:
    """A ranker application's builder (``import_path``); ``args`` is a ``RankerArgs``."""
    return RankerDeployment.options(name=RANKER_DEPLOYMENT).bind(RankerArgs.model_validate(args).to_dict())
