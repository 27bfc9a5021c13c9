"""The Helm chart, rendered by the real helm binary under several value sets and checked in Python.

Runs helm from the e2e tool cache (integration tier: it executes binaries). The expected RBAC
below is written out independently of values.yaml on purpose: widening the operator's
permissions in the chart has to change this table too.
"""

from __future__ import annotations

import argparse
import base64
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from k8s_tools import (
    CHART,
    Doc,
    by_kind,
    crds_of,
    helm_template,
    helm_template_error,
    kubeconform,
    kuberay_crds,
    one,
    run,
    tool,
    write_core_schemas,
    write_crd_schemas,
)

from recserve_operator.cli import SUBCOMMANDS
from recserve_operator.settings import OperatorSettings

pytestmark = pytest.mark.integration

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
NS = "recserve-system"
PSEUDONYM_SECRET = "rs-recserve-pseudonym-key"
TRAINER = "rs-recserve-trainer"

# (apiGroup, resource) -> verbs: what the operator does in a watched namespace.
NAMESPACED = {
    ("recserve.dev", "recommendermodels"): {"list", "watch", "patch"},
    ("recserve.dev", "recommendermodels/status"): {"patch"},
    ("recserve.dev", "recommendermodels/finalizers"): {"update"},
    ("", "events"): {"create"},
    ("batch", "jobs"): {"get", "create"},
    ("batch", "cronjobs"): {"get", "create", "patch", "delete"},
    ("", "pods"): {"list"},
    ("", "pods/log"): {"get"},
    ("ray.io", "rayservices"): {"get", "create", "patch"},
    ("networking.k8s.io", "networkpolicies"): {"get", "create", "patch"},
}
NAMESPACED_PEERING = {("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"}}
CLUSTER_ALWAYS = {("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"}}
CLUSTER_SCOPE_ONLY = {
    ("", "namespaces"): {"list", "watch"},
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
}


def grants(role: Doc) -> dict[tuple[str, str], set[str]]:
    """A role's rules as (group, resource) -> verbs, refusing wildcards and duplicate entries."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in (group, resource, *rule["verbs"]), f"wildcard in {role['metadata']}"
                key = (group, resource)
                assert key not in out, f"{key} granted twice in {role['metadata']['name']}"
                out[key] = set(rule["verbs"])
    return out


def deployment(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment")


def container(docs: list[Doc]) -> Doc:
    (c,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    return c


def env_of(docs: list[Doc]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


@pytest.fixture(scope="module")
def schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schemas")
    assert write_core_schemas(path) > 300
    write_crd_schemas(path, crds_of(sorted((CHART / "crds").glob("*.yaml"))))
    return path


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_helm_lint_strict(values: Path | None) -> None:
    args: list[str | Path] = [tool("helm"), "lint", CHART, "--strict", "--kube-version", "1.37.0"]
    if values:
        args += ["--values", values]
    out = run(args).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_every_value_set_renders_schema_valid_manifests(
    values: Path | None, schema_dir: Path, tmp_path
) -> None:
    docs = helm_template(
        yaml.safe_load(values.read_text()) if values else None, tmp_path=tmp_path, include_crds=True
    )
    summary = kubeconform(docs, schema_dir)
    assert "Invalid: 0, Errors: 0" in summary
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        if doc["kind"] != "CustomResourceDefinition":
            assert labels.get("app.kubernetes.io/part-of") == "recserve", doc["metadata"]["name"]


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_the_operator_accepts_the_rendered_command(values: Path | None, tmp_path) -> None:
    """The contract, checked against the real CLI: `recserve operator` parses what the chart passes."""
    docs = helm_template(yaml.safe_load(values.read_text()) if values else None, tmp_path=tmp_path)
    c = container(docs)
    program, subcommand = c["command"]
    assert program == "recserve"
    module = importlib.import_module(SUBCOMMANDS[subcommand][0])
    parser = argparse.ArgumentParser(prog=f"recserve {subcommand}", exit_on_error=False)
    module.add_arguments(parser)
    args, unknown = parser.parse_known_args(c["args"])
    assert not unknown, f"recserve {subcommand} does not accept {unknown}"
    rendered = {
        kind: [d for d in docs if d["kind"] == kind] for kind in ("KopfPeering", "ClusterKopfPeering")
    }
    if args.all_namespaces:
        assert not args.namespace and rendered["ClusterKopfPeering"]
    else:
        assert args.namespace == sorted({r["metadata"]["namespace"] for r in by_kind(docs, "Role")})
    if args.peering:
        assert {p["metadata"]["name"] for kind in rendered.values() for p in kind} == {args.peering}


def test_defaults_watch_the_release_namespace_with_namespaced_rbac(tmp_path) -> None:
    docs = helm_template()
    kinds = sorted(d["kind"] for d in docs)
    expected = ["Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    expected += ["Service", "PodDisruptionBudget", "KopfPeering", "NetworkPolicy"]
    expected += ["ServiceAccount", "Secret"]  # retrain pods' account and the pseudonymization key
    assert kinds == sorted(expected)
    args = container(docs)["args"]
    assert args == [
        f"--namespace={NS}",
        "--peering=rs-recserve",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--metrics-port=8080",
    ]
    assert container(docs)["command"] == ["recserve", "operator"]
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == NS
    assert grants(role) == NAMESPACED | NAMESPACED_PEERING
    assert grants(one(docs, "ClusterRole")) == CLUSTER_ALWAYS
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "rs-recserve",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rs-recserve", "namespace": NS}]
    peering = one(docs, "KopfPeering")
    assert (peering["metadata"]["name"], peering["metadata"]["namespace"]) == ("rs-recserve", NS)


def test_pod_is_hardened_and_probed() -> None:
    docs = helm_template()
    pod = deployment(docs)["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # A read-only root needs a writable /tmp, and HOME must point into it.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"
    assert env_of(docs)["HOME"] == "/tmp"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # kopf identifies each replica in the peering object by its pod name.
    assert env_of(docs)["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert deployment(docs)["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_cluster_scope_uses_one_cluster_role(tmp_path) -> None:
    docs = helm_template({"watch": {"scope": "cluster"}}, tmp_path=tmp_path)
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding") and not by_kind(docs, "KopfPeering")
    assert grants(one(docs, "ClusterRole")) == CLUSTER_ALWAYS | NAMESPACED | CLUSTER_SCOPE_ONLY
    assert "--all-namespaces" in container(docs)["args"]
    assert not any(a.startswith("--namespace") for a in container(docs)["args"])
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "rs-recserve"
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rs-recserve", "namespace": NS}]


def test_listed_namespaces_get_a_role_and_a_peering_each(tmp_path) -> None:
    docs = helm_template({"watch": {"namespaces": ["team-a", "team-b"]}}, tmp_path=tmp_path)
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["team-a", "team-b"]
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "RoleBinding")) == ["team-a", "team-b"]
    assert sorted(p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")) == ["team-a", "team-b"]
    for binding in by_kind(docs, "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == NS  # the ServiceAccount lives with the operator
    args = container(docs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def test_config_and_images_become_the_operator_environment(tmp_path) -> None:
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    docs = helm_template(values, tmp_path=tmp_path)
    env = env_of(docs)
    assert env["RECSERVE_MLFLOW_TRACKING_URI"] == "http://mlflow.mlops.svc:5000"
    assert env["RECSERVE_PROMETHEUS_URL"] == "http://prometheus-operated.monitoring.svc:9090"
    assert env["RECSERVE_ARTIFACT_STORE"] == "pvc://recserve-engines"
    assert env["RECSERVE_MLFLOW_CREDENTIALS_SECRET"] == "recserve-mlflow"
    assert env["RECSERVE_DEFAULT_GPU_PRODUCT"] == "NVIDIA-H100-80GB-HBM3"
    assert env["RECSERVE_SERVING_IMAGE"] == "ghcr.io/recserve/recserve-serving:0.1.0-cuda"
    assert env["RECSERVE_BUILDER_IMAGE"] == "ghcr.io/recserve/recserve-serving:0.1.0-cuda"
    assert (
        container(docs)["image"]
        == f"ghcr.io/recserve/recserve-operator@{values['operator']['image']['digest']}"
    )
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container(docs)["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secret_refs["MLFLOW_TRACKING_USERNAME"] == {"name": "recserve-mlflow", "key": "username"}
    assert secret_refs["MLFLOW_TRACKING_PASSWORD"] == {"name": "recserve-mlflow", "key": "password"}
    assert "envFrom" not in container(docs)
    assert deployment(docs)["spec"]["replicas"] == 3


def test_unset_config_leaves_the_operator_defaults() -> None:
    env = env_of(helm_template())
    assert "RECSERVE_MLFLOW_TRACKING_URI" not in env and "RECSERVE_PROMETHEUS_URL" not in env
    assert env["RECSERVE_SERVING_IMAGE"] == "ghcr.io/recserve/recserve-serving:0.1.0"  # appVersion


def test_service_monitor_scrapes_the_metrics_service(tmp_path) -> None:
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    docs = helm_template(values, tmp_path=tmp_path)
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "rs-recserve-metrics")
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # recserve_canary_weight{namespace=<model's namespace>}
    target = service["spec"]["ports"][0]["targetPort"]
    assert target in {p["name"] for p in container(docs)["ports"]}
    # The Service selects exactly the operator pods.
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())


def _webhook_wiring(docs: list[Doc]) -> tuple[Doc, Doc]:
    """Checks shared by every certificate source; returns (configuration, service).

    The operator (kopf) writes the webhook entries itself, with the URL
    https://SERVICE.NAMESPACE.svc:PORT/HANDLER: the Service must be reachable under that name
    and port, and the certificate must be valid for that host.
    """
    config = one(docs, "ValidatingWebhookConfiguration")
    assert config["metadata"]["name"] == "recserve.dev"  # kopf's settings.admission.managed
    assert "webhooks" not in config  # an upgrade's three-way merge never touches the operator's entries
    c = container(docs)
    flags = dict(a.split("=", 1) for a in c["args"] if a.startswith("--webhook"))
    assert flags["--webhook-port"] == "9443" and flags["--webhook-cert-dir"] == "/etc/recserve/webhook-certs"
    svc_name, svc_namespace = flags["--webhook-service"].split(".")
    assert svc_namespace == NS
    service = one(docs, "Service", svc_name)
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9443  # the port is part of the URL kopf registers
    assert {p["name"]: p["containerPort"] for p in c["ports"]}[port["targetPort"]] == 9443
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/recserve/webhook-certs")
    assert mount["readOnly"] is True
    # kopf creates the configuration when it is missing (create cannot be limited by name), and
    # may patch only its own; it never reads it by name.
    rules = [
        r for r in one(docs, "ClusterRole")["rules"] if r["apiGroups"] == ["admissionregistration.k8s.io"]
    ]
    # kopf manages the mutating configuration of the same name too (empty: no mutating handler)
    # and exits when it may not create it (found by the e2e webhook scenario).
    kinds = ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
    assert rules == [
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": kinds, "verbs": ["create"]},
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": kinds,
            "verbs": ["patch"],
            "resourceNames": ["recserve.dev"],
        },
    ]
    mutating = one(docs, "MutatingWebhookConfiguration")
    assert mutating["metadata"]["name"] == "recserve.dev" and "webhooks" not in mutating
    # The webhook rejects parallelism that no node type's GPUs can hold: it lists nodes.
    assert {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]} in one(docs, "ClusterRole")["rules"]
    return config, service


def _mounted_secret(docs: list[Doc]) -> str:
    volumes = deployment(docs)["spec"]["template"]["spec"]["volumes"]
    return next(v for v in volumes if v["name"] == "webhook-certs")["secret"]["secretName"]


def test_webhook_with_generated_certificate(tmp_path) -> None:
    docs = helm_template({"webhook": {"enabled": True}}, tmp_path=tmp_path)
    _, service = _webhook_wiring(docs)
    secret = one(docs, "Secret", "rs-recserve-webhook-tls")
    assert _mounted_secret(docs) == secret["metadata"]["name"]
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}  # kopf reads ca.crt for the caBundle
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    # The serving certificate is really signed by the CA the API server will trust...
    ca.public_key().verify(
        cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm
    )
    # ...and names the host of the URL the operator registers.
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert f"{service['metadata']['name']}.{NS}.svc" in names


def test_webhook_with_cert_manager(tmp_path) -> None:
    values = yaml.safe_load((CHART / "ci" / "webhook-certmanager-values.yaml").read_text())
    docs = helm_template(values, tmp_path=tmp_path)
    _, service = _webhook_wiring(docs)
    certificate = one(docs, "Certificate")
    issuer = one(docs, "Issuer")
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": issuer["metadata"]["name"]}
    assert f"{service['metadata']['name']}.{NS}.svc" in certificate["spec"]["dnsNames"]
    assert _mounted_secret(docs) == certificate["spec"]["secretName"]
    assert [s["metadata"]["name"] for s in by_kind(docs, "Secret")] == [PSEUDONYM_SECRET]


def test_webhook_with_own_secret(tmp_path) -> None:
    values = {"webhook": {"enabled": True, "certificate": {"source": "secret", "secretName": "my-tls"}}}
    docs = helm_template(values, tmp_path=tmp_path)
    _webhook_wiring(docs)
    assert _mounted_secret(docs) == "my-tls"
    assert [s["metadata"]["name"] for s in by_kind(docs, "Secret")] == [PSEUDONYM_SECRET]
    assert not by_kind(docs, "Certificate")


def test_webhook_off_grants_nothing_on_admission(tmp_path) -> None:
    for values in (None, {"watch": {"scope": "cluster"}}):
        docs = helm_template(values, tmp_path=tmp_path)
        assert not by_kind(docs, "ValidatingWebhookConfiguration")
        for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
            assert not any("admissionregistration.k8s.io" in r["apiGroups"] for r in role["rules"])
            assert not any("nodes" in r["resources"] for r in role["rules"])
        assert not any(a.startswith("--webhook") for a in container(docs)["args"])


def test_single_replica_without_peering(tmp_path) -> None:
    docs = helm_template({"operator": {"replicas": 1}, "peering": {"enabled": False}}, tmp_path=tmp_path)
    assert not any(a.startswith("--peering") for a in container(docs)["args"])
    assert not by_kind(docs, "KopfPeering") and not by_kind(docs, "PodDisruptionBudget")


def test_two_releases_do_not_collide_on_cluster_objects(tmp_path) -> None:
    """Cluster-scoped names carry the release namespace. (The webhook configuration's name is
    fixed by the operator, so only one release per cluster may enable the webhook.)"""
    a = helm_template({"watch": {"scope": "cluster"}}, namespace="ns-a", tmp_path=tmp_path)
    b = helm_template({"watch": {"scope": "cluster"}}, namespace="ns-b", tmp_path=tmp_path)
    cluster_kinds = ("ClusterRole", "ClusterRoleBinding")
    names_a = {(d["kind"], d["metadata"]["name"]) for d in a if d["kind"] in cluster_kinds}
    names_b = {(d["kind"], d["metadata"]["name"]) for d in b if d["kind"] in cluster_kinds}
    assert len(names_a) == 2 and not names_a & names_b


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"watch": {"scope": "everything"}}, "scope"),
        ({"peering": {"enabled": False}}, "peering.enabled"),
        ({"watch": {"scope": "cluster", "namespaces": ["a"]}}, "watch.namespaces"),
        ({"config": {"artifactStore": "gs://bucket"}}, "artifactStore"),
        ({"config": {"mlflowTrackingURI": "http://x"}}, "mlflowTrackingURI"),
        ({"webhook": {"enabled": True, "certificate": {"source": "secret"}}}, "secretName"),
        ({"webhook": {"enabled": True, "certificate": {"source": "vault"}}}, "source"),
        ({"operator": {"image": {"digest": "latest"}}}, "digest"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name"),
        ({"networkPolicy": {"servingClients": [{"podSelecter": {}}]}}, "podSelecter"),
        ({"networkPolicy": {"kuberay": [{}]}}, "kuberay"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_values_are_refused(values: dict, message: str, tmp_path) -> None:
    assert message in helm_template_error(values, tmp_path)


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_network_policy_is_on_by_default_and_admits_the_operator_to_serving_pods() -> None:
    docs = helm_template()
    raw = env_of(docs)["RECSERVE_NETWORK_POLICY"]
    peers = OperatorSettings.from_env({"RECSERVE_NETWORK_POLICY": raw}).network_policy
    assert peers is not None
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    (operator,) = peers["operator"]
    assert operator["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": NS}}
    assert operator["podSelector"]["matchLabels"] and _selects(operator["podSelector"], pod_labels)
    assert {"podSelector": {}} in peers["servingClients"], "any pod in the model's namespace"
    assert peers["kuberay"] and peers["metrics"]


def test_network_policy_opens_only_the_operators_served_ports(tmp_path) -> None:
    docs = helm_template({"webhook": {"enabled": True}}, tmp_path=tmp_path)
    policy = one(docs, "NetworkPolicy")
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["spec"]["podSelector"], pod_labels) and policy["spec"]["policyTypes"] == [
        "Ingress"
    ]
    open_to_all = {
        p["port"] for rule in policy["spec"]["ingress"] if "from" not in rule for p in rule["ports"]
    }
    assert open_to_all == {8081, 9443}, "kubelet probes and API server admission calls"
    (metrics,) = [rule for rule in policy["spec"]["ingress"] if "from" in rule]
    assert [p["port"] for p in metrics["ports"]] == [8080] and metrics["from"]
    served = {p["containerPort"] for p in container(docs)["ports"]}
    assert open_to_all | {8080} == served


def test_network_policy_off_renders_no_policy_and_no_setting(tmp_path) -> None:
    docs = helm_template({"networkPolicy": {"enabled": False}}, tmp_path=tmp_path)
    assert not by_kind(docs, "NetworkPolicy")
    assert "RECSERVE_NETWORK_POLICY" not in env_of(docs)


def test_the_operators_planned_serving_manifests_are_schema_valid(tmp_path) -> None:
    """What the operator creates per model, against the API's and KubeRay's own schemas: the
    hardening and the NetworkPolicy must not be rejected by the API server."""
    from recserve_operator.planners.build_job import build_request, plan_build_job
    from recserve_operator.planners.network_policy import plan_network_policy
    from recserve_operator.planners.rayservice import plan_rayservice
    from recserve_operator.planners.serve_config import (
        DeployPlan,
        ServedVersion,
        ServeSite,
        plan_serve_config,
    )
    from recserve_operator.validate import load_model
    from recserve_serving.serve.config import render_serve_config

    assert write_core_schemas(tmp_path) > 300
    write_crd_schemas(tmp_path, crds_of(kuberay_crds()))
    raw = env_of(helm_template())["RECSERVE_NETWORK_POLICY"]
    settings = OperatorSettings.from_env({"RECSERVE_NETWORK_POLICY": raw})
    assert settings.network_policy is not None
    docs: list[Doc] = []
    for example in ("movielens-ranker.yaml", "movielens-ranker-gpu.yaml"):
        loaded = load_model(CHART.parents[1] / "manifests" / "examples" / example)
        model = loaded.model_copy(
            update={"metadata": loaded.metadata.model_copy(update={"namespace": "ml", "uid": "u-1"})}
        )
        site = ServeSite(
            index_dir=settings.index_dir,
            online_dir=settings.online_dir,
            pseudonym_key_file=settings.pseudonym_key_file,
        )
        app = plan_serve_config(model, DeployPlan(ServedVersion("m/1", "/artifacts/engines/a")), site)
        config = render_serve_config(app)
        request = build_request(model, "stable", "models:/m/1", "d1", model.spec.optimization, settings)
        docs += [
            plan_rayservice(model, config, settings),
            plan_build_job(model, request, settings),
            plan_network_policy(model, settings.network_policy, settings.serve_port),
        ]
    assert f"Valid: {len(docs)}, Invalid: 0" in kubeconform(docs, tmp_path, skip=())


def test_retrain_settings_reach_the_operator_and_match_what_it_parses(tmp_path) -> None:
    docs = helm_template()
    env = env_of(docs)
    assert env["RECSERVE_PSEUDONYM_SECRET"] == PSEUDONYM_SECRET
    assert env["RECSERVE_TRAINER_SERVICE_ACCOUNT"] == TRAINER
    assert "RECSERVE_TRAINER_IMAGE" not in env  # the builder image, chosen by the operator
    assert "RECSERVE_TRAINER_PULL_POLICY" not in env
    parsed = OperatorSettings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert parsed.trainer_resources == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }
    assert parsed.trainer_image == env["RECSERVE_BUILDER_IMAGE"]
    values = {
        "training": {
            "image": {"repository": "reg/trainer", "tag": "7", "pullPolicy": "Always"},
            "resources": {"requests": {"cpu": "4", "memory": "16Gi"}},
            "serviceAccount": {"create": False, "name": ""},
        },
        "privacy": {"pseudonymKey": {"existingSecret": "my-key"}},
    }
    docs = helm_template(values, tmp_path=tmp_path)
    env = env_of(docs)
    assert (env["RECSERVE_TRAINER_IMAGE"], env["RECSERVE_TRAINER_PULL_POLICY"]) == ("reg/trainer:7", "Always")
    assert env["RECSERVE_PSEUDONYM_SECRET"] == "my-key"
    assert "RECSERVE_TRAINER_SERVICE_ACCOUNT" not in env  # the namespace's default account, no token
    parsed = OperatorSettings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    # Helm merges maps into the defaults: the default limits stay unless set (or nulled).
    assert parsed.trainer_resources == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }
    # Bring-your-own key and no trainer account: the chart creates neither.
    assert not by_kind(docs, "Secret")
    assert [sa["metadata"]["name"] for sa in by_kind(docs, "ServiceAccount")] == ["rs-recserve"]


def test_the_trainer_account_is_bound_to_nothing_and_mounts_no_token(tmp_path) -> None:
    for values in (None, {"watch": {"scope": "cluster"}}, {"webhook": {"enabled": True}}):
        docs = helm_template(values, tmp_path=tmp_path)
        trainer = one(docs, "ServiceAccount", TRAINER)
        assert trainer["automountServiceAccountToken"] is False
        for binding in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding"):
            assert TRAINER not in {s["name"] for s in binding["subjects"]}, binding["metadata"]["name"]


def test_each_watched_namespace_gets_a_trainer_account_and_a_kept_random_key(tmp_path) -> None:
    docs = helm_template({"watch": {"namespaces": ["team-a", "team-b"]}}, tmp_path=tmp_path)
    accounts = [sa for sa in by_kind(docs, "ServiceAccount") if sa["metadata"]["name"] == TRAINER]
    assert sorted(sa["metadata"]["namespace"] for sa in accounts) == ["team-a", "team-b"]
    secrets = by_kind(docs, "Secret")
    assert sorted(s["metadata"]["namespace"] for s in secrets) == ["team-a", "team-b"]
    keys = set()
    for secret in secrets:
        assert secret["metadata"]["name"] == PSEUDONYM_SECRET
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        key = base64.b64decode(secret["data"]["key"]).decode()
        assert len(key) == 64 and int(key, 16) >= 0  # 32 bytes, hex
        keys.add(key)
    assert len(keys) == 2  # one key per namespace: a tenant's pseudonyms do not link to another's
    # `helm template` has no cluster to look the existing key up in: every render is a new key,
    # which is why GitOps renderers are told to bring their own (privacy.pseudonymKey.existingSecret).
    again = by_kind(helm_template({"watch": {"namespaces": ["team-a"]}}, tmp_path=tmp_path), "Secret")
    assert base64.b64decode(again[0]["data"]["key"]).decode() not in keys
