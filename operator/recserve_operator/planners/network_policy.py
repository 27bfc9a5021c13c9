"""The ``networking.k8s.io/v1`` NetworkPolicy that fences one model's Ray pods.

It is planned here, beside the RayService, rather than in the Helm chart: the operator sets
the serving pods' labels (``rayservice.serving_pod_labels``) and knows each model's
namespace, while the chart knows neither which namespaces will hold models (cluster scope)
nor how KubeRay's pods are labelled. One policy per model, owned by the model, follows it
into whatever namespace it lives in and is garbage-collected with it.

The Ray head's dashboard port runs Serve's REST API and Ray's job submission, which executes
arbitrary code in a pod that holds the artifact store and the model's environment. Without a
policy any pod in the cluster can reach it; with one, only these do:

- the model's own Ray pods, on every port (GCS, raylets, object transfer and the dashboard
  agents use ports spread over wide ranges, so Ray traffic cannot be narrowed per port);
- the KubeRay operator, on the dashboard (it deploys and watches Serve apps there);
- the recserve operator, on the Serve HTTP port (it scrapes ``/metrics`` for canary analysis);
- Prometheus, on the Serve HTTP port (router metrics) and Ray's metrics port;
- serving clients, on the Serve HTTP port.
"""

from __future__ import annotations

from typing import Any

from recserve_operator.api.types import RecommenderModel
from recserve_operator.planners.k8s_common import metadata
from recserve_operator.planners.rayservice import (
    DASHBOARD_PORT,
    RAY_METRICS_PORT,
    SERVING_COMPONENT,
    serving_pod_labels,
)


def policy_name(model: RecommenderModel) -> str:
    return f"{model.metadata.name}-serving"


def _rule(peers: list[dict[str, Any]], ports: list[int]) -> dict[str, Any] | None:
    """An ingress rule, or None for no peers: a rule with an empty ``from`` admits everyone."""
    if not peers:
        return None
    return {"from": [dict(p) for p in peers], "ports": [{"protocol": "TCP", "port": p} for p in ports]}


def plan_network_policy(
    model: RecommenderModel, peers: dict[str, list[dict[str, Any]]], serve_port: int
) -> dict[str, Any]:
    """The model's policy for the peer groups of ``OperatorSettings.network_policy``."""
    selector = serving_pod_labels(model)
    rules = [
        {"from": [{"podSelector": {"matchLabels": dict(selector)}}]},
        _rule(peers.get("kuberay", []), [DASHBOARD_PORT]),
        _rule(peers.get("operator", []), [serve_port]),
        _rule(peers.get("metrics", []), [serve_port, RAY_METRICS_PORT]),
        _rule(peers.get("servingClients", []), [serve_port]),
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(model, policy_name(model), SERVING_COMPONENT),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [rule for rule in rules if rule is not None],
        },
    }
