"""The cluster as a ``Platform``: build Jobs, a KubeRay RayService, Prometheus (or a scrape).

Every method reads the world and, at most, creates or patches one object; it never waits.
Waiting is the reconcile loop's job: a Building or not-ready answer comes back with a
requeue, so the operator stays responsive with many models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import yaml

from recserve_operator import kube
from recserve_operator.analysis.prometheus import PrometheusProvider
from recserve_operator.analysis.scrape import ScrapeProvider
from recserve_operator.api.status import EngineStatus, TrainingStatus
from recserve_operator.api.types import RecommenderModel
from recserve_operator.cluster.checkpoints import describe, move_alias
from recserve_operator.planners.analysis import WindowMetrics
from recserve_operator.planners.build_job import build_request, job_name, plan_build_job
from recserve_operator.planners.network_policy import plan_network_policy
from recserve_operator.planners.rayservice import plan_rayservice
from recserve_operator.planners.serve_config import DeployPlan, ServeObservation, ServeSite
from recserve_operator.planners.training_job import (
    cronjob_name,
    needs_update,
    owned_by,
    plan_training_cronjob,
    training_blocker,
    training_status,
)
from recserve_operator.platform import CheckpointInfo, DeployOutcome, EngineOutcome, serve_step
from recserve_operator.settings import OperatorSettings
from recserve_serving.recipe import OptimizationRecipe


def _job_state(job: dict[str, Any]) -> str:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in {"Complete", "Failed"}:
            return str(condition["type"])
    return "Running"


def _observe(service: dict[str, Any] | None) -> ServeObservation:
    """The serve config a RayService was last given, and the apps KubeRay reports RUNNING."""
    if service is None:
        return ServeObservation()
    deployed = yaml.safe_load((service.get("spec") or {}).get("serveConfigV2") or "{}") or None
    active = ((service.get("status") or {}).get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    running = frozenset(name for name, app in active.items() if (app or {}).get("status") == "RUNNING")
    return ServeObservation(deployed, running)


def _rayservice_ready(service: dict[str, Any]) -> tuple[bool, str]:
    status = service.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True", str(condition.get("message", ""))
    running = status.get("serviceStatus") == "Running"
    return running, str(status.get("serviceStatus", "waiting for KubeRay"))


class ClusterPlatform:
    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.scrape = ScrapeProvider()
        self.site = ServeSite(
            index_dir=settings.index_dir,
            online_dir=settings.online_dir,
            pseudonym_key_file=settings.pseudonym_key_file,
            history_redis=settings.history_redis,
        )

    def resolve(self, uri: str) -> CheckpointInfo:
        return describe(uri, self.settings.mlflow_tracking_uri)

    def move_alias(self, name: str, alias: str, version: str) -> None:
        move_alias(self.settings.mlflow_tracking_uri, name, alias, version)

    def ensure_engine(
        self, model: RecommenderModel, version: str, checkpoint: CheckpointInfo, recipe: OptimizationRecipe
    ) -> EngineOutcome:
        request = build_request(model, version, checkpoint.uri, checkpoint.digest, recipe, self.settings)
        namespace, name = model.metadata.namespace or "default", job_name(model, request)
        job = kube.get_job(namespace, name)
        if job is None:
            kube.create_job(plan_build_job(model, request, self.settings))
            return EngineOutcome("Building", message=f"build Job {name} created")
        state = _job_state(job)
        if state == "Running":
            return EngineOutcome("Building", message=f"build Job {name} running")
        message, logs = kube.job_pod_outputs(namespace, name)
        if state == "Failed":
            return failed_build(name, logs)
        result = kube.termination_json(message)
        if result is None:
            return EngineOutcome("Failed", message=f"build Job {name} succeeded without a result message")
        engine_dir = str(result["engineDir"])
        return EngineOutcome(
            "Ready",
            engine_dir=engine_dir,
            status=EngineStatus.model_validate(result["engine"]),
        )

    def endpoint(self, model: RecommenderModel) -> str:
        return f"http://{model.metadata.name}-serve-svc.{model.metadata.namespace}.svc:{self.site.port}"

    def deploy(self, model: RecommenderModel, plan: DeployPlan) -> DeployOutcome:
        namespace, name = model.metadata.namespace or "default", model.metadata.name or ""
        self._fence(model)
        current = kube.get_rayservice(namespace, name)
        step = serve_step(model, plan, self.site, _observe(current))
        wanted = plan_rayservice(model, step.rendered, self.settings)
        if current is None:
            kube.create_rayservice(wanted)
            return DeployOutcome(False, None, f"RayService {name} created", settled=False)
        if _differs(current["spec"], wanted["spec"]):
            kube.patch_rayservice_spec(namespace, name, wanted["spec"])
        ready, message = _rayservice_ready(current)
        return DeployOutcome(ready, self.endpoint(model) if ready else None, message, settled=step.settled)

    def _fence(self, model: RecommenderModel) -> None:
        """Creates or corrects the model's NetworkPolicy before any Ray pod of it exists, so
        that no serving pod ever starts reachable from everywhere."""
        if self.settings.network_policy is None:
            return
        wanted = plan_network_policy(model, self.settings.network_policy, self.site.port)
        namespace, name = wanted["metadata"]["namespace"], wanted["metadata"]["name"]
        current = kube.get_network_policy(namespace, name)
        if current is None:
            kube.create_network_policy(wanted)
        elif _subset_differs(wanted["spec"], current.get("spec") or {}):
            kube.patch_network_policy_spec(namespace, name, wanted["spec"])

    def sync_training(self, model: RecommenderModel) -> TrainingStatus | None:
        """Makes the model's retrain CronJob match ``spec.training`` (created, patched when its
        planned form changed, deleted when the block is gone or cannot be scheduled) and returns
        ``status.training``. One read and at most one write, like every method here; API failures
        raise ``Unavailable``. Serving does not wait on it: the handler runs it after the pass."""
        if model.spec.training is None and (model.status is None or model.status.training is None):
            # Status is the operator's memory: without spec.training and with no retrain recorded
            # there is nothing of ours to remove, and most models need no read per pass for it.
            # (A CronJob created but never recorded still goes with the model: owner reference.)
            return None
        namespace = model.metadata.namespace or "default"
        name = cronjob_name(model.metadata.name or "")
        current = kube.get_cronjob(namespace, name)
        if current is not None and not owned_by(current, model):
            if model.spec.training is None:
                return None
            return training_status(
                model,
                None,
                f"not scheduled: CronJob {namespace}/{name} exists and is not this model's; "
                "rename or delete it, recserve leaves it alone",
            )
        blocker = None if model.spec.training is None else training_blocker(model, self.settings)
        if model.spec.training is None or blocker is not None:
            if current is not None:
                kube.delete_cronjob(namespace, name)
            return training_status(model, None, blocker)
        wanted = plan_training_cronjob(model, self.settings)
        if current is None:
            kube.create_cronjob(wanted)
            return training_status(model, wanted)
        if needs_update(current, wanted):
            kube.patch_cronjob(namespace, name, wanted)
            current = {**current, "spec": {**(current.get("spec") or {}), **wanted["spec"]}}
        return training_status(model, current)

    def teardown(self, model: RecommenderModel) -> None:
        """Nothing to do: the RayService, build Jobs and the retrain CronJob carry owner references,
        so the garbage collector deletes them with the model; engines stay in the store for other
        models."""

    def canary_metrics(
        self, model: RecommenderModel, stable: str, canary: str, since: datetime, now: datetime
    ) -> WindowMetrics | None:
        name = model.metadata.name or ""
        if self.settings.prometheus_url:
            provider = PrometheusProvider(self.settings.prometheus_url)
            return provider.canary_window(name, stable, canary, since, now)
        return self.scrape.canary_window(self.endpoint(model), name, stable, canary, since, now)


def failed_build(job: str, logs: str) -> EngineOutcome:
    """A failed build Job as an outcome: ``recserve build`` leaves ``{"failure", "error",
    "report"}`` as the termination message of a gate it failed, otherwise the logs tell."""
    result = kube.termination_json(logs.strip())
    if result is not None and result.get("failure") in {"QualityGateFailed", "EngineFailed"}:
        report = result.get("report")
        return EngineOutcome(
            "Failed",
            message=f"build Job {job}: {str(result.get('error', ''))[-2000:]}",
            failure=result["failure"],
            report=str(report) if report else None,
        )
    return EngineOutcome("Failed", message=f"build Job {job} failed: {logs.strip()[-2000:]}")


def _differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the parts of the spec we own differ; serveConfigV2 is compared as data, not text."""
    if yaml.safe_load(current.get("serveConfigV2") or "{}") != yaml.safe_load(wanted["serveConfigV2"]):
        return True
    return _subset_differs(wanted["rayClusterConfig"], current.get("rayClusterConfig") or {})


def _subset_differs(wanted: Any, current: Any) -> bool:
    """True when ``wanted`` is not contained in ``current`` (the API server adds defaults)."""
    if isinstance(wanted, dict):
        if not isinstance(current, dict):
            return True
        return any(_subset_differs(v, current.get(k)) for k, v in wanted.items())
    if isinstance(wanted, list):
        if not isinstance(current, list) or len(wanted) != len(current):
            return True
        return any(_subset_differs(w, c) for w, c in zip(wanted, current, strict=True))
    return bool(wanted != current)
