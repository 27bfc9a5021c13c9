"""Scenario: scheduled retraining. ``spec.training`` becomes a retrain CronJob owned by the model,
kept in line with the spec (schedule edited: patched; block removed: deleted), by an operator
that runs with exactly the chart's RBAC, while the chart's trainer account is bound to nothing.

Real: helm (the chart's trainer ServiceAccount and pseudonymization key Secret), the API server
(CronJob validation, owner references, RBAC, the audit log), the operator process.
Simulated: nothing; no retrain runs (the schedule is far in the future and the CronJob is
suspended for the edits), so no node is needed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster.controlplane import ControlPlane
from e2e.harness import (
    RELEASE,
    OperatorProcess,
    apply,
    audit_events,
    forbidden,
    get_model,
    now_rfc3339,
    registry_free_model,
)
from recserve_serving.waiting import wait_for

MODEL = "retrain-probe"
CRONJOB = f"{MODEL}-retrain"
TRAINER = f"{RELEASE}-trainer"
KEY_SECRET = f"{RELEASE}-pseudonym-key"
SCHEDULE, EDITED = "0 3 1 1 *", "30 2 1 1 *"  # once a year: nothing fires during the test


def cronjob(kube: Any, namespace: str) -> dict[str, Any] | None:
    try:
        found = client.BatchV1Api(kube).read_namespaced_cron_job(CRONJOB, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    body: dict[str, Any] = kube.sanitize_for_serialization(found)
    return body


def test_spec_training_becomes_an_owned_cronjob_kept_in_line_with_the_spec(
    control_plane: ControlPlane, kube: Any, namespace: str, chart: Any, tmp_path: Path
) -> None:
    install = chart()
    core = client.CoreV1Api(kube)
    # The chart made the retrain pods' account (no token) and a 32-byte hex key in the namespace.
    trainer = core.read_namespaced_service_account(TRAINER, namespace)
    assert trainer.automount_service_account_token is False
    key = core.read_namespaced_secret(KEY_SECRET, namespace).data["key"]
    assert len(key) > 0
    env = {
        "RECSERVE_MLFLOW_TRACKING_URI": "http://mlflow.invalid:5000",
        "RECSERVE_PSEUDONYM_SECRET": KEY_SECRET,
        "RECSERVE_TRAINER_SERVICE_ACCOUNT": TRAINER,
    }
    doc = registry_free_model(MODEL)
    doc["spec"]["training"] = {"schedule": SCHEDULE, "budget": {"maxMinutes": 45}}

    since = now_rfc3339()
    with OperatorProcess(install, tmp_path, env=env):
        apply(control_plane, namespace, doc)
        created = wait_for(lambda: cronjob(kube, namespace), 120, interval=0.5, message="the retrain CronJob")
        model = get_model(kube, namespace, MODEL)
        (owner,) = created["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "RecommenderModel",
            MODEL,
            model["metadata"]["uid"],
        )
        assert owner["controller"] is True
        spec = created["spec"]
        assert (spec["schedule"], spec["suspend"], spec["concurrencyPolicy"]) == (SCHEDULE, False, "Forbid")
        assert spec["timeZone"] == "Etc/UTC"
        job = spec["jobTemplate"]["spec"]
        assert job["activeDeadlineSeconds"] == 45 * 60
        pod = job["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == TRAINER
        assert pod["containers"][0]["args"][:2] == ["retrain", MODEL]
        wait_for(
            lambda: (
                (get_model(kube, namespace, MODEL).get("status") or {}).get("training", {}).get("cronJob")
                == CRONJOB
            ),
            60,
            interval=0.5,
            message="status.training.cronJob",
        )

        # An edited schedule and suspension are patched into the same object.
        edited = copy.deepcopy(doc)
        edited["spec"]["training"].update({"schedule": EDITED, "suspend": True})
        apply(control_plane, namespace, edited)
        patched = wait_for(
            lambda: (c := cronjob(kube, namespace)) and c["spec"]["schedule"] == EDITED and c,
            60,
            interval=0.5,
            message="the CronJob patched to the new schedule",
        )
        assert patched["spec"]["suspend"] is True
        assert patched["metadata"]["uid"] == created["metadata"]["uid"]
        wait_for(
            lambda: (
                (get_model(kube, namespace, MODEL).get("status") or {}).get("training", {}).get("suspended")
                is True
            ),
            60,
            interval=0.5,
            message="status.training.suspended",
        )

        # Without spec.training the CronJob goes, and so does status.training.
        apply(control_plane, namespace, registry_free_model(MODEL))
        wait_for(lambda: cronjob(kube, namespace) is None, 60, interval=0.5, message="the CronJob deleted")
        wait_for(
            lambda: "training" not in (get_model(kube, namespace, MODEL).get("status") or {}),
            60,
            interval=0.5,
            message="status.training removed",
        )

    # The operator was refused nothing (the chart's RBAC covers CronJobs), and it did call them.
    requests = [
        e
        for e in audit_events(control_plane, install.user, since)
        if not e.get("userAgent", "").startswith("kubectl")
    ]
    assert forbidden(requests) == []
    verbs = {e["verb"] for e in requests if (e.get("objectRef") or {}).get("resource") == "cronjobs"}
    assert {"get", "create", "patch", "delete"} <= verbs, verbs

    # The trainer account is a subject of no binding anywhere, and its own token may do nothing here.
    rbac = client.RbacAuthorizationV1Api(kube)
    bindings = [*rbac.list_role_binding_for_all_namespaces().items, *rbac.list_cluster_role_binding().items]
    for binding in bindings:
        for subject in binding.subjects or []:
            assert not (subject.kind == "ServiceAccount" and subject.name == TRAINER), binding.metadata.name
    as_trainer = ["--as", f"system:serviceaccount:{namespace}:{TRAINER}"]
    for argv in (["get", "pods", "-n", namespace], ["get", "secrets", "-n", namespace]):
        result = control_plane.kubectl(*argv, *as_trainer, check=False)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (argv, result.stderr)
