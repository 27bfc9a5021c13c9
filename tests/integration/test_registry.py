"""The MLflow registry (sqlite, embedded) and checkpoint URI resolution."""

from __future__ import annotations

import pytest

from recserve_serving.errors import CheckpointError
from recserve_serving.registry import Registry

pytestmark = pytest.mark.integration


def _checkpoint(path, content: str):
    path.mkdir(parents=True)
    (path / "recserve.json").write_text(content)
    (path / "weights.bin").write_bytes(content.encode() * 10)
    return path


@pytest.fixture
def registry(state):
    return Registry(state)


def test_versions_aliases_and_digests(registry, tmp_path, capsys) -> None:
    first = registry.register("ranker", _checkpoint(tmp_path / "a", "one"), {"ndcg@10": 0.3})
    second = registry.register("ranker", _checkpoint(tmp_path / "b", "two"), {"ndcg@10": 0.4})
    assert (first.version, second.version) == ("1", "2")
    assert first.digest != second.digest
    assert registry.resolve("models:/ranker/1").digest == first.digest
    champion = registry.resolve("models:/ranker@champion")
    assert (champion.version, champion.digest) == ("2", second.digest)
    assert (champion.path / "weights.bin").read_text().startswith("two")
    assert champion.path.is_relative_to(registry.state / "mlartifacts")
    assert capsys.readouterr().out == ""


def test_unknown_name_version_and_alias_name_what_exists(registry, tmp_path) -> None:
    registry.register("ranker", _checkpoint(tmp_path / "a", "one"), {})
    with pytest.raises(CheckpointError, match=r"no registered model 'nope' \(registered: ranker\)"):
        registry.resolve("models:/nope/1")
    with pytest.raises(CheckpointError, match=r"no version 7 \(versions: 1\)"):
        registry.resolve("models:/ranker/7")
    with pytest.raises(CheckpointError, match=r"no alias @stable \(aliases: @champion\)"):
        registry.resolve("models:/ranker@stable")
    with pytest.raises(CheckpointError, match="malformed model URI"):
        registry.resolve("models:/ranker")


def test_file_pvc_and_s3_uris(registry, tmp_path, monkeypatch) -> None:
    local = _checkpoint(tmp_path / "claims" / "models" / "ranker", "pvc")
    by_file = registry.resolve(local.as_uri())
    assert by_file.path == local and by_file.version is None
    with pytest.raises(CheckpointError, match="RECSERVE_PVC_ROOT"):
        registry.resolve("pvc://models/ranker")
    monkeypatch.setenv("RECSERVE_PVC_ROOT", str(tmp_path / "claims"))
    assert registry.resolve("pvc://models/ranker").digest == by_file.digest
    with pytest.raises(CheckpointError, match="does not exist"):
        registry.resolve("pvc://models/missing")
    with pytest.raises(CheckpointError, match="s3:// checkpoints are not supported"):
        registry.resolve("s3://bucket/ranker")
    with pytest.raises(CheckpointError, match="unsupported checkpoint URI"):
        registry.resolve("ftp://host/ranker")


def test_deleted_artifacts_are_reported(registry, tmp_path) -> None:
    resolved = registry.register("ranker", _checkpoint(tmp_path / "a", "one"), {})
    for file in resolved.path.iterdir():
        file.unlink()
    resolved.path.rmdir()
    with pytest.raises(CheckpointError, match=r"registered artifacts at .* are missing"):
        registry.resolve("models:/ranker/1")


def test_a_pvc_uri_that_climbs_out_of_its_claim_is_refused(registry, tmp_path, monkeypatch) -> None:
    _checkpoint(tmp_path / "secret", "outside")
    monkeypatch.setenv("RECSERVE_PVC_ROOT", str(tmp_path / "claims"))
    (tmp_path / "claims" / "models").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"'\.\.' path segments"):
        registry.resolve("pvc://models/../../secret")
    with pytest.raises(CheckpointError, match="percent-encode"):
        registry.resolve("pvc://models/%2e%2e/%2e%2e/secret")
    (tmp_path / "claims" / "models" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(CheckpointError, match="outside the claim"):
        registry.resolve("pvc://models/link")


def test_tags_aliases_and_the_latest_version(registry, tmp_path) -> None:
    first = registry.register(
        "ranker", _checkpoint(tmp_path / "a", "one"), {}, tags={"recserve.data_cutoff": "10"}
    )
    second = registry.register(
        "ranker", _checkpoint(tmp_path / "b", "two"), {}, tags={"recserve.parent_version": "1"}, aliases=()
    )
    assert registry.resolve("models:/ranker@champion").version == first.version == "1"
    tags = registry.version_tags("ranker", "2")
    assert tags["recserve.parent_version"] == "1" and tags["recserve.digest"] == second.digest
    assert registry.version_tags("ranker", 1)["recserve.data_cutoff"] == "10"
    assert registry.latest_version("ranker") == "2"
    registry.set_alias("ranker", "candidate", 2)
    assert registry.resolve("models:/ranker@candidate").digest == second.digest
    with pytest.raises(CheckpointError, match=r"no version 9 \(versions: 1, 2\)"):
        registry.set_alias("ranker", "candidate", 9)
    with pytest.raises(CheckpointError, match="no registered model 'nope'"):
        registry.latest_version("nope")
