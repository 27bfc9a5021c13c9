"""Which checkpoint URIs name a place inside their store, and which could escape it.

``pvc://claim/path`` is joined onto the claim's mount, and ``file:///path`` is read as is, so
a ``..`` segment, an empty one, or a percent-encoded ``.`` or ``/`` (decoded before the join)
could point a build at files outside the claim. Such URIs are refused at validation, where
the user can fix them, and the resolver checks containment once more before it reads.
S3 is named on purpose: the syntax looks supported, but no part of recserve reads from S3.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from recserve_serving.errors import RecserveError

PVC_ROOT_ENV = "RECSERVE_PVC_ROOT"

SUPPORTED_CHECKPOINTS = "models:/NAME/VERSION, models:/NAME@ALIAS, file:///ABSOLUTE/PATH or pvc://CLAIM/PATH"
S3_UNSUPPORTED = (
    "s3:// checkpoints are not supported: recserve cannot read from S3; use "
    f"{SUPPORTED_CHECKPOINTS} (copy the checkpoint to a claim, or register it in MLflow)"
)
_ENCODED_DOT_OR_SLASH = re.compile(r"%2[eEfF]")

UNSAFE_PATH_CEL = (
    "self.uri.matches('^(file|pvc)://.*(%2[eEfF]|/[.][.]?(/|$))')"
    " || self.uri.matches('^(pvc://[^/]*|file://)(/.*)?//')"
)
"""CEL twin of ``path_problem``: true for a URI the API server must refuse."""


def path_problem(uri: str) -> str | None:
    """Why a ``file://`` or ``pvc://`` URI's path is unsafe, or None if it stays inside its root."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in {"file", "pvc"}:
        return None
    if _ENCODED_DOT_OR_SLASH.search(rest):
        return "must not percent-encode '.' or '/' (%2e, %2f): write the path plainly"
    path = rest.split("/", 1)[1] if "/" in rest else ""
    if path.endswith("/"):
        path = path[:-1]
    if not path:
        return None
    segments = unquote(path).split("/")
    if any(s in {".", ".."} for s in segments):
        return "must not contain '.' or '..' path segments: the path must stay inside its claim or root"
    if any(s == "" for s in segments):
        return "must not contain empty path segments ('//'): every segment is relative to the claim or root"
    return None


def pvc_path(uri: str, error: type[RecserveError]) -> Path:
    """The local path of ``pvc://CLAIM/PATH`` under the claims' mount root, checked to stay in
    its claim; ``error`` is the caller's own kind (a checkpoint's, a data file's)."""
    root = os.environ.get(PVC_ROOT_ENV)
    if not root:
        raise error(f"{uri}: set {PVC_ROOT_ENV} to where persistent volume claims are mounted")
    parsed = urlparse(uri)
    claim = (Path(root) / parsed.netloc).resolve()
    path = (claim / unquote(parsed.path).lstrip("/")).resolve()
    if not path.is_relative_to(claim):
        raise error(f"{uri}: resolves to {path}, outside the claim's mount {claim}")
    return path
