"""Files of the chart that need no helm binary: CRD copies, kopf peering CRDs, the values table."""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kopf._cogs.structs import references

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "recserve"
SOURCE_CRDS = REPO / "manifests" / "crds"

pytestmark = pytest.mark.unit


def test_chart_crds_are_byte_identical_to_the_generated_ones() -> None:
    sources = sorted(SOURCE_CRDS.glob("*.yaml"))
    assert sources, "manifests/crds/ has no CRD"
    for source in sources:
        copy = CHART / "crds" / source.name
        assert copy.is_file(), f"{copy} missing: run bash scripts/sync-chart-crds.sh"
        assert copy.read_bytes() == source.read_bytes(), (
            f"{copy} drifted: run bash scripts/sync-chart-crds.sh"
        )
    extra = {p.name for p in (CHART / "crds").glob("*.yaml")} - {p.name for p in sources}
    assert extra == {"kopf.dev_peerings.yaml"}


def _sync(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(root / "scripts" / "sync-chart-crds.sh"), *args], capture_output=True, text=True
    )


def test_sync_script_detects_and_repairs_drift(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", root / "scripts", ignore=shutil.ignore_patterns("tools"))
    shutil.copytree(SOURCE_CRDS, root / "manifests" / "crds")
    shutil.copytree(CHART / "crds", root / "charts" / "recserve" / "crds")
    assert _sync(root, "--check").returncode == 0
    source = next((root / "manifests" / "crds").glob("recserve*.yaml"))
    source.write_text(source.read_text() + "# changed\n")
    (root / "charts" / "recserve" / "crds" / "stale.yaml").write_text("kind: Stale\n")
    check = _sync(root, "--check")
    assert check.returncode == 1
    assert "drift" in check.stderr and "stale.yaml" in check.stderr
    assert _sync(root, "--crds-only").returncode == 0
    assert _sync(root, "--check").returncode == 0
    copy = root / "charts" / "recserve" / "crds" / source.name
    assert copy.read_bytes() == source.read_bytes()
    assert (root / "charts" / "recserve" / "crds" / "kopf.dev_peerings.yaml").is_file()


def test_peering_crds_match_what_kopf_looks_for() -> None:
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text()))
    crds = {d["spec"]["names"]["plural"]: d for d in docs}
    expected = {
        references.CLUSTER_PEERINGS_K: "Cluster",
        references.NAMESPACED_PEERINGS_K: "Namespaced",
    }
    assert set(crds) == {s.any_name for s in expected}
    for selector, scope in expected.items():
        crd = crds[selector.any_name]
        assert crd["spec"]["group"] == selector.group
        assert crd["spec"]["scope"] == scope
        assert crd["metadata"]["name"] == f"{selector.any_name}.{selector.group}"
        (version,) = crd["spec"]["versions"]
        assert version["name"] == selector.version and version["served"] and version["storage"]
        # kopf writes its peers into status; the schema must keep them.
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True


def test_values_are_documented_and_the_readme_table_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "chart-readme.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_generator_refuses_an_undocumented_key() -> None:
    namespace = runpy.run_path(str(REPO / "scripts" / "chart-readme.py"), run_name="chart_readme")
    good = "# -- documented\na:\n  b: 1\n# -- also\nc: 2\n"
    assert '| `a` | `{"b":1}` | documented |' in namespace["table"](good)
    with pytest.raises(SystemExit, match=r"d\.e"):
        namespace["table"](good + "d:\n  e: 3\n")


def test_values_contract_names_every_operator_env_var() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["contract"]["env"].values()) == {
        "RECSERVE_MLFLOW_TRACKING_URI",
        "RECSERVE_MLFLOW_CREDENTIALS_SECRET",
        "RECSERVE_PROMETHEUS_URL",
        "RECSERVE_HISTORY_REDIS",
        "RECSERVE_ARTIFACT_STORE",
        "RECSERVE_DEFAULT_GPU_PRODUCT",
        "RECSERVE_RAY_HEAD_CPU",
        "RECSERVE_RAY_HEAD_MEMORY",
        "RECSERVE_RAY_WORKER_OVERHEAD_CPU",
        "RECSERVE_SERVING_IMAGE",
        "RECSERVE_BUILDER_IMAGE",
        "RECSERVE_NETWORK_POLICY",
        "RECSERVE_TRAINER_IMAGE",
        "RECSERVE_TRAINER_PULL_POLICY",
        "RECSERVE_TRAINER_RESOURCES",
        "RECSERVE_TRAINER_SERVICE_ACCOUNT",
        "RECSERVE_PSEUDONYM_SECRET",
    }
    # Every env entry is fed by a config value, an image, the networkPolicy block, or the
    # training and privacy blocks (templates look them up by key).
    assert set(values["contract"]["env"]) - set(values["config"]) == {
        "servingImage",
        "builderImage",
        "networkPolicy",
        "trainerImage",
        "trainerPullPolicy",
        "trainerResources",
        "trainerServiceAccount",
        "pseudonymSecret",
    }
