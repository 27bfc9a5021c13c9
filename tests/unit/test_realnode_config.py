"""The real node's generated files, checked without root or a runtime: the OCI archives that
containerd imports, containerd's and the kubelet's configs, and the per-node network plan.
The node itself runs only in the opt-in e2e test (e2e/test_real_node.py)."""

from __future__ import annotations

import hashlib
import json
import tarfile
import tomllib
from pathlib import Path

import pytest

from e2e.cluster import nodeconfig
from e2e.cluster.nodenet import NodeNetwork
from e2e.cluster.ociimage import ImageSpec, write_archive

pytestmark = pytest.mark.unit


def _spec(tmp_path: Path) -> ImageSpec:
    binary = tmp_path / "tool"
    binary.write_bytes(b"\x7fELF not really")
    binary.chmod(0o755)
    return ImageSpec(
        "localhost/t/tool:v1", ["/bin/tool"], files={"/bin/tool": binary}, symlinks={"/bin/sh": "tool"}
    )


def test_oci_archive_is_reproducible_and_its_digests_match(tmp_path: Path) -> None:
    first = write_archive(_spec(tmp_path), tmp_path / "a.tar").read_bytes()
    second = write_archive(_spec(tmp_path), tmp_path / "b.tar").read_bytes()
    assert first == second
    with tarfile.open(tmp_path / "a.tar") as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    for name, data in blobs.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(blobs["index.json"])
    [entry] = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/t/tool:v1"
    manifest = json.loads(blobs["blobs/sha256/" + entry["digest"].split(":")[1]])
    config = json.loads(blobs["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["Entrypoint"] == ["/bin/tool"]


@pytest.mark.parametrize(("major", "version"), [(1, 2), (2, 3)])
def test_containerd_config_keeps_everything_in_the_workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, major: int, version: int
) -> None:
    monkeypatch.setattr(nodeconfig, "containerd_major", lambda _: major)
    config = tomllib.loads(
        nodeconfig.containerd_config(tmp_path, tmp_path / "containerd", tmp_path / "runc", "10.89.7.2")
    )
    assert config["version"] == version
    assert config["grpc"]["address"] == str(tmp_path / "containerd.sock")
    assert config["root"].startswith(str(tmp_path)) and config["state"].startswith(str(tmp_path))
    plugins = config["plugins"]
    runtime = plugins["io.containerd.cri.v1.runtime" if major == 2 else "io.containerd.grpc.v1.cri"]
    assert runtime["restrict_oom_score_adj"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["Root"] == str(tmp_path / "runc") and runc["SystemdCgroup"] is False
    assert plugins["io.containerd.grpc.v1.cri"]["stream_server_address"] == "10.89.7.2"


def test_kubelet_config_leaves_host_settings_alone(tmp_path: Path) -> None:
    config = nodeconfig.kubelet_config(tmp_path, "/recserve-realnode-x", 1, 2)
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["protectKernelDefaults"] is True
    assert config["makeIPTablesUtilChains"] is False
    assert config["oomScoreAdj"] == 0
    assert config["cpuCFSQuota"] is False
    assert config["podLogsDir"] == str(tmp_path / "pod-logs")


def test_node_networks_are_per_workdir_and_in_their_ranges() -> None:
    a = NodeNetwork.for_name("recserve-realnode-a")
    assert a == NodeNetwork.for_name("recserve-realnode-a")
    assert 1 <= a.index <= 250 and len(a.host_link) <= 15
    assert a.pod_subnet == f"10.88.{a.index}.0/24" and a.node_ip == f"10.89.{a.index}.2"
    cni = nodeconfig.cni_config(Path("/w"), a.pod_subnet)
    [bridge] = cni["plugins"]
    assert bridge["ipMasq"] is False and bridge["ipam"]["ranges"] == [[{"subnet": a.pod_subnet}]]
