"""Scenario 1, install: ``helm install charts/recserve``, then the operator as a local process
with the chart's ServiceAccount token, so that the chart's RBAC is what it runs with.

Real: helm, the API server (authn, RBAC, CRD establishment), the controller-manager (token
and ServiceAccount controllers, the PV binder), the scheduler, the operator process.
Simulated: nothing here needs a node; the one build pod stays Pending (no artifact claim).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.harness import (
    GROUP,
    OperatorProcess,
    apply,
    audit_events,
    build_jobs,
    condition_summary,
    forbidden,
    get_model,
    now_rfc3339,
    registry_free_model,
)
from recserve_serving.waiting import wait_for


def established(kube: Any, name: str) -> bool:
    crd = client.ApiextensionsV1Api(kube).read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def test_chart_installs_and_the_operator_runs_with_its_service_account(
    control_plane: ControlPlane, kube: Any, namespace: str, chart: Any, tmp_path: Path
) -> None:
    install = chart()
    for crd in (f"recommendermodels.{GROUP}", "kopfpeerings.kopf.dev"):
        wait_for(lambda crd=crd: established(kube, crd), 60, message=f"CRD {crd} Established")
    as_operator = ["--kubeconfig", str(install.kubeconfig)]
    whoami = control_plane.kubectl(
        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", *as_operator
    )
    assert whoami.stdout == install.user

    since = now_rfc3339()
    operator = OperatorProcess(install, tmp_path)
    with operator:
        assert operator.pid is not None
        apply(control_plane, namespace, registry_free_model("rbac-probe"))

        def building() -> dict[str, str] | None:
            summary = condition_summary(get_model(kube, namespace, "rbac-probe"))
            return summary if summary["phase"] == "Building" and build_jobs(kube, namespace) else None

        summary = wait_for(building, 120, interval=0.5, message="status Building and a build Job")
        assert summary["Reconciling"] == "True" and summary["Stalled"] == "False"
        assert get_model(kube, namespace, "rbac-probe")["status"]["observedGeneration"] == 1

        # What the chart did not grant is really refused, by the API server, for this token.
        core = client.CoreV1Api(kube)
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": "not-yours"}, "stringData": {"k": "v"}}
        )
        refused = {
            "list Secrets here": ["get", "secrets", "-n", namespace],
            "delete a Secret here": ["delete", "secret", "not-yours", "-n", namespace],
            "list Secrets in kube-system": ["get", "secrets", "-n", "kube-system"],
            "read models in another namespace": ["get", "recommendermodels", "-n", "default"],
            "grant itself cluster-admin": [
                "create", "clusterrolebinding", f"{namespace}-escalate",
                "--clusterrole=cluster-admin", f"--serviceaccount={namespace}:{install.service_account}",
            ],
        }  # fmt: skip
        for what, argv in refused.items():
            result = control_plane.kubectl(*argv, *as_operator, check=False)
            assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (what, result.stderr)
        assert core.read_namespaced_secret("not-yours", namespace).data  # still there
    # Stopped by pid (the context manager asserts the pid is gone).

    # The operator itself was never refused anything: RBAC is sufficient (audit log, the API
    # server's own record of each request and its authorization decision).
    def operator_requests() -> list[dict[str, Any]]:
        events = audit_events(control_plane, install.user, since)
        return [e for e in events if not e.get("userAgent", "").startswith("kubectl")]

    requests = wait_for(operator_requests, 30, message="the operator's requests in the audit log")
    assert len(requests) > 5
    assert forbidden(requests) == []
    assert "Forbidden" not in operator.log and " 403" not in operator.log
    # ...while the token's refusals above were recorded as such.
    probes = [e for e in audit_events(control_plane, install.user, since) if e not in requests]
    assert len(forbidden(probes)) >= 5
