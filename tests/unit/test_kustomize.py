"""The kustomize base and overlays: rendered by the real `kubectl kustomize` (kubectl from the e2e
build) and validated strictly by kubeconform against the Kubernetes API's own schemas and our
CRDs. The base is rendered from the Helm chart, so it must be current with it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
from k8s_tools import (
    CHART,
    REPO,
    Doc,
    by_kind,
    crds_of,
    kubeconform,
    kustomize,
    load_all,
    one,
    tool,
    write_core_schemas,
    write_crd_schemas,
)

pytestmark = pytest.mark.integration

MANIFESTS = REPO / "manifests"
TREES = {
    "base": MANIFESTS / "base",
    "dev": MANIFESTS / "overlays" / "dev",
    "prod": MANIFESTS / "overlays" / "prod",
}
NS = "recserve-system"


@pytest.fixture(scope="module")
def schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schemas")
    write_core_schemas(path)
    write_crd_schemas(
        path,
        crds_of([*sorted((CHART / "crds").glob("*.yaml")), *sorted((MANIFESTS / "crds").glob("*.yaml"))]),
    )
    return path


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {name: kustomize(path) for name, path in TREES.items()}


def env_of(docs: list[Doc]) -> dict[str, str]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in c["env"]}


def test_base_is_current_with_the_chart() -> None:
    tool("helm")  # a clear failure when helm is not built
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "render-kustomize-base.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("tree", sorted(TREES))
def test_tree_renders_and_validates(tree: str, rendered: dict[str, list[Doc]], schema_dir: Path) -> None:
    docs = rendered[tree]
    summary = kubeconform(docs, schema_dir, skip=())
    assert f"Valid: {len(docs)}, Invalid: 0, Errors: 0, Skipped: 0" in summary
    crd_names = {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")}
    assert crd_names == {
        "recommendermodels.recserve.dev",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }
    # Everything namespaced lives in the operator namespace; bindings name the real ServiceAccount.
    sa = one(docs, "ServiceAccount")
    for doc in docs:
        if doc["kind"] not in (
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterKopfPeering",
        ):
            assert doc["metadata"].get("namespace") == NS, doc["metadata"]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NS}
    ]
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and "--peering=recserve" in args
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "recserve"


def test_dev_overlay(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dev"]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "ghcr.io/recserve/recserve-operator:dev"
    assert c["resources"]["requests"] == {"cpu": "50m", "memory": "192Mi"}
    assert c["resources"]["limits"] == {"memory": "512Mi"}  # kept from the base
    env = env_of(docs)
    assert env["RECSERVE_ARTIFACT_STORE"] == "pvc://recserve-engines"
    assert env["RECSERVE_SERVING_IMAGE"].endswith(":dev")
    assert env["HOME"] == "/tmp"  # the base's entries survive the merge
    assert not by_kind(docs, "PodDisruptionBudget")  # one replica: a PDB would block drains


def test_prod_overlay(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    spec = deployment["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["image"] == "ghcr.io/recserve/recserve-operator:0.1.0"
    env = env_of(docs)
    assert env["RECSERVE_ARTIFACT_STORE"] == "pvc://recserve-engines"
    assert env["RECSERVE_MLFLOW_CREDENTIALS_SECRET"] == "recserve-mlflow"
    assert env["RECSERVE_DEFAULT_GPU_PRODUCT"] == "NVIDIA-H100-80GB-HBM3"
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    # Security settings of the base are not lost in the overlay.
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_base_rbac_is_the_charts_cluster_scope(rendered: dict[str, list[Doc]]) -> None:
    rules = one(rendered["base"], "ClusterRole")["rules"]
    resources = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert ("", "namespaces") in resources and ("kopf.dev", "clusterkopfpeerings") in resources
    assert ("", "secrets") not in resources and ("", "configmaps") not in resources
    assert not any("*" in rule["verbs"] for rule in rules)


def test_the_schema_check_rejects_what_the_api_server_would(
    rendered: dict[str, list[Doc]], schema_dir: Path
) -> None:
    """Proof that validation is not vacuous: typos and bad values in core and custom kinds fail."""
    deployment = copy.deepcopy(one(rendered["base"], "Deployment"))
    deployment["spec"]["replica"] = 2
    crb = copy.deepcopy(one(rendered["base"], "ClusterRoleBinding"))
    del crb["roleRef"]
    model = {
        "apiVersion": "recserve.dev/v1alpha1",
        "kind": "RecommenderModel",
        "metadata": {"name": "m", "namespace": "default"},
        "spec": {"checkpoint": {"uri": "models:/m/1"}, "optimisation": {}},
    }
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "p"}, "spec": {}}
    for bad, why in [
        (deployment, "additional properties 'replica'"),
        (crb, "roleRef"),
        (model, "optimisation"),
        (peering, "spec"),
    ]:
        with pytest.raises(AssertionError, match="kubeconform rejected") as info:
            kubeconform([bad], schema_dir, skip=())
        assert why in str(info.value)


def test_examples_validate_against_the_crd(schema_dir: Path) -> None:
    docs = [d for p in sorted((MANIFESTS / "examples").glob("*.yaml")) for d in load_all(p.read_text())]
    assert by_kind(docs, "RecommenderModel")
    assert f"Valid: {len(docs)}, Invalid: 0" in kubeconform(docs, schema_dir, skip=())
