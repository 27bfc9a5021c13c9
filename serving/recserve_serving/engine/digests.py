"""sha256 digests of files and directories: the identity of checkpoints and engines.

A directory digest covers relative paths as well as contents, so renaming or adding a
file changes it; it ignores modification times, so copying a directory keeps it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
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
