"""Smoke test of the e2e control plane itself: real API server (TLS, authn, RBAC), real scheduler
and controller-manager, real KubeRay operator; nodes and pod lifecycles simulated by kwok."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e.cluster.controlplane import Binaries, ControlPlane
from e2e.cluster.fleet import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_TOLERATION,
    H100,
    L4,
    cpu_node,
    default_fleet,
    node_is_ready,
)
from e2e.cluster.process import pid_alive, processes_using
from recserve_serving.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_api_server_answers_over_tls_with_authentication(control_plane: ControlPlane, kube: Any) -> None:
    info = client.VersionApi(kube).get_code()
    assert info.git_version == "v1.37.2"
    assert control_plane.server.startswith("https://127.0.0.1:")

    # The serving certificate verifies against our CA, and an unauthenticated request is refused.
    assert control_plane.pki is not None
    ctx = ssl.create_default_context(cafile=str(control_plane.pki.ca.cert))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{control_plane.server}/api/v1/namespaces", context=ctx, timeout=10)
    assert err.value.code == 401

    out = control_plane.kubectl("get", "--raw", "/readyz?verbose").stdout
    assert "readyz check passed" in out


def test_service_account_token_authenticates_and_rbac_denies(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """A bound ServiceAccount token (TokenRequest, signed by the API server's key) is accepted,
    and RBAC refuses what the account was not granted."""
    control_plane.kubectl("create", "serviceaccount", "probe", "-n", namespace)
    token = control_plane.kubectl(
        "create", "token", "probe", "-n", namespace, "--duration=10m"
    ).stdout.strip()
    kubeconfig = control_plane.kubeconfig_for_token(tmp_path / "probe.kubeconfig", token)
    as_probe = ["--kubeconfig", str(kubeconfig)]

    whoami = control_plane.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", *as_probe)
    assert whoami.stdout == f"system:serviceaccount:{namespace}:probe"
    denied = control_plane.kubectl("get", "pods", "-n", namespace, *as_probe, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()

    control_plane.kubectl("create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace)
    control_plane.kubectl(
        "create",
        "rolebinding",
        "probe-reads",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:probe",
        "-n",
        namespace,
    )
    allowed = control_plane.kubectl("get", "pods", "-n", namespace, *as_probe)
    assert allowed.returncode == 0


def test_helm_installs_and_uninstalls_a_chart(
    control_plane: ControlPlane, kube: Any, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  value: {{ .Values.value | quote }}\n"
    )
    (chart / "values.yaml").write_text("value: hello\n")
    control_plane.helm("install", "probe", str(chart), "-n", namespace, "--set", "value=e2e", "--wait")
    cm = client.CoreV1Api(kube).read_namespaced_config_map("probe-cm", namespace)
    assert cm.data == {"value": "e2e"}
    assert "probe" in control_plane.helm("list", "-n", namespace, "-q").stdout.split()
    control_plane.helm("uninstall", "probe", "-n", namespace, "--wait")
    assert (
        not client.CoreV1Api(kube)
        .list_namespaced_config_map(namespace, field_selector="metadata.name=probe-cm")
        .items
    )


def test_fleet_nodes_are_ready_with_gpu_capacity_labels_and_taints(
    control_plane: ControlPlane, kube: Any
) -> None:
    nodes = {n.metadata.name: n for n in client.CoreV1Api(kube).list_node().items}
    expected = {spec.name: spec for spec in default_fleet()}
    assert expected.keys() <= nodes.keys()
    for name, spec in expected.items():
        node = nodes[name]
        assert node_is_ready(node), name
        if spec.gpus:
            assert node.status.allocatable[GPU_RESOURCE] == "8"
            assert node.metadata.labels[GPU_PRODUCT_LABEL] == spec.gpu_product
            assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [
                (GPU_RESOURCE, "present", "NoSchedule")
            ]
        else:
            assert GPU_RESOURCE not in node.status.allocatable
            assert not node.spec.taints
    products = {n.metadata.labels.get(GPU_PRODUCT_LABEL) for n in nodes.values()}
    assert {H100, L4} <= products


def _gpu_job(name: str, product: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeSelector": {GPU_PRODUCT_LABEL: product},
                        "tolerations": [GPU_TOLERATION],
                        "containers": [
                            {
                                "name": "build",
                                "image": "registry.invalid/recserve/builder:e2e",
                                "resources": {
                                    "requests": {"cpu": "1", "memory": "1Gi", GPU_RESOURCE: "1"},
                                    "limits": {GPU_RESOURCE: "1"},
                                },
                            }
                        ],
                    }
                },
            },
        }
    )


@pytest.mark.parametrize("product", [L4, H100])
def test_gpu_job_is_placed_on_the_requested_product_and_completes(
    control_plane: ControlPlane, kube: Any, namespace: str, product: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=_gpu_job("build", product))
    core, batch = client.CoreV1Api(kube), client.BatchV1Api(kube)

    def scheduled_pod() -> Any:
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=build").items
        return next((p for p in pods if p.spec.node_name), None)

    pod = wait_for(scheduled_pod, 120, message="the Job's pod is bound to a node by kube-scheduler")
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels[GPU_PRODUCT_LABEL] == product
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod.metadata.name}")
    assert any(
        e.reason == "Scheduled" and e.source.component == "default-scheduler" for e in events.items
    ) or any(
        e.reason == "Scheduled" and (e.reporting_component or "") == "default-scheduler" for e in events.items
    )

    def complete() -> bool:
        job = batch.read_namespaced_job("build", namespace)
        return any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])

    wait_for(complete, 120, message="the Job completes (kwok finishes its pod, the job controller sees it)")
    assert batch.read_namespaced_job("build", namespace).status.succeeded == 1


def test_pod_without_toleration_stays_off_gpu_nodes(
    control_plane: ControlPlane, kube: Any, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "untolerated"},
            "spec": {
                "nodeSelector": {GPU_PRODUCT_LABEL: L4},
                "containers": [{"name": "c", "image": "registry.invalid/none:e2e"}],
            },
        },
    )

    def unschedulable() -> bool:
        pod = core.read_namespaced_pod("untolerated", namespace)
        return any(
            c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
            for c in pod.status.conditions or []
        )

    wait_for(unschedulable, 60, message="kube-scheduler reports the pod Unschedulable (taint, no toleration)")
    pod = core.read_namespaced_pod("untolerated", namespace)
    assert pod.spec.node_name is None
    message = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert "untolerated taint" in message


def test_kuberay_crds_are_established(kube: Any) -> None:
    ext = client.ApiextensionsV1Api(kube)
    for name in ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io"):
        crd = ext.read_custom_resource_definition(name)
        assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions), name


RAYCLUSTER = {
    "apiVersion": "ray.io/v1",
    "kind": "RayCluster",
    "metadata": {"name": "smoke"},
    "spec": {
        "rayVersion": "2.50.0",
        "headGroupSpec": {
            "rayStartParams": {},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "ray-head",
                            "image": "rayproject/ray:2.50.0",
                            "resources": {
                                "requests": {"cpu": "1", "memory": "2Gi"},
                                "limits": {"cpu": "1", "memory": "2Gi"},
                            },
                        }
                    ]
                }
            },
        },
        "workerGroupSpecs": [
            {
                "groupName": "h100",
                "replicas": 2,
                "minReplicas": 2,
                "maxReplicas": 2,
                "rayStartParams": {},
                "template": {
                    "spec": {
                        "nodeSelector": {GPU_PRODUCT_LABEL: H100},
                        "tolerations": [GPU_TOLERATION],
                        "containers": [
                            {
                                "name": "ray-worker",
                                "image": "rayproject/ray:2.50.0-gpu",
                                "resources": {
                                    "requests": {"cpu": "4", "memory": "16Gi", GPU_RESOURCE: "1"},
                                    "limits": {"cpu": "4", "memory": "16Gi", GPU_RESOURCE: "1"},
                                },
                            }
                        ],
                    }
                },
            }
        ],
    },
}


def test_raycluster_gets_pods_from_the_kuberay_operator(
    control_plane: ControlPlane, kube: Any, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(RAYCLUSTER))
    core = client.CoreV1Api(kube)
    custom = client.CustomObjectsApi(kube)

    def running_pods() -> list[Any]:
        pods = core.list_namespaced_pod(namespace, label_selector="ray.io/cluster=smoke").items
        running = [p for p in pods if p.status.phase == "Running" and p.spec.node_name]
        return running if len(running) == 3 else []

    pods = wait_for(running_pods, 180, message="KubeRay creates head + 2 workers; scheduled; kwok runs them")
    for pod in pods:
        owner = pod.metadata.owner_references[0]
        assert (owner.kind, owner.name, owner.controller) == ("RayCluster", "smoke", True)
        node = core.read_node(pod.spec.node_name)
        if pod.metadata.labels["ray.io/node-type"] == "worker":
            assert node.metadata.labels[GPU_PRODUCT_LABEL] == H100
        else:
            assert GPU_PRODUCT_LABEL not in node.metadata.labels

    def ready() -> Any:
        obj = custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", "smoke")
        status = obj.get("status") or {}
        return status if status.get("state") == "ready" and status.get("readyWorkerReplicas") == 2 else None

    wait_for(ready, 120, message="KubeRay reports the RayCluster ready")
    # KubeRay also made the head Service.
    assert core.list_namespaced_service(namespace, label_selector="ray.io/cluster=smoke").items


def test_teardown_stops_every_component_and_leaves_no_orphans(e2e_binaries: Binaries, tmp_path: Any) -> None:
    workdir = tmp_path / "plane"
    plane = ControlPlane(e2e_binaries, workdir, fleet=[cpu_node("solo-0")])
    plane.start()
    try:
        pids = plane.pids()
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
            "kuberay-operator",
        }
        assert all(pid_alive(pid) for pid in pids.values())
        assert set(processes_using(str(workdir))) >= set(pids.values())
    finally:
        plane.stop()
    assert not [name for name, pid in pids.items() if pid_alive(pid)]
    assert processes_using(str(workdir)) == []
    assert not workdir.exists()
