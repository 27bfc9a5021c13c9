"""The engine cache key and the publish protocol: atomic, race-safe, never half-finished."""

from __future__ import annotations

import pytest

from recserve_serving.engine import cache
from recserve_serving.engine.digests import combine, directory_digest, file_digests
from recserve_serving.engine.manifest import MANIFEST_FILE
from recserve_serving.recipe import OptimizationRecipe, PruneSpec

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "a" * 64


def test_key_is_stable_and_changes_with_every_input() -> None:
    recipe = OptimizationRecipe(backend="onnxruntime")
    base = cache.engine_key(DIGEST, recipe, "onnxruntime-1.31.1", "cpu-x86_64-avx2")
    assert base == cache.engine_key(
        DIGEST, OptimizationRecipe(backend="onnxruntime"), "onnxruntime-1.31.1", "cpu-x86_64-avx2"
    )
    variants = {
        cache.engine_key("sha256:" + "b" * 64, recipe, "onnxruntime-1.31.1", "cpu-x86_64-avx2"),
        cache.engine_key(
            DIGEST, recipe.model_copy(update={"precision": "fp32"}), "onnxruntime-1.31.1", "cpu-x86_64-avx2"
        ),
        cache.engine_key(
            DIGEST,
            recipe.model_copy(update={"prune": PruneSpec(heads=0.25)}),
            "onnxruntime-1.31.1",
            "cpu-x86_64-avx2",
        ),
        cache.engine_key(DIGEST, recipe, "onnxruntime-1.32.0", "cpu-x86_64-avx2"),
        cache.engine_key(DIGEST, recipe, "onnxruntime-1.31.1", "cpu-x86_64-avx2+avx512_vnni"),
        cache.engine_key(DIGEST, recipe, "onnxruntime-1.31.1", "cuda-sm90"),
    }
    assert base not in variants
    assert len(variants) == 6
    assert len(base) == 64


def test_cpu_hardware_names_the_isa_flags_kernels_dispatch_on() -> None:
    flags = cache.cpu_flags()
    assert set(flags) <= {
        "avx2",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "avx_vnni",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
    }
    described = cache.hardware("onnxruntime")
    assert described.startswith("cpu-")
    for flag in flags:
        assert flag in described


def test_directory_digest_covers_names_and_contents_not_order(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("two")
    first = directory_digest(tmp_path)
    assert set(file_digests(tmp_path)) == {"a.txt", "sub/b.txt"}
    assert combine(dict(reversed(list(file_digests(tmp_path).items())))) == first
    (tmp_path / "sub" / "b.txt").write_text("TWO")
    assert directory_digest(tmp_path) != first
    (tmp_path / "sub" / "b.txt").write_text("two")
    assert directory_digest(tmp_path) == first
    (tmp_path / "a.txt").rename(tmp_path / "c.txt")
    assert directory_digest(tmp_path) != first


def _finished_build(root, key):
    temp = cache.new_temp(root, key)
    (temp / "model.onnx").write_bytes(b"x")
    (temp / MANIFEST_FILE).write_text("{}")
    return temp


def test_publish_is_atomic_and_the_second_writer_loses_cleanly(tmp_path) -> None:
    key = "f" * 64
    final = tmp_path / key
    first, second = _finished_build(tmp_path, key), _finished_build(tmp_path, key)
    assert not cache.finished(final)
    assert cache.publish(first, final) is True
    assert cache.finished(final)
    assert cache.publish(second, final) is False
    assert not second.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [key]


def test_a_published_engine_is_readable_by_the_pods_that_load_it(tmp_path) -> None:
    """A serving pod reads the store with its own uid; the build's 0700 scratch mode would hide it."""
    key = "e" * 64
    build = _finished_build(tmp_path, key)
    assert build.stat().st_mode & 0o777 == 0o700  # mkdtemp's
    assert cache.publish(build, tmp_path / key) is True
    assert (tmp_path / key).stat().st_mode & 0o777 == 0o755


def test_a_file_digest_is_remembered_until_the_file_changes(tmp_path, monkeypatch) -> None:
    import builtins

    from recserve_serving.engine import digests

    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    first = digests.file_sha256(path)
    reads = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        reads.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    assert digests.file_sha256(path) == first
    assert reads == []
    path.write_bytes(b"b" * 1000)  # same size: the ctime still tells
    assert digests.file_sha256(path) != first
    assert path in reads
