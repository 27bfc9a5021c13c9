"""A real kubelet joined to the e2e control plane, and one pod run on it through the API.

The control plane is the e2e tier's own (``controlplane.ControlPlane``, with no kwok nodes);
the node is ``realnode.RealNode`` registered with a client certificate from the control
plane's CA as ``system:node:<name>``, a label and a NoSchedule taint, so that only a pod that
selects and tolerates it lands there and kwok's simulated fleet, when present, is untouched.

    python -m e2e.cluster.nodejoin [--containerd-dir DIR] [--logs-to DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2e.cluster.clusterdns import dns_identity
from e2e.cluster.controlplane import Binaries, ControlPlane, write_kubeconfig
from e2e.cluster.realnode import NodeBinaries, RealNode, Registration, busybox_pod
from recserve_serving.waiting import wait_for

NODE_NAME = "realnode-0"
NODE_LABEL = ("recserve.dev/node", "real")
NODE_TAINT = {"key": "recserve.dev/real-node", "value": "true", "effect": "NoSchedule"}


def registration(plane: ControlPlane, name: str, *, dns: bool = True) -> Registration:
    """A node identity issued by the control plane's CA, as kubeadm's would be, and with
    ``dns`` one for the node's cluster DNS (whose binary ``NodeBinaries.ensure_built(dns=True)``
    builds)."""
    assert plane.pki is not None
    client = plane.pki.issue(f"kubelet-{name}", f"system:node:{name}", orgs=("system:nodes",), client=True)
    kubeconfig = write_kubeconfig(
        plane.workdir / "kubeconfigs" / f"kubelet-{name}",
        plane.server,
        plane.pki.ca,
        f"system:node:{name}",
        client,
    )
    return Registration(
        kubeconfig,
        plane.pki.ca.cert,
        labels=dict([NODE_LABEL]),
        taints=[NODE_TAINT],
        dns_kubeconfig=dns_identity(plane) if dns else None,
    )


def pod_for_real_node(name: str, message: str) -> dict[str, Any]:
    """A pod that only the real node accepts: it selects the node's label and tolerates its
    taint; the image is the one imported into the node's containerd, never pulled."""
    pod = busybox_pod(name, message)
    del pod["metadata"]["namespace"]
    pod["spec"]["nodeSelector"] = dict([NODE_LABEL])
    pod["spec"]["tolerations"] = [{"key": NODE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}]
    return pod


def node_ready(core: Any, name: str) -> bool:
    node = core.read_node(name)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def run(containerd_dir: Path | None, logs_to: Path | None) -> int:
    from kubernetes import client

    t0 = time.monotonic()
    plane = ControlPlane(Binaries.ensure_built(), fleet=[]).start()
    print(f"control plane up in {time.monotonic() - t0:.1f}s ({plane.workdir})")
    node = None
    try:
        bins = NodeBinaries.ensure_built(containerd_dir)
        t1 = time.monotonic()
        node = RealNode(bins, name=NODE_NAME, registration=registration(plane, NODE_NAME)).start()
        core = client.CoreV1Api(plane.api_client())
        wait_for(lambda: node_ready(core, NODE_NAME), 120, interval=0.5, message=f"node {NODE_NAME} Ready")
        print(f"node {NODE_NAME} Ready {time.monotonic() - t1:.1f}s after its containerd started")
        print(plane.kubectl("get", "node", NODE_NAME, "-o", "wide", "--show-labels").stdout)
        print(plane.kubectl("get", "node", NODE_NAME, "-o", "jsonpath={.spec.taints}").stdout)

        t2 = time.monotonic()
        core.create_namespaced_pod("default", pod_for_real_node("hello-api", "hello-through-the-api-server"))

        def running() -> Any:
            pod = core.read_namespaced_pod("hello-api", "default")
            return pod if pod.status.phase == "Running" else None

        pod = wait_for(running, 120, interval=0.5, message="pod hello-api Running")
        print(
            f"pod Running {time.monotonic() - t2:.1f}s after it was created: node={pod.spec.node_name} ip={pod.status.pod_ip}"
        )
        print(plane.kubectl("get", "pods", "-A", "-o", "wide").stdout)
        print("$ ctr -n k8s.io tasks list\n" + node.ctr("tasks", "list").stdout)
        for args in (["logs", "hello-api"], ["exec", "hello-api", "--", "hostname"]):
            proc = plane.kubectl(*args, check=False)
            print(f"$ kubectl {' '.join(args)}: {(proc.stdout + proc.stderr).strip()}")

        t3 = time.monotonic()
        core.delete_namespaced_pod("hello-api", "default")

        def gone() -> bool:
            return not core.list_namespaced_pod("default").items

        wait_for(gone, 60, interval=0.5, message="pod hello-api deleted")
        print(f"pod deleted through the API in {time.monotonic() - t3:.1f}s")
    finally:
        if logs_to is not None:
            shutil.copytree(plane.logs, logs_to / "controlplane", dirs_exist_ok=True)
            if node is not None:
                shutil.copytree(node.logs, logs_to / "node", dirs_exist_ok=True)
        if node is not None:
            node.stop()
        plane.stop()
    print(f"everything stopped; total {time.monotonic() - t0:.1f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster.nodejoin", description=__doc__)
    parser.add_argument(
        "--containerd-dir", type=Path, help="folder with containerd, its shim and ctr (default /usr/bin)"
    )
    parser.add_argument("--logs-to", type=Path, help="copy every component's log here before cleaning up")
    args = parser.parse_args(argv)
    return run(args.containerd_dir, args.logs_to)


if __name__ == "__main__":
    sys.exit(main())
