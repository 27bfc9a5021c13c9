"""GitOps assets: the Argo CD health check (run in Lua 5.1 through lupa, as Argo CD's gopher-lua
runs it) on statuses built from the operator's own status models, and the example configs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_tools import REPO, kubeconform, kustomize, one, write_core_schemas, write_crd_schemas
from lupa import lua51

from recserve_operator.api.status import CanaryStatus, Condition, RecommenderModelStatus, TrainingStatus
from recserve_operator.validate import check_document

GITOPS = REPO / "examples" / "gitops"
HEALTH = GITOPS / "argocd" / "health.lua"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def cond(type_: str, status: str, reason: str = "Test", message: str = "") -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=NOW)


def model(generation: int | None, status: RecommenderModelStatus | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "recserve.dev/v1alpha1",
        "kind": "RecommenderModel",
        "metadata": {"name": "ranker", "namespace": "recsys"},
        "spec": {"checkpoint": {"uri": "models:/ranker/3"}},
    }
    if generation is not None:
        obj["metadata"]["generation"] = generation
    if status is not None:
        obj["status"] = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    return obj


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run health.lua the way Argo CD does: `obj` is a global, the script returns a table."""
    lua = lua51.LuaRuntime()

    def table(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: table(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([table(v) for v in value])
        return value

    lua.globals().obj = table(obj)
    result = lua.execute(HEALTH.read_text())
    return result["status"], result["message"]


def status(observed: int | None, *conditions: Condition, **extra: Any) -> RecommenderModelStatus:
    return RecommenderModelStatus(observed_generation=observed, conditions=list(conditions), **extra)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("obj", "expected", "in_message"),
    [
        pytest.param(model(1, None), "Progressing", "observe the model", id="no status yet"),
        pytest.param(
            model(2, status(1, cond("Ready", "True"))),
            "Progressing",
            "generation 2",
            id="new generation not observed",
        ),
        pytest.param(
            model(2, status(None, cond("Ready", "True"))),
            "Progressing",
            "generation 2",
            id="no observedGeneration",
        ),
        pytest.param(
            model(3, status(2, cond("Stalled", "True", "BuildFailed", "engine build failed 3 times"))),
            "Progressing",
            "generation 3",
            id="stale Stalled of an older generation",
        ),
        pytest.param(
            model(
                3,
                status(
                    3,
                    cond("Ready", "False", "BuildFailed"),
                    cond("Reconciling", "True", "Building"),
                    cond("Stalled", "True", "BuildFailed", "engine build failed 3 times"),
                    phase="Failed",
                ),
            ),
            "Degraded",
            "engine build failed 3 times",
            id="Stalled wins over Reconciling",
        ),
        pytest.param(
            model(4, status(4, cond("Stalled", "True", "InvalidSpec"), phase="Failed")),
            "Degraded",
            "InvalidSpec",
            id="Stalled without message shows the reason",
        ),
        pytest.param(
            model(
                5,
                status(
                    5,
                    cond("Ready", "True", "Serving"),
                    cond("Reconciling", "True", "CanaryStep", "canary step 2 of 3"),
                    phase="Progressing",
                    canary=CanaryStatus(checkpoint="models:/ranker/4", weight=25, step=1),
                ),
            ),
            "Progressing",
            "canary step 2 of 3 (canary at 25%)",
            id="canary in progress",
        ),
        pytest.param(
            model(6, status(6, cond("Ready", "True", "Serving", "serving models:/ranker/4"), phase="Ready")),
            "Healthy",
            "serving models:/ranker/4",
            id="ready",
        ),
        pytest.param(
            model(
                7,
                status(
                    7,
                    cond("Ready", "True", "Serving"),
                    cond("Reconciling", "False", "Done"),
                    cond("CanaryHealthy", "False", "RolledBack", "p99 latency 81ms > 50ms"),
                    phase="Degraded",
                ),
            ),
            "Healthy",
            "canary unhealthy: p99 latency 81ms > 50ms",
            id="rolled back canary, stable serving",
        ),
        pytest.param(
            model(8, status(8, cond("Ready", "False", "RayServiceUnhealthy", "head pod crashlooping"))),
            "Degraded",
            "head pod crashlooping",
            id="not ready, not reconciling",
        ),
        pytest.param(
            model(9, status(9, phase="Pending")), "Progressing", "phase Pending", id="no conditions yet"
        ),
    ],
)
def test_argocd_health(obj: dict[str, Any], expected: str, in_message: str) -> None:
    got, message = health(obj)
    assert (got, in_message in message) == (expected, True), message


FAILED_RETRAIN = TrainingStatus(
    cron_job="ranker-retrain",
    schedule="0 3 * * 0",
    last_schedule_time=NOW,
    last_successful_time=datetime(2026, 11, 21, 3, 40, tzinfo=UTC),
    last_run="Failed",
)


def with_status_fields(obj: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``obj`` with raw status fields added, as the operator writes them (``champion`` is the
    lead's field: written as JSON here, whatever model class ends up holding it)."""
    obj["status"].update(fields)
    return obj


@pytest.mark.unit
@pytest.mark.parametrize(
    ("obj", "expected", "in_message", "not_in_message"),
    [
        pytest.param(
            model(
                6,
                status(
                    6, cond("Ready", "True", "Serving", "serving models:/ranker/4"), training=FAILED_RETRAIN
                ),
            ),
            "Healthy",
            "serving models:/ranker/4; last retrain failed (started 2026-11-28T12:00:00Z), see the Jobs of "
            "CronJob ranker-retrain",
            None,
            id="a failed retrain leaves serving Healthy and says so",
        ),
        pytest.param(
            model(
                6,
                status(
                    6,
                    cond("Ready", "True", "Serving", "serving"),
                    training=TrainingStatus(
                        cron_job="ranker-retrain",
                        schedule="0 3 * * 0",
                        last_schedule_time=NOW,
                        last_successful_time=NOW,
                        last_run="Succeeded",
                    ),
                ),
            ),
            "Healthy",
            "serving",
            "retrain",
            id="a retrain that succeeded adds nothing",
        ),
        pytest.param(
            model(
                6,
                status(
                    6,
                    cond("Ready", "True", "Serving", "serving"),
                    training=TrainingStatus(
                        schedule="@daily", message="not scheduled: no MLflow tracking URI"
                    ),
                ),
            ),
            "Healthy",
            "serving; retraining: not scheduled: no MLflow tracking URI",
            None,
            id="unscheduled retraining is told, not judged",
        ),
        pytest.param(
            model(
                8,
                status(
                    8,
                    cond("Ready", "False", "RayServiceUnhealthy", "head pod crashlooping"),
                    training=FAILED_RETRAIN,
                ),
            ),
            "Degraded",
            "head pod crashlooping; last retrain failed",
            None,
            id="serving's own failure stays Degraded, retrain noted",
        ),
        pytest.param(
            with_status_fields(
                model(6, status(6, cond("Ready", "True", "Serving", "serving models:/ranker@champion"))),
                champion={"model": "ranker", "version": "7", "movedAt": "2026-11-28T12:00:00Z"},
            ),
            "Healthy",
            "serving models:/ranker@champion; champion ranker/7",
            None,
            id="champion is informational",
        ),
        pytest.param(
            with_status_fields(
                model(
                    5,
                    status(
                        5,
                        cond("Ready", "True", "Serving"),
                        cond("Reconciling", "True", "CanaryStep", "canary step 1 of 3"),
                        canary=CanaryStatus(checkpoint="models:/ranker@candidate", weight=5, step=0),
                        training=FAILED_RETRAIN,
                    ),
                ),
                champion={"model": "ranker", "version": "6"},
            ),
            "Progressing",
            "canary step 1 of 3 (canary at 5%); last retrain failed",
            None,
            id="canary of a retrained version in progress",
        ),
    ],
)
def test_argocd_health_treats_training_and_champion_as_information(
    obj: dict[str, Any], expected: str, in_message: str, not_in_message: str | None
) -> None:
    got, message = health(obj)
    assert (got, in_message in message) == (expected, True), message
    assert not_in_message is None or not_in_message not in message, message


@pytest.mark.unit
def test_health_check_runs_on_a_real_example_without_status() -> None:
    doc = yaml.safe_load((GITOPS / "model-repo" / "production" / "movielens-ranker.yaml").read_text())
    assert health(doc)[0] == "Progressing"


@pytest.mark.unit
def test_model_repo_models_are_valid_specs() -> None:
    paths = sorted((GITOPS / "model-repo").rglob("*.yaml"))
    models = [
        d
        for p in paths
        for d in yaml.safe_load_all(p.read_text())
        if d and d.get("kind") == "RecommenderModel"
    ]
    assert models
    for doc in models:
        parsed, problems = check_document(doc)
        assert parsed is not None and not problems, problems
        assert "namespace" not in doc["metadata"]  # the GitOps tool's destination decides
        assert parsed.spec.rollout is not None and parsed.spec.rollout.canary is not None


@pytest.mark.unit
def test_argocd_application_and_flux_point_at_the_model_repo() -> None:
    app = yaml.safe_load((GITOPS / "argocd" / "application.yaml").read_text())
    assert (GITOPS / "model-repo" / app["spec"]["source"]["path"] / "kustomization.yaml").is_file()
    pointers = {p for d in app["spec"]["ignoreDifferences"] for p in d["jsonPointers"]}
    assert pointers == {
        "/metadata/annotations/recserve.dev~1promote",
        "/metadata/annotations/recserve.dev~1abort",
        "/metadata/finalizers",
    }
    assert app["spec"]["ignoreDifferences"][0]["kind"] == "RecommenderModel"
    docs = list(yaml.safe_load_all((GITOPS / "flux" / "recsys-models.yaml").read_text()))
    source = next(d for d in docs if d["kind"] == "GitRepository")
    flux = next(d for d in docs if d["kind"] == "Kustomization")
    assert flux["spec"]["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert (GITOPS / "model-repo" / Path(flux["spec"]["path"]) / "kustomization.yaml").is_file()
    assert (
        flux["spec"]["wait"] is True
        and flux["spec"]["targetNamespace"] == app["spec"]["destination"]["namespace"]
    )


@pytest.mark.integration
def test_argocd_kustomization_installs_the_health_check(tmp_path: Path) -> None:
    docs = kustomize(GITOPS / "argocd")
    cm = one(docs, "ConfigMap", "argocd-cm")
    assert cm["metadata"]["namespace"] == "argocd"
    assert cm["data"] == {"resource.customizations.health.recserve.dev_RecommenderModel": HEALTH.read_text()}
    assert one(docs, "Application")["metadata"]["namespace"] == "argocd"
    write_core_schemas(tmp_path)
    assert "Invalid: 0, Errors: 0" in kubeconform([cm], tmp_path, skip=())


@pytest.mark.integration
def test_model_repo_renders_and_validates_against_the_crd(tmp_path: Path) -> None:
    docs = kustomize(GITOPS / "model-repo" / "production")
    crds = list(
        yaml.safe_load_all((REPO / "manifests" / "crds" / "recserve.dev_recommendermodels.yaml").read_text())
    )
    write_crd_schemas(tmp_path, crds)
    assert f"Valid: {len(docs)}, Invalid: 0" in kubeconform(docs, tmp_path, skip=())
