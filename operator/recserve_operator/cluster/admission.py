"""The validating admission webhook: the same messages as ``recserve validate``, at apply time.

On top of the schema and CEL rules the API server already enforces, it checks what needs
the cluster's view: a model-parallel replica must fit on one node of the requested GPU
product, or it would never schedule.
"""

from __future__ import annotations

from typing import Any

import kopf

from recserve_operator import kube
from recserve_operator.api.types import GROUP, PLURAL, VERSION, RecommenderModel
from recserve_operator.planners.k8s_common import GPU_PRODUCT_LABEL, GPU_RESOURCE
from recserve_operator.validate import check_document


def placement_problems(model: RecommenderModel, nodes: list[dict[str, Any]]) -> list[str]:
    """A replica's shards need ``pipeline × tensor × gpus`` GPUs on one node of the product."""
    serving = model.spec.serving
    if not serving.resources.gpus:
        return []
    needed = serving.parallelism.shards * serving.resources.gpus
    product = serving.resources.gpu_product
    capacities = [
        float(node.get("capacity", {}).get(GPU_RESOURCE, 0) or 0)
        for node in nodes
        if product is None or node.get("labels", {}).get(GPU_PRODUCT_LABEL) == product
    ]
    largest = max(capacities, default=0.0)
    if needed > largest:
        where = f"nodes labelled {GPU_PRODUCT_LABEL}={product}" if product else "any node"
        return [
            f"spec.serving.parallelism: a replica needs {needed:g} GPUs on one node "
            f"(pipeline × tensor × resources.gpus), but {where} has at most {largest:g}"
        ]
    return []


@kopf.on.validate(GROUP, VERSION, PLURAL, id="recserve-validate", operations=["CREATE", "UPDATE"])
def validate_model(body: kopf.Body, **_: Any) -> None:
    document = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
    model, problems = check_document(document)
    messages = [str(p) for p in problems]
    if model is not None:
        messages += placement_problems(model, kube.node_gpu_inventory())
    if messages:
        raise kopf.AdmissionError("; ".join(messages), code=422)
