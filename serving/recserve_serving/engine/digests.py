"""sha256 digests of files and directories: the identity of checkpoints and engines.

A directory digest covers relative paths as well as contents, so renaming or adding a
file changes it; it ignores modification times, so copying a directory keeps it.

A process remembers the digest of each file it has read, keyed by the file's identity and
its size, mtime and ctime (as git's index does): the operator verifies the same checkpoint on
every resync of every model that names it, and re-reading it each time kept two cores busy
hashing at a few hundred models. Any write to the file changes its ctime, so a tampered
file is always read again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

_CHUNK = 1 << 20
_REMEMBERED = 4096
_known: OrderedDict[tuple[str, int, int, int, int, int], str] = OrderedDict()
_lock = threading.Lock()


def _identity(path: Path) -> tuple[str, int, int, int, int, int]:
    stat = os.stat(path)
    return (os.fspath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def file_sha256(path: Path) -> str:
    key = _identity(path)
    with _lock:
        known = _known.get(key)
        if known is not None:
            _known.move_to_end(key)
            return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    with _lock:
        _known[key] = digest.hexdigest()
        if len(_known) > _REMEMBERED:
            _known.popitem(last=False)
    return digest.hexdigest()


def file_digests(directory: Path, *, exclude: frozenset[str] = frozenset()) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every regular file under ``directory``."""
    directory = Path(directory)
    return {
        path.relative_to(directory).as_posix(): file_sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.relative_to(directory).as_posix() not in exclude
    }


def combine(digests: dict[str, str]) -> str:
    """One ``sha256:`` digest for a ``{path: sha256}`` map, independent of its order."""
    digest = hashlib.sha256()
    for name in sorted(digests):
        digest.update(f"{name}\0{digests[name]}\n".encode())
    return "sha256:" + digest.hexdigest()


def directory_digest(directory: Path) -> str:
    return combine(file_digests(directory))
