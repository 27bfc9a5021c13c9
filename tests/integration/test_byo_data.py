"""A catalog that is not MovieLens, through the same code path end to end: a generated shop
(Parquet, its own column names, string ids, implicit events) is trained on, built, served by
`recserve up`, recommended from by string user ids, and given feedback that the next
recommendation reflects and the log keeps after `down`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from up_process import RECSERVE, Up

from recserve_operator.embedded.processes import free_port
from recserve_serving.synthetic import generate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "manifests/examples/shop-ranker.yaml"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The shop example pointed at a small generated copy, with a tiny ranker trained on it."""
    root = tmp_path_factory.mktemp("shop")
    items, events = generate(root / "data", items=300, users=60, interactions=3000, seed=7)
    manifest = yaml.safe_load(SHOP.read_text())
    manifest["metadata"] = {"name": "shop-test"}
    manifest["spec"]["checkpoint"]["uri"] = "models:/shop-test/1"
    manifest["spec"]["data"]["catalog"]["uri"] = f"file://{items}"
    manifest["spec"]["data"]["interactions"]["uri"] = f"file://{events}"
    manifest["spec"]["optimization"]["precision"] = "fp32"  # a 40-step ranker: the gate judges fp32 drift
    path = root / "shop-test.yaml"
    path.write_text(yaml.safe_dump(manifest))
    env = dict(os.environ, RECSERVE_HOME=str(root / "state"), RECSERVE_RAY_TMP=str(root / "ray"))
    train = ["train", "--data", str(path), "--name", "shop-test", "--layers", "2", "--steps", "40"]
    subprocess.run(
        [*RECSERVE, *train, "--eval-users", "10", "--negatives", "sampled"],
        env=env,
        check=True,
        timeout=1200,
        cwd=REPO,
    )
    customers = sorted(pd.read_parquet(events).customer.unique())
    return path, env, root, customers


@pytest.fixture(scope="module")
def served(shop):
    path, env, root, customers = shop
    up = Up(path, env, free_port())
    try:
        up.wait_ready()
        yield up.endpoint, root, customers
    finally:
        up.down()


def test_string_ids_are_recommended_and_feedback_personalizes_at_once(served):
    url, root, customers = served
    user = customers[0]
    before = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": 10}, timeout=60)
    assert before.status_code == 200, before.text
    items = before.json()["items"]
    assert len(items) == 10 and all(
        isinstance(i["item_id"], str) and i["item_id"].startswith("sku-") for i in items
    )
    clicked = items[0]["item_id"]
    answer = httpx.post(
        f"{url}/v1/feedback",
        json={"events": [{"user_id": user, "item_id": clicked, "event": "click"}]},
        timeout=60,
    )
    assert answer.json() == {"accepted": 1, "history_updated": True}
    after = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": 10}, timeout=60).json()
    assert clicked not in [i["item_id"] for i in after["items"]]
    logged = [
        json.loads(line)
        for segment in sorted((root / "state/online/shop-test/feedback").glob("*.jsonl"))
        for line in segment.read_text().splitlines()
    ]
    assert logged[-1]["itemId"] == clicked and logged[-1]["userId"] == user


def test_a_new_user_with_a_string_history_and_oip_string_ids(served):
    url, _, customers = served
    user = customers[1]
    first = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": 3}, timeout=60).json()
    history = [item["item_id"] for item in first["items"]]
    anonymous = httpx.post(f"{url}/v1/recommend", json={"history": history, "k": 5}, timeout=60)
    assert anonymous.status_code == 200 and not {i["item_id"] for i in anonymous.json()["items"]} & set(
        history
    )
    unknown = httpx.post(f"{url}/v1/recommend", json={"history": ["sku-nope"], "k": 5}, timeout=60)
    assert unknown.status_code == 400 and "history: unknown item ids 'sku-nope'" in unknown.text
    body = {
        "inputs": [
            {"name": "user_id", "shape": [2], "datatype": "BYTES", "data": [user, user]},
            {"name": "item_id", "shape": [2], "datatype": "BYTES", "data": history[:2]},
        ]
    }
    scored = httpx.post(f"{url}/v2/models/shop-test/infer", json=body, timeout=60)
    assert scored.status_code == 200, scored.text
    assert len(scored.json()["outputs"][0]["data"]) == 2
