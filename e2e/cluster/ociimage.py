"""Single-layer OCI image archives written directly, for a real node's containerd.

No registry is reachable from these machines and the images a test pod needs are tiny (a
static pause, a static busybox), so this writes the OCI layout tar that ``ctr images import``
reads, with no daemon and no dependency. The output is reproducible: fixed mtimes and owners,
sorted entries, a gzip header without a timestamp.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
_MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class ImageSpec:
    """What goes into one image: ``files`` maps an absolute path in the image to a host file
    (copied with its mode), ``symlinks`` maps a path to a link target."""

    name: str
    entrypoint: Sequence[str]
    files: Mapping[str, Path] = field(default_factory=dict)
    symlinks: Mapping[str, str] = field(default_factory=dict)
    env: Sequence[str] = ("PATH=/bin",)


def _tar_member(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = link
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _layer(spec: ImageSpec) -> bytes:
    """The layer as an uncompressed tar: parent directories first, then files and links."""
    paths = list(spec.files) + list(spec.symlinks)
    dirs = sorted({str(Path(p).parent) for p in paths} - {"/"})
    dirs = sorted({str(parent) for d in dirs for parent in [Path(d), *Path(d).parents]} - {"/"})
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            tar.addfile(_tar_member(d, tarfile.DIRTYPE, 0o755))
        for path in sorted(spec.files):
            data = spec.files[path].read_bytes()
            mode = spec.files[path].stat().st_mode & 0o7777
            tar.addfile(_tar_member(path, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
        for path in sorted(spec.symlinks):
            tar.addfile(_tar_member(path, tarfile.SYMTYPE, 0o777, link=spec.symlinks[path]))
    return raw.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    tar.addfile(_tar_member(f"blobs/sha256/{digest}", tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def write_archive(spec: ImageSpec, out: Path) -> Path:
    """Write ``spec`` as an OCI archive at ``out``; ``spec.name`` (``host/repo:tag``) is the
    name containerd gives the image on import."""
    layer_tar = _layer(spec)
    layer_gz = gzip.compress(layer_tar, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(spec.entrypoint), "Env": list(spec.env)},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_member("blobs", tarfile.DIRTYPE, 0o755))
        tar.addfile(_tar_member("blobs/sha256", tarfile.DIRTYPE, 0o755))
        config_desc = {"mediaType": _MEDIA_CONFIG, **_blob(tar, _json(config))}
        layer_desc = {"mediaType": _MEDIA_LAYER, **_blob(tar, layer_gz)}
        manifest = {
            "schemaVersion": 2,
            "mediaType": _MEDIA_MANIFEST,
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = {
            "mediaType": _MEDIA_MANIFEST,
            **_blob(tar, _json(manifest)),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": spec.name,
                "org.opencontainers.image.ref.name": spec.name.rsplit(":", 1)[-1],
            },
        }
        index = {"schemaVersion": 2, "manifests": [manifest_desc]}
        for name, data in (
            ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
            ("index.json", _json(index)),
        ):
            tar.addfile(_tar_member(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return out
