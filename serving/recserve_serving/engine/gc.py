"""Garbage collection of the engine cache: engines nobody references or used for a TTL.

Every build (or cache hit) and every load touches ``.<key>.used`` beside the engine, so
"unused" means no build asked for it and no replica loaded it. An engine that a live model
still names (its stable or canary ``engine.key``) is never removed, however old. Removal is
two steps under the key's build lock: the directory is renamed to ``.deleting-...`` (one
``rename``, so a loader either finds the whole engine or nothing) and then deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from recserve_serving.engine.cache import finished, key_lock

DELETING_PREFIX = ".deleting-"
_KEY = re.compile(r"^[0-9a-f]{64}$")


def marker(engine_dir: Path) -> Path:
    return engine_dir.parent / f".{engine_dir.name}.used"


def touch_used(engine_dir: Path) -> None:
    """Record a use of the engine; a read-only store (a serving pod's mount) is not an error.

    A build's hidden scratch directory (the gate loads the engine there before it is renamed
    into place) is not an engine yet: a marker for it would outlive it as litter.
    """
    if engine_dir.name.startswith("."):
        return
    with contextlib.suppress(OSError):
        marker(engine_dir).touch()


def last_used(engine_dir: Path) -> float:
    times = [engine_dir.stat().st_mtime]
    with contextlib.suppress(OSError):
        times.append(marker(engine_dir).stat().st_mtime)
    return max(times)


@dataclass(frozen=True)
class Collected:
    removed: list[str]
    kept_referenced: list[str]
    kept_recent: list[str]


def collect_garbage(
    cache_root: Path,
    *,
    ttl_seconds: float,
    keep: Iterable[str] = (),
    now: float | None = None,
    dry_run: bool = False,
) -> Collected:
    """Remove finished engines under ``cache_root`` that are not in ``keep`` and unused for the
    TTL (with ``dry_run``, only report which)."""
    now = time.time() if now is None else now
    referenced = set(keep)
    removed: list[str] = []
    kept_referenced: list[str] = []
    kept_recent: list[str] = []
    if not cache_root.is_dir():
        return Collected(removed, kept_referenced, kept_recent)
    for engine in sorted(cache_root.iterdir()):
        if not (_KEY.match(engine.name) and engine.is_dir() and finished(engine)):
            continue
        if engine.name in referenced:
            kept_referenced.append(engine.name)
            continue
        if now - last_used(engine) < ttl_seconds:
            kept_recent.append(engine.name)
            continue
        if dry_run:
            removed.append(engine.name)
            continue
        with key_lock(cache_root, engine.name):
            if now - last_used(engine) < ttl_seconds:  # used while we waited for the lock
                kept_recent.append(engine.name)
                continue
            doomed = cache_root / f"{DELETING_PREFIX}{engine.name}-{os.getpid()}"
            os.rename(engine, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            with contextlib.suppress(OSError):
                marker(engine).unlink()
        removed.append(engine.name)
    for leftover in [] if dry_run else cache_root.glob(f"{DELETING_PREFIX}*"):  # a killed collector's
        shutil.rmtree(leftover, ignore_errors=True)
    return Collected(removed, kept_referenced, kept_recent)
