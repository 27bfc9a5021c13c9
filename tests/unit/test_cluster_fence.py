"""The cluster platform puts a model's NetworkPolicy in place before its Ray pods can exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from recserve_operator import kube
from recserve_operator.cluster.platform import ClusterPlatform
from recserve_operator.planners.serve_config import DeployPlan, ServedVersion
from recserve_operator.settings import OperatorSettings
from recserve_operator.validate import load_model

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests/examples/movielens-ranker.yaml"
PEERS = {"kuberay": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "kuberay"}}}]}


@pytest.fixture
def model():
    loaded = load_model(EXAMPLE)
    meta = loaded.metadata.model_copy(update={"namespace": "ml", "uid": "u-1"})
    return loaded.model_copy(update={"metadata": meta})


@pytest.fixture
def api(monkeypatch):
    """An in-memory API server for the calls ``deploy`` makes, recording them in order."""
    calls: list[tuple[str, str]] = []
    store: dict[str, dict] = {}

    def create(kind):
        def _create(body):
            calls.append(("create", kind))
            store[kind] = body

        return _create

    def patch(kind):
        def _patch(namespace, name, spec):
            calls.append(("patch", kind))
            store[kind] = {**store[kind], "spec": spec}

        return _patch

    monkeypatch.setattr(kube, "get_network_policy", lambda ns, name: store.get("NetworkPolicy"))
    monkeypatch.setattr(kube, "create_network_policy", create("NetworkPolicy"))
    monkeypatch.setattr(kube, "patch_network_policy_spec", patch("NetworkPolicy"))
    monkeypatch.setattr(kube, "get_rayservice", lambda ns, name: store.get("RayService"))
    monkeypatch.setattr(kube, "create_rayservice", create("RayService"))
    monkeypatch.setattr(kube, "patch_rayservice_spec", patch("RayService"))
    return calls, store


PLAN = DeployPlan(ServedVersion("m/1", "/artifacts/engines/a"))


def test_serving_pods_never_start_without_their_network_policy(model, api):
    calls, store = api
    ClusterPlatform(OperatorSettings(network_policy=PEERS)).deploy(model, PLAN)
    assert calls == [("create", "NetworkPolicy"), ("create", "RayService")]
    assert store["NetworkPolicy"]["metadata"]["namespace"] == "ml"


def test_a_loosened_network_policy_is_put_back(model, api):
    calls, store = api
    platform = ClusterPlatform(OperatorSettings(network_policy=PEERS))
    platform.deploy(model, PLAN)
    wanted = store["NetworkPolicy"]["spec"]
    store["NetworkPolicy"] = {**store["NetworkPolicy"], "spec": {**wanted, "ingress": [{}]}}
    calls.clear()
    platform.deploy(model, PLAN)
    assert ("patch", "NetworkPolicy") in calls and store["NetworkPolicy"]["spec"] == wanted
    calls.clear()
    platform.deploy(model, PLAN)
    assert ("patch", "NetworkPolicy") not in calls


def test_no_network_policy_is_planned_when_it_is_switched_off(model, api):
    calls, _ = api
    ClusterPlatform(OperatorSettings()).deploy(model, PLAN)
    assert calls == [("create", "RayService")]
