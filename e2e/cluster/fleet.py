"""The simulated fleet: Node objects that kwok keeps alive (Ready, heartbeats, leases) and whose
pods it drives through their lifecycle. CPU nodes, and GPU nodes of two products labelled and
tainted the way GPU pools usually are (NVIDIA device plugin / GPU feature discovery)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
# What a pod needs to land on a GPU node: the toleration for the taint above.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

H100 = "NVIDIA-H100-80GB-HBM3"
L4 = "NVIDIA-L4"

# kwok manages exactly the nodes carrying this annotation (see ControlPlane's kwok flags).
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
FLEET_LABEL = "recserve.dev/e2e-fleet"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu: str
    memory: str
    gpus: int = 0
    gpu_product: str | None = None
    pods: int = 110
    instance_type: str = "e2e-cpu"
    labels: dict[str, str] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": self.instance_type,
            "type": "kwok",
            FLEET_LABEL: "true",
        }
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods)}
        taints: list[dict[str, str]] = []
        if self.gpus:
            if not self.gpu_product:
                raise ValueError(f"GPU node {self.name} needs a gpu_product")
            labels[GPU_PRODUCT_LABEL] = self.gpu_product
            labels[GPU_COUNT_LABEL] = str(self.gpus)
            labels[GPU_PRESENT_LABEL] = "true"
            capacity[GPU_RESOURCE] = str(self.gpus)
            taints.append(dict(GPU_TAINT))
        labels.update(self.labels)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE},
            },
            "spec": {"taints": taints} if taints else {},
            # Nodes accept status on create; kwok's node-initialize stage keeps these figures.
            "status": {"capacity": capacity, "allocatable": dict(capacity)},
        }


def cpu_node(name: str) -> NodeSpec:
    return NodeSpec(name=name, cpu="16", memory="64Gi", instance_type="e2e-cpu-16")


def gpu_node(name: str, product: str) -> NodeSpec:
    if product == H100:
        return NodeSpec(
            name=name, cpu="208", memory="1800Gi", gpus=8, gpu_product=H100, instance_type="e2e-h100x8"
        )
    if product == L4:
        return NodeSpec(name=name, cpu="96", memory="384Gi", gpus=8, gpu_product=L4, instance_type="e2e-l4x8")
    raise ValueError(f"unknown GPU product {product!r}")


def default_fleet(cpu: int = 2, h100: int = 2, l4: int = 2) -> list[NodeSpec]:
    """The fleet every e2e session starts with."""
    return (
        [cpu_node(f"cpu-{i}") for i in range(cpu)]
        + [gpu_node(f"gpu-h100-{i}", H100) for i in range(h100)]
        + [gpu_node(f"gpu-l4-{i}", L4) for i in range(l4)]
    )


def node_is_ready(node: Any) -> bool:
    """``node`` is a kubernetes.client V1Node."""
    for cond in (node.status and node.status.conditions) or []:
        if cond.type == "Ready":
            return cond.status == "True"
    return False
