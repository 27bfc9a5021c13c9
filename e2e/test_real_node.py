"""A real kubelet and containerd beside kwok's simulated fleet, in ``make test``.

It needs root, and Debian's containerd, runc, CNI plugins and busybox-static, which
``e2e/cluster/build.sh`` installs when they are missing. Nothing here is simulated: the
scheduler binds the pod to the real node, whose kubelet runs it in containerd with runc. The
cluster DNS is ``test_real_node_dns.py``'s (``make test-all``).
"""

from __future__ import annotations

import ipaddress
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
