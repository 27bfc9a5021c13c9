"""Where a model version came from, as tags on the version: what a retrain reads back.

A retrain needs to know up to when its parent was trained (``data_cutoff``) to find what is
new, and an auditor needs to know which data, feedback and code produced a version. MLflow
keeps these as string tags on the model version, next to the digest, all under ``recserve.``.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

from recserve_serving.registry import DATA_CUTOFF_TAG, LINEAGE_PREFIX

PARENT_VERSION_TAG = f"{LINEAGE_PREFIX}parent_version"
DATA_WINDOW_TAG = f"{LINEAGE_PREFIX}data_window"
DATA_DIGEST_TAG = f"{LINEAGE_PREFIX}data_digest"
FEEDBACK_DIGEST_TAG = f"{LINEAGE_PREFIX}feedback_digest"
CODE_VERSION_TAG = f"{LINEAGE_PREFIX}code_version"
VERDICT_TAG = f"{LINEAGE_PREFIX}retrain.verdict"
REASON_TAG = f"{LINEAGE_PREFIX}retrain.reason"
DP_EPSILON_TAG = f"{LINEAGE_PREFIX}dp_epsilon"
DP_DELTA_TAG = f"{LINEAGE_PREFIX}dp_delta"
__all__ = ["DATA_CUTOFF_TAG", "code_version", "training_tags"]

_REPO = Path(__file__).resolve().parents[2]


@functools.cache
def code_version() -> str:
    """``recserve <version>`` plus ``+git <commit>`` when this runs from a git checkout (an image
    has no .git: its tag names the build instead), or ``unknown`` when neither is known."""
    try:
        package = metadata.version("recserve")
    except metadata.PackageNotFoundError:
        package = ""
    commit = ""
    if (_REPO / ".git").exists():
        try:
            found = subprocess.run(
                ["git", "-C", str(_REPO), "rev-parse", "--short=12", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            commit = found.stdout.strip() if found.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            commit = ""
    parts = [f"recserve {package}" if package else "", f"git {commit}" if commit else ""]
    return " +".join(p for p in parts if p) or "unknown"


def training_tags(*, data_cutoff: int, data_digest: str, data_start: int | None = None) -> dict[str, str]:
    """The lineage every trained version carries: its data's newest timestamp, the window and
    digest of that data, and the code that trained it."""
    tags = {
        DATA_CUTOFF_TAG: str(int(data_cutoff)),
        DATA_DIGEST_TAG: data_digest,
        CODE_VERSION_TAG: code_version(),
    }
    if data_start is not None:
        tags[DATA_WINDOW_TAG] = f"{int(data_start)}..{int(data_cutoff)}"
    return tags
