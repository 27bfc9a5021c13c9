"""What the tests that serve from a built image share: the stable serve config the operator
renders for one engine in the artifact store, applied through a Serve REST API, what a real
answer of ``/v1/recommend`` looks like, and the serving path without Ray as one script
(``RECOMMEND``). One copy, so a container and a pod are held to the same deployment and the same
answer."""

from __future__ import annotations

import secrets
import textwrap
from pathlib import Path
from typing import Any

import httpx

from recserve_operator.planners.serve_config import (
    DeployPlan,
    ServedVersion,
    ServeObservation,
    ServeSite,
    plan_hand_over,
    plan_serve_config,
)
from recserve_operator.rollout.serve_rest import ServeRestTarget
from recserve_operator.settings import PSEUDONYM_SECRET_KEY, OperatorSettings
from recserve_operator.validate import load_model

EXAMPLE = Path(__file__).resolve().parents[1] / "manifests" / "examples" / "movielens-ranker.yaml"
FP32_CANARY_VERSION = {
    "checkpoint": {"uri": "models:/movielens-ranker/1"},
    "optimization": {
        "backend": "onnxruntime",
        "precision": "fp32",
        "maxBatchSize": 64,
        "maxSequenceLength": 128,
    },
}
"""The canary the rollout scenarios add: the stable checkpoint as an fp32 engine (the example is
INT8), so both versions are cached after one build and answer with different scores."""

# The serving path without Ray, as one script: the router's half (the bundled example catalog,
# retrieval from the index) and the ranker's half (the engine) for one user, with what the
# process may do (uid, a writable root, torch) as JSON on its last line. Run in the serving image
# (a podman container, a pod on the real node) and, with the repository's code and data, on the host.
# Arguments: engine_dir index_dir user_id candidates.
RECOMMEND = textwrap.dedent(
    """
    import importlib.util, json, os, sys
    from recserve_serving.engine.runtime import load_engine
    from recserve_serving.example_data import load_example
    from recserve_serving.serve.catalog import Catalog
    engine_dir, index_dir, user = sys.argv[1], sys.argv[2], int(sys.argv[3])
    catalog = Catalog.open(load_example(), index_dir)
    engine = load_engine(engine_dir)
    candidates = catalog.candidates(catalog.history(user, None), catalog.seen(user), int(sys.argv[4]))
    text = catalog.user_text(user, None)
    scores = engine.score([text] * len(candidates), [catalog.item_text(m) for m in candidates])
    try:
        open("/opt/recserve/written", "w").close()
        root_writable = True
    except OSError:
        root_writable = False
    print(json.dumps({
        "engine": engine.name, "candidates": candidates, "scores": [float(s) for s in scores],
        "uid": os.getuid(), "gid": os.getgid(), "root_writable": root_writable,
        "torch": importlib.util.find_spec("torch") is not None,
    }))
    """
)


def pseudonym_key_dir(parent: Path) -> Path:
    """A folder holding a test pseudonymization key (``key``), readable by the image's uid: what the
    key Secret's mount is to a cluster's routers, which refuse to record feedback without it."""
    folder = parent / "pseudonym"
    folder.mkdir(mode=0o755, exist_ok=True)
    key = folder / PSEUDONYM_SECRET_KEY
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o644)
    folder.chmod(0o755)
    return folder


def apply_stable(target: ServeRestTarget, engine_in_store: str) -> tuple[Any, Any]:
    """Apply the example model's serve config for ``engine_in_store`` as version "1", with the
    data and index paths a cluster's routers use; returns (desired, hand_over) for polling."""
    settings = OperatorSettings()
    site = ServeSite(  # as ClusterPlatform's
        index_dir=settings.index_dir,
        online_dir=settings.online_dir,
        pseudonym_key_file=settings.pseudonym_key_file,
    )
    plan = DeployPlan(stable=ServedVersion("1", engine_in_store))
    desired = plan_serve_config(load_model(EXAMPLE), plan, site)
    hand_over = plan_hand_over(desired, ServeObservation())
    target.apply(hand_over.rendered)
    return desired, hand_over


def assert_recommendations(response: httpx.Response, k: int) -> None:
    """A real answer from version "1": k titled items, ranked by scores that differ."""
    assert response.status_code == 200, response.text
    assert response.headers["X-Recserve-Version"] == "1"
    items = response.json()["items"]
    assert len(items) == k and all(item["title"] for item in items)
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
