"""The content-addressed engine cache.

An engine's key is the sha256 of everything that changes the bytes it would contain: the
checkpoint digest, the recipe, the backend and its version, and the hardware it is tuned
for (CPU ISA flags that change which kernels ONNX Runtime picks, or the GPU's compute
capability). Builds write into a private temp directory inside the cache root (same file
system) and publish it with one ``os.rename``; a killed build leaves only a ``.building-``
directory, which never looks finished and is swept later by its owner's host, pid and age.
A per-key lock file makes a second concurrent build wait for the first and then return its
result as a hit. A finished engine whose files no longer match its manifest is quarantined.
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
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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


STALE_BUILD_SECONDS = 2 * 3600.0
"""Longer than a build Job's deadline: a directory this old has no live builder anywhere."""
QUARANTINE_PREFIX = ".quarantine-"
_INCARNATION = uuid.uuid4().hex[:8]
"""Tells this process from an earlier one with the same pid, as every container's pid 1 is."""


@dataclass(frozen=True)
class BuildOwner:
    """Who made a ``.building-`` directory: recorded in its name, so the sweep needs no file."""

    host: str
    pid: int
    incarnation: str


def _owner(temp: Path) -> BuildOwner | None:
    parts = temp.name.removeprefix(BUILDING_PREFIX).split("-")
    if len(parts) < 5 or not parts[-3].isdigit():
        return None
    return BuildOwner("-".join(parts[1:-3]), int(parts[-3]), parts[-2])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(temp: Path, now: float, max_age: float) -> bool:
    """Another host's (another pod's) directory only by age, since its pid means nothing here;
    this host's at once when its process is gone or is an earlier incarnation of this pid."""
    try:
        age = now - temp.stat().st_mtime
    except OSError:
        return False
    owner = _owner(temp)
    if owner is None or owner.host != socket.gethostname():
        return age > max_age
    if owner.pid == os.getpid():
        return owner.incarnation != _INCARNATION
    return not _pid_alive(owner.pid)


def sweep(cache_root: Path, *, max_age: float = STALE_BUILD_SECONDS, now: float | None = None) -> list[Path]:
    """Remove temp directories of builds that can no longer finish; returns what it removed."""
    removed: list[Path] = []
    if not cache_root.is_dir():
        return removed
    now = time.time() if now is None else now
    for temp in cache_root.glob(f"{BUILDING_PREFIX}*"):
        if temp.is_dir() and _stale(temp, now, max_age):
            shutil.rmtree(temp, ignore_errors=True)
            removed.append(temp)
    return removed


def new_temp(cache_root: Path, key: str) -> Path:
    cache_root.mkdir(parents=True, exist_ok=True)
    owner = f"{socket.gethostname()}-{os.getpid()}-{_INCARNATION}"
    return Path(tempfile.mkdtemp(prefix=f"{BUILDING_PREFIX}{key[:16]}-{owner}-", dir=cache_root))


def quarantine(engine_dir: Path) -> Path:
    """Set a corrupt engine aside (one rename) so its key can be built again; it is kept, not
    deleted, for whoever investigates what changed its files."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = engine_dir.parent / f"{QUARANTINE_PREFIX}{engine_dir.name}-{stamp}-{os.getpid()}"
    os.rename(engine_dir, target)
    return target


def publish(temp: Path, final: Path) -> bool:
    """Atomically move a finished build into place; False if another build got there first.

    The engine's directory becomes readable by every user (its files already are): ``mkdtemp``
    made it 0700, which would hide it from any uid but the builder's, and the pods that load an
    engine need not run as the one that built it."""
    os.chmod(temp, 0o755)
    try:
        os.rename(temp, final)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST) and finished(final):
            shutil.rmtree(temp, ignore_errors=True)
            return False
        raise
    return True


def newest_cached(engines: Path, name: str, version: str, recipe: OptimizationRecipe) -> Path | None:
    """The newest finished engine in the cache for this checkpoint, recipe and machine, found by
    reading manifests (no torch, no registry): ``recserve build`` would return the same one, at
    the cost of a process that imports torch and MLflow (about 40 s on a loaded 2-core box).
    Tests use it to find the engine a running model serves; for a searching recipe, the newest
    engine some recorded search chose among its candidates."""
    from recserve_serving.engine.manifest import EngineManifest
    from recserve_serving.engine.search import chosen_engine_keys
    from recserve_serving.errors import EngineError

    wanted = recipe.candidates()
    chosen = chosen_engine_keys(engines) if recipe.search is not None else None
    found = []
    for manifest_file in engines.glob("*/manifest.json"):
        try:
            manifest = EngineManifest.read(manifest_file.parent)
        except EngineError:
            continue
        ref, here = manifest.checkpoint, hardware(manifest.backend)
        if (
            (ref.name, ref.version) == (name, version)
            and manifest.recipe in wanted
            and manifest.hardware == here
            and (chosen is None or manifest.key in chosen)
        ):
            found.append(manifest_file.parent)
    return max(found, key=lambda p: p.stat().st_mtime, default=None)
