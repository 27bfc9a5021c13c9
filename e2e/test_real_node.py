"""A real kubelet and containerd beside kwok's simulated fleet (opt-in: RECSERVE_E2E_REAL_NODE=1).

Collected only with RECSERVE_E2E_REAL_NODE=1 (see ``conftest.collect_ignore``): it needs root,
Debian's containerd, runc, CNI plugins and busybox-static, and the node's cluster DNS, whose
CoreDNS build ``make test`` does not pay for. With it, nothing here is simulated: the scheduler
binds the pod to the real node, whose kubelet runs it in containerd with runc, and pods resolve
Service names through CoreDNS reading the API server.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
import urllib.request
from typing import Any

from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.cluster.nodejoin import NODE_LABEL, NODE_TAINT, pod_for_real_node
from e2e.cluster.realnode import BUSYBOX_IMAGE, RealNode
from recserve_serving.waiting import wait_for


def test_real_node_registers_ready_with_its_label_and_taint(
    control_plane: ControlPlane, real_node: RealNode
) -> None:
    core = client.CoreV1Api(control_plane.api_client())
    node = core.read_node(real_node.name)
    assert node.metadata.labels[NODE_LABEL[0]] == NODE_LABEL[1]

    def only_our_taint() -> bool:
        taints = core.read_node(real_node.name).spec.taints
        return [(t.key, t.value, t.effect) for t in taints] == [
            (NODE_TAINT["key"], NODE_TAINT["value"], NODE_TAINT["effect"])
        ]

    # The node lifecycle controller lifts its node.kubernetes.io/not-ready taint on its next
    # pass after the node turns Ready (every 5 s), not at once.
    wait_for(only_our_taint, 30, interval=0.5, message="only the registered taint left")
    assert node.status.node_info.kubelet_version == "v1.37.2"


def test_pod_through_the_api_runs_in_a_real_container(
    control_plane: ControlPlane, real_node: RealNode, namespace: str
) -> None:
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespaced_pod(namespace, pod_for_real_node("hello", "hello-from-a-real-container"))

    def running() -> Any:
        pod = core.read_namespaced_pod("hello", namespace)
        return pod if pod.status.phase == "Running" else None

    pod = wait_for(running, 120, interval=0.5, message="pod hello Running on the real node")
    assert pod.spec.node_name == real_node.name
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(real_node.net.pod_subnet)
    # Through the API server, which reaches the kubelet with its client certificate.
    logs = control_plane.kubectl("logs", "-n", namespace, "hello").stdout
    assert logs == "hello-from-a-real-container\n"
    exec_out = control_plane.kubectl("exec", "-n", namespace, "hello", "--", "hostname").stdout
    assert exec_out.strip() == "hello"
    assert "RUNNING" in real_node.ctr("tasks", "list").stdout
    core.delete_namespaced_pod("hello", namespace)
    wait_for(
        lambda: not core.list_namespaced_pod(namespace).items, 60, interval=0.5, message="pod hello deleted"
    )


def test_http_readiness_probe_and_the_host_reach_the_pod_ip(
    control_plane: ControlPlane, real_node: RealNode, namespace: str
) -> None:
    """The kubelet (host network) probes the pod's IP on the node's bridge, and so can a test."""
    core = client.CoreV1Api(control_plane.api_client())
    pod = pod_for_real_node("web", "unused")
    pod["spec"]["containers"][0].update(
        command=[
            "/bin/sh",
            "-c",
            "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        ],
        readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    )
    assert pod["spec"]["containers"][0]["image"] == BUSYBOX_IMAGE
    core.create_namespaced_pod(namespace, pod)

    def ready() -> Any:
        status = core.read_namespaced_pod("web", namespace).status
        return (
            status if any(c.type == "Ready" and c.status == "True" for c in status.conditions or []) else None
        )

    status = wait_for(ready, 120, interval=0.5, message="pod web Ready by its httpGet probe")
    with urllib.request.urlopen(f"http://{status.pod_ip}:8080/", timeout=5) as resp:
        assert resp.read() == b"ok\n"
    core.delete_namespaced_pod("web", namespace)
    wait_for(
        lambda: not core.list_namespaced_pod(namespace).items, 60, interval=0.5, message="pod web deleted"
    )


def _running_pod(core: Any, namespace: str, name: str, labels: dict[str, str]) -> Any:
    pod = pod_for_real_node(name, "unused")
    pod["metadata"]["labels"] = labels
    pod["spec"]["terminationGracePeriodSeconds"] = 0
    core.create_namespaced_pod(namespace, pod)

    def running() -> Any:
        status = core.read_namespaced_pod(name, namespace).status
        return status if status.phase == "Running" and status.pod_ip else None

    return wait_for(running, 120, interval=0.5, message=f"pod {name} Running on the real node")


def _service(name: str, selector: dict[str, str], *, headless: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector, "ports": [{"name": "web", "port": 80, "targetPort": 8080}]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def test_pods_resolve_service_names_through_the_cluster_dns(
    control_plane: ControlPlane, real_node: RealNode, namespace: str
) -> None:
    """What KubeRay's workers do to find their head: a headless Service's name answers with the
    IP of the pod it selects; a ClusterIP Service's name with its ClusterIP; anything the
    cluster DNS does not serve fails at once instead of hanging."""
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespaced_service(namespace, _service("head-svc", {"app": "head"}, headless=True))
    core.create_namespaced_service(namespace, _service("web", {"app": "head"}, headless=False))
    head = _running_pod(core, namespace, "head", {"app": "head"})
    _running_pod(core, namespace, "client", {"app": "client"})
    cluster_ip = core.read_namespaced_service("web", namespace).spec.cluster_ip

    def nslookup(name: str) -> subprocess.CompletedProcess[str]:
        return control_plane.kubectl(
            "exec", "-n", namespace, "client", "--", "nslookup", "-type=a", name, check=False, timeout=30
        )

    def addresses(name: str) -> list[str]:
        out = nslookup(name).stdout
        return [line.split()[-1] for line in out.splitlines() if line.startswith("Address:")][1:]

    resolv = control_plane.kubectl("exec", "-n", namespace, "client", "--", "cat", "/etc/resolv.conf").stdout
    assert f"nameserver {real_node.net.host_ip}" in resolv.splitlines()
    assert f"{namespace}.svc.cluster.local" in resolv
    head_name = f"head-svc.{namespace}.svc.cluster.local"
    # The EndpointSlice follows the pod's readiness by a moment, and CoreDNS its watch.
    wait_for(
        lambda: addresses(head_name) == [head.pod_ip], 30, interval=0.5, message=f"{head_name} -> pod IP"
    )
    assert addresses(f"web.{namespace}.svc.cluster.local") == [cluster_ip]
    for name, error in ((f"missing.{namespace}.svc.cluster.local", "NXDOMAIN"), ("example.com", "REFUSED")):
        t0 = time.monotonic()
        proc = nslookup(name)
        assert proc.returncode != 0 and error in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
        assert time.monotonic() - t0 < 5
    for pod in ("head", "client"):
        core.delete_namespaced_pod(pod, namespace)
    wait_for(
        lambda: not core.list_namespaced_pod(namespace).items, 60, interval=0.5, message="dns pods deleted"
    )
