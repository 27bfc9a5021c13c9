"""A tiny real ranker checkpoint registered in a fresh sqlite MLflow registry, for the scenarios
whose build Jobs are simulated (kwok): ``python -m e2e.tiny_ranker STATE_DIR`` prints
``{"trackingUri", "uri", "digest"}``.

The checkpoint is the untrained ranker on the bundled MiniLM encoder's first two layers
(``new_ranker(max_len=64, layers=2)``),
written once to the e2e cache (``$RECSERVE_E2E_CACHE/recserve/tiny-ranker``, default
``e2e/.cache``) and reused, so its digest, and with it the engine built from it, stays the same
from run to run. It runs in a subprocess so that pytest itself never imports torch or MLflow.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

NAME = "movielens-ranker"
E2E_DIR = Path(__file__).resolve().parent


def cache_dir() -> Path:
    """Where e2e keeps recserve artifacts between runs (gitignored, next to the binaries)."""
    path = Path(os.environ.get("RECSERVE_E2E_CACHE") or E2E_DIR / ".cache") / "recserve"
    path.mkdir(parents=True, exist_ok=True)
    return path


def index_dir() -> Path:
    """Where a build Job's ``--index-dir`` (the artifact store's retrieval index) goes here: the
    test registry's, ``.recserve-test/retrieval``, where the integration tier builds the same
    catalog's index (same key), so the e2e tier does not build one of its own after it."""
    return E2E_DIR.parent / ".recserve-test" / "retrieval"


def tiny_checkpoint() -> Path:
    """The checkpoint directory, created on first use (under a lock: sessions may overlap)."""
    root = cache_dir()
    final = root / "tiny-ranker-2-layers"
    with open(root / "tiny-ranker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_dir():
            from recserve_serving.model import new_ranker, save_checkpoint

            scratch = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root))
            try:
                save_checkpoint(new_ranker(max_len=64, layers=2), scratch / "checkpoint")
                os.rename(scratch / "checkpoint", final)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return final


def main(argv: list[str]) -> int:
    from recserve_serving.registry import Registry

    registry = Registry(Path(argv[0]))
    resolved = registry.register(NAME, tiny_checkpoint(), {})
    print(json.dumps({"trackingUri": registry.tracking_uri, "uri": resolved.uri, "digest": resolved.digest}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
