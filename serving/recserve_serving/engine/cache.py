"""The content-addressed engine cache.

An engine's key is the sha256 of everything that changes the bytes it would contain: the
checkpoint digest, the recipe, the backend and its version, and the hardware it is tuned
for (CPU ISA flags that change which kernels ONNX Runtime picks, or the GPU's compute
capability). Builds write into a private temp directory inside the cache root (same file
system) and publish it with one ``os.rename``; a killed build leaves only a ``.building-``
directory, which never looks finished and is swept later. A per-key lock file makes a
second concurrent build wait for the first and then return its result as a hit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from recserve_serving.engine.manifest import MANIFEST_FILE
from recserve_serving.recipe import OptimizationRecipe

BUILDING_PREFIX = ".building-"
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> list[str]:
    """The ISA extensions ORT's kernels dispatch on, as listed in /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [f for f in _CPU_FLAGS if f in flags]


def gpu_capability() -> str | None:
    """``sm<major><minor>`` of the first CUDA device, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm{major}{minor}"


def hardware(backend: str, *, device: str = "cpu") -> str:
    """The hardware an engine is specific to: GPU architecture for GPU builds, else CPU ISA."""
    if backend == "tensorrt" or device == "cuda":
        capability = gpu_capability()
        return f"cuda-{capability or 'none'}"
    return f"cpu-{platform.machine()}-" + "+".join(cpu_flags() or ["baseline"])


def engine_key(
    checkpoint_digest: str, recipe: OptimizationRecipe, backend_version: str, hardware_id: str
) -> str:
    """sha256 of the canonical JSON of everything that determines the engine's bytes."""
    payload = {
        "checkpoint": checkpoint_digest,
        "recipe": recipe.to_dict(),
        "backend_version": backend_version,
        "hardware": hardware_id,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def finished(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file()


@contextlib.contextmanager
def key_lock(cache_root: Path, key: str) -> Iterator[None]:
    """Exclusive per-key lock (flock; released by the kernel if the holder dies)."""
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f".{key}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _owner_alive(temp: Path) -> bool:
    try:
        pid = int(temp.name.split("-")[-2])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(cache_root: Path) -> list[Path]:
    """Remove temp directories of builds whose process is gone; returns what it removed."""
    removed: list[Path] = []
    if not cache_root.is_dir():
        return removed
    for temp in cache_root.glob(f"{BUILDING_PREFIX}*"):
        if temp.is_dir() and not _owner_alive(temp):
            shutil.rmtree(temp, ignore_errors=True)
            removed.append(temp)
    return removed


def new_temp(cache_root: Path, key: str) -> Path:
    cache_root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{BUILDING_PREFIX}{key[:16]}-{os.getpid()}-", dir=cache_root))


def publish(temp: Path, final: Path) -> bool:
    """Atomically move a finished build into place; False if another build got there first."""
    try:
        os.rename(temp, final)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST) and finished(final):
            shutil.rmtree(temp, ignore_errors=True)
            return False
        raise
    return True
