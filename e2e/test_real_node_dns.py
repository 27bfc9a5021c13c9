"""The real node's cluster DNS (``make test-all``: CoreDNS is built for it, about 110 CPU-seconds
cold): pods on the real node resolve Service names through CoreDNS reading the API server, as
KubeRay's workers find their head.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.cluster.nodejoin import pod_for_real_node
from e2e.cluster.realnode import RealNode
from recserve_serving.waiting import wait_for

pytestmark = pytest.mark.long


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
    control_plane: ControlPlane, real_node_with_dns: RealNode, namespace: str
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
    assert f"nameserver {real_node_with_dns.net.host_ip}" in resolv.splitlines()
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
