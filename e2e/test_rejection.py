"""Scenario 3, rejection: an invalid RecommenderModel never gets as far as a pod.

1. Schema and CEL: the API server itself refuses invalid specs at ``kubectl apply``, with the
   messages written in the CRD (generated from the API types), and stores nothing.
2. Webhook off: every rule ``recserve validate`` knows is also a CRD rule, so what still gets
   past the API server is what only the cluster can judge. A checkpoint the registry does not
   hold is refused by the operator: ``Stalled=True`` (reason ``CheckpointNotFound``), one
   Warning event (not one per resync), and no Job or RayService. Parallelism needing more GPUs
   than any node of the product has is the other such spec: the API server accepts it, and
   without the webhook nothing checks it (the chart grants the operator no node access then),
   so its workers would stay Pending; the webhook is the place for that check.
3. Webhook on: kopf's webhook server, started by the operator (``--webhook-port``) on
   127.0.0.1 with a certificate for 127.0.0.1 from a throwaway CA, registers itself in the
   chart's ValidatingWebhookConfiguration (URL https://127.0.0.1:PORT, CA bundle from
   ``--webhook-cert-dir``); the real API server calls it and the too-wide spec is refused with
   the placement message. The chart's own certificate is not used: it names the webhook Service,
   and Services have no endpoints here. kopf's self-generated certificate (no
   ``--webhook-cert-dir``) needs ``certbuilder``, which is not installed.

Real: API server (OpenAPI schema, CEL, admission webhooks over TLS), helm, operator, MLflow.
Simulated: nothing (no pod is ever created).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e.cluster.controlplane import ControlPlane, free_port
from e2e.cluster.pki import PKI
from e2e.harness import (
    GROUP,
    OperatorProcess,
    apply,
    build_jobs,
    condition_summary,
    conditions,
    get_model,
    gpu_model,
    model_events,
)
from recserve_operator.api.placement import GPU_PRODUCT_HINT
from recserve_serving.waiting import wait_for

VALID = yaml.safe_load((Path(__file__).parents[1] / "manifests/examples/movielens-ranker.yaml").read_text())
CANARY = {
    "checkpoint": {"uri": "models:/movielens-ranker/2"},
    "steps": [{"weight": 25, "pause": "1m"}, {"weight": 5, "pause": "1m"}],
    "analysis": {"maxErrorRate": 0.01},
}


def crd_messages(kube: Any) -> set[str]:
    """Every CEL rule message in the installed CRD: the documented messages."""
    crd = client.ApiextensionsV1Api(kube).read_custom_resource_definition(f"recommendermodels.{GROUP}")
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations") or []:
                found.add(rule["message"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(kube.sanitize_for_serialization(crd)["spec"])
    return found


def variant(name: str, edit: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    doc["metadata"]["name"] = name
    edit(doc["spec"])
    return doc


POOL = {
    "nodeSelector": {"recserve.dev/pool": "inference"},
    "tolerations": [
        {"key": "recserve.dev/pool", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}
    ],
}
"""A valid ``spec.placement``: a dedicated pool's label and its taint."""

# (name, edit, the field the API server names, its message, whether it is a CEL rule of the CRD)
INVALID = [
    (
        "replicas",
        lambda s: s["serving"]["autoscaling"].update(minReplicas=3, maxReplicas=2),
        "spec.serving.autoscaling.minReplicas",
        "minReplicas must be <= maxReplicas",
        True,
    ),
    (
        "steps",
        lambda s: s.update(rollout={"canary": CANARY}),
        "spec.rollout.canary.steps",
        "step weights must strictly increase",
        True,
    ),
    (
        "fp16-cpu",
        lambda s: s["optimization"].update(precision="fp16", backend="torch"),
        "spec.optimization.precision",
        "precision fp16 needs serving.resources.gpus > 0",
        True,
    ),
    (
        "pipeline-tensorrt",
        lambda s: s.update(
            optimization={**s["optimization"], "backend": "tensorrt", "precision": "fp16"},
            serving={**s["serving"], "resources": {"gpus": 1}, "parallelism": {"pipeline": 2}},
        ),
        "spec.serving.parallelism.pipeline",
        "pipeline parallelism runs torch engines only: set optimization.backend to torch, "
        "or serving.parallelism.pipeline to 1",
        True,
    ),
    (
        "tensor-parallel",
        lambda s: s.update(serving={**s["serving"], "parallelism": {"tensor": 2}}),
        "spec.serving.parallelism.tensor",
        "tensor parallelism is not implemented; use pipeline",
        True,
    ),
    (
        "enum",
        lambda s: s["optimization"].update(precision="fp64"),
        "spec.optimization.precision",
        'Unsupported value: "fp64"',
        False,
    ),
    (
        "toleration",
        lambda s: s.update(placement={"tolerations": [{"key": "pool", "operator": "Exists", "value": "x"}]}),
        "spec.placement.tolerations[0].value",
        "operator Exists takes no value",
        True,
    ),
    (
        "selector",
        lambda s: s.update(placement={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}),
        "spec.placement.nodeSelector",
        GPU_PRODUCT_HINT,
        True,
    ),
    (
        "bound",
        lambda s: s.update(rollout={"canary": {**CANARY, "steps": [{"weight": 101, "pause": "1m"}]}}),
        "spec.rollout.canary.steps[0].weight",
        "should be less than or equal to 100",
        False,
    ),
]


def test_schema_and_cel_reject_invalid_specs_at_apply(
    control_plane: ControlPlane, kube: Any, namespace: str, chart: Any
) -> None:
    chart()
    documented = crd_messages(kube)
    assert (
        apply(control_plane, namespace, variant("valid", lambda s: s.update(placement=POOL))).returncode == 0
    )
    for name, edit, field, message, cel in INVALID:
        result = apply(control_plane, namespace, variant(name, edit), check=False)
        assert result.returncode != 0, name
        assert f'The RecommenderModel "{name}" is invalid' in result.stderr, result.stderr
        assert f"{field}: Invalid value: " in result.stderr or f"{field}: Unsupported value" in result.stderr
        assert message in result.stderr, (name, result.stderr)
        assert not cel or message in documented, (message, "is not a message of the CRD")
    assert {m["metadata"]["name"] for m in _models(kube, namespace)} == {"valid"}


def _models(kube: Any, namespace: str) -> list[dict[str, Any]]:
    return list(
        client.CustomObjectsApi(kube).list_namespaced_custom_object(
            GROUP, "v1alpha1", namespace, "recommendermodels"
        )["items"]
    )


def test_webhook_off_a_checkpoint_the_registry_lacks_stalls_with_one_event_and_nothing_created(
    control_plane: ControlPlane,
    kube: Any,
    namespace: str,
    chart: Any,
    tiny_registry: dict[str, str],
    tmp_path: Path,
) -> None:
    install = chart()
    # A 2 s resync instead of 10 s (recserve_operator.cluster.handlers.TICK_ENV): the test waits out
    # two resyncs to see that they add no event and create nothing, whatever the period.
    env = {
        "RECSERVE_MLFLOW_TRACKING_URI": tiny_registry["trackingUri"],
        "RECSERVE_OPERATOR_TICK_SECONDS": "2",
    }
    missing = gpu_model("no-such-version")
    missing["spec"]["checkpoint"]["uri"] = "models:/movielens-ranker/7"
    too_wide = gpu_model("too-wide")
    too_wide["spec"]["serving"]["parallelism"]["pipeline"] = 16  # 16 H100s on one node; nodes have 8
    with OperatorProcess(install, tmp_path, env=env) as operator:
        # Without the webhook the API server cannot know about nodes or the registry.
        dry = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                                    input=yaml.safe_dump(too_wide))  # fmt: skip
        assert dry.returncode == 0
        apply(control_plane, namespace, missing)

        def stalled() -> dict[str, Any] | None:
            model = get_model(kube, namespace, "no-such-version")
            return model if condition_summary(model).get("Stalled") == "True" else None

        model = wait_for(stalled, 120, interval=0.5, message="Stalled=True")
        summary = condition_summary(model)
        assert (summary["phase"], summary["Ready"], summary["Reconciling"]) == ("Failed", "False", "False")
        stall = conditions(model)["Stalled"]
        assert stall["reason"] == "CheckpointNotFound"
        assert stall["message"].startswith("models:/movielens-ranker/7: not in the registry at sqlite:")
        warnings = [e for e in model_events(kube, namespace, "no-such-version") if e.type == "Warning"]
        assert [e.reason for e in warnings] == ["CheckpointNotFound"]

        # Two resyncs (the 2 s timer) later: still one event, and still nothing created.
        generation = model["metadata"]["generation"]
        passes = operator.log.count("Timer 'on_tick' succeeded")
        wait_for(lambda: operator.log.count("Timer 'on_tick' succeeded") >= passes + 2, 60, message="resyncs")
        assert [e.reason for e in model_events(kube, namespace, "no-such-version")] == ["CheckpointNotFound"]
        assert get_model(kube, namespace, "no-such-version")["status"]["observedGeneration"] == generation
        assert build_jobs(kube, namespace) == []
        services = client.CustomObjectsApi(kube).list_namespaced_custom_object(
            "ray.io", "v1", namespace, "rayservices"
        )
        assert services["items"] == []


@pytest.fixture
def webhook_certs(tmp_path: Path) -> Path:
    """tls.crt/tls.key for 127.0.0.1 and the ca.crt that signed them (kopf's --webhook-cert-dir)."""
    pki = PKI(tmp_path / "webhook-pki")
    pair = pki.issue("tls", "127.0.0.1", ips=("127.0.0.1",), server=True)
    assert pair.cert.name == "tls.crt" and pki.ca.cert.name == "ca.crt"
    return pki.root


def test_webhook_on_refuses_what_only_the_cluster_can_judge(
    control_plane: ControlPlane,
    kube: Any,
    namespace: str,
    chart: Any,
    tiny_registry: dict[str, str],
    webhook_certs: Path,
    tmp_path: Path,
) -> None:
    install = chart(webhook=True)
    admission = client.AdmissionregistrationV1Api(kube)
    env = {"RECSERVE_MLFLOW_TRACKING_URI": tiny_registry["trackingUri"]}
    port = free_port()
    args = (
        "--webhook-port",
        str(port),
        "--webhook-host",
        "127.0.0.1",
        "--webhook-cert-dir",
        str(webhook_certs),
    )
    too_wide = gpu_model("too-wide")
    too_wide["spec"]["serving"]["parallelism"]["pipeline"] = 16
    with OperatorProcess(install, tmp_path, env=env, args=args) as operator:

        def registered() -> Any:
            config = admission.read_validating_webhook_configuration("recserve.dev")
            hooks = config.webhooks or []
            return hooks[0] if hooks else None

        hook = wait_for(registered, 60, interval=0.5, message="kopf writes its webhook")
        assert hook.client_config.url == f"https://127.0.0.1:{port}/recserve-validate"
        assert hook.client_config.ca_bundle and hook.failure_policy == "Fail"
        assert not admission.read_mutating_webhook_configuration("recserve.dev").webhooks

        refused = apply(control_plane, namespace, too_wide, check=False)
        assert refused.returncode != 0
        assert 'admission webhook "recserve-validate.recserve.dev" denied the request' in refused.stderr
        assert "spec.serving.parallelism: a replica needs 16 GPUs on one node" in refused.stderr
        assert "at most 8" in refused.stderr
        # The schema still answers first, with its own message...
        cel = variant("replicas", INVALID[0][1])
        assert (
            "minReplicas must be <= maxReplicas" in apply(control_plane, namespace, cel, check=False).stderr
        )
        # ...and a spec that fits passes the webhook.
        assert apply(control_plane, namespace, gpu_model("fits")).returncode == 0
        assert [m["metadata"]["name"] for m in _models(kube, namespace)] == ["fits"]
        assert "Forbidden" not in operator.log
    # Stopping the operator takes its webhook entry out again, so no apply is left failing
    # against a server that is gone; uninstalling the chart then removes both configurations.
    assert not admission.read_validating_webhook_configuration("recserve.dev").webhooks
