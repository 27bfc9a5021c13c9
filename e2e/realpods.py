"""Pods of the serving image on the real node, as the tests build them: one secured shape (the
operator's pod hardening, the artifact store read-only at the operator's paths) and one way to
see that a deleted pod left nothing in containerd. One copy, so the smoke and the long tests
hold their pods to the same rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.cluster.nodejoin import pod_for_real_node
from e2e.cluster.realnode import RealNode
from recserve_operator.planners.k8s_common import IMAGE_UID
from recserve_operator.planners.rayservice import HOME_MOUNT
from recserve_operator.settings import OperatorSettings
from recserve_serving.waiting import wait_for


def store_pod(
    name: str,
    container: dict[str, Any],
    engine: Path,
    index: Path,
    *,
    tmp_size: str = "256Mi",
    extra_volumes: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = (),
) -> dict[str, Any]:
    """A pod for the real node running ``container`` (name, image, command, ...) as the image's
    uid with a read-only root, no capabilities and no privilege escalation; scratch space is
    emptyDirs, and the engine and the retrieval index are read-only hostPath volumes at the
    operator's paths, standing in for the artifact claim. ``extra_volumes``: (volume, mount)."""
    settings = OperatorSettings()
    pod = pod_for_real_node(name, "unused")
    pod["spec"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID}
    volumes: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"name": "tmp", "emptyDir": {"sizeLimit": tmp_size}}, {"name": "tmp", "mountPath": "/tmp"}),
        ({"name": "home", "emptyDir": {"sizeLimit": "64Mi"}}, {"name": "home", "mountPath": HOME_MOUNT}),
        *extra_volumes,
        (
            {"name": "engine", "hostPath": {"path": str(engine), "type": "Directory"}},
            {"name": "engine", "mountPath": f"{settings.engine_root}/{engine.name}", "readOnly": True},
        ),
        (
            {"name": "index", "hostPath": {"path": str(index), "type": "Directory"}},
            {"name": "index", "mountPath": settings.index_dir, "readOnly": True},
        ),
    ]
    pod["spec"]["containers"][0].update(
        **container,
        securityContext={
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        volumeMounts=[mount for _, mount in volumes],
    )
    pod["spec"]["volumes"] = [volume for volume, _ in volumes]
    return pod


def wait_containers_gone(node: RealNode, timeout: float, what: str) -> None:
    """Deleting a pod through the API ends with its containers and sandbox gone from the node's
    containerd, not only with the API object gone."""
    wait_for(
        lambda: not node.ctr("containers", "list", "-q").stdout.split(),
        timeout,
        interval=0.5,
        message=f"{what} gone from containerd",
    )
