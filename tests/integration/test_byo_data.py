"""A catalog that is not MovieLens, through the same code path end to end: a generated shop
(Parquet, its own column names, string ids, implicit events) is trained on, built, served by
`recserve up`, recommended from by string user ids, and given feedback that the next
recommendation reflects and the log keeps after `down`; then users are erased, and no raw user id
or request history is found in any log, store or metric the run wrote."""

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
from recserve_serving.privacy import embedded_key_file, pseudonymizer_from
from recserve_serving.synthetic import generate
from recserve_serving.waiting import wait_for

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
        yield up.endpoint, root, customers, up
    finally:
        up.down()


def test_string_ids_are_recommended_and_feedback_personalizes_at_once(served):
    url, root, customers, _ = served
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
    key = pseudonymizer_from(embedded_key_file(root / "state"))
    assert logged[-1]["itemId"] == clicked and logged[-1]["userId"] == key.user(user)


def test_a_new_user_with_a_string_history_and_oip_string_ids(served):
    url, _, customers, _ = served
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


NEW_USER = "user-7f3c-raw"
"""A user the data lacks, with an id that cannot occur by chance in anything the run writes."""


def test_no_raw_user_id_or_history_reaches_logs_metrics_or_stores_and_erasure_works(served, shop):
    """Every request kind that carries a user id (recommend with reasons, a history, OIP infer,
    feedback, erasure by the API and by the CLI through the router), then every file the run
    wrote (Ray's session logs, the feedback log, the history store), `up`'s own output and the
    metrics are searched for the raw ids and the request's history list."""
    url, root, customers, up = served
    env = shop[1]
    announced = {c for c in customers if any(c in line for line in up.lines if line.startswith("try: curl"))}
    user = next(c for c in customers[3:] if c not in announced)  # `up` prints one data-set user to try
    explained = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": 3, "explain": True}, timeout=60)
    assert explained.status_code == 200, explained.text
    history = [item["item_id"] for item in explained.json()["items"]]
    answer = httpx.post(
        f"{url}/v1/recommend", json={"user_id": NEW_USER, "history": history, "k": 3}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    events = [{"user_id": NEW_USER, "item_id": item, "event": "click"} for item in history]
    assert httpx.post(f"{url}/v1/feedback", json={"events": events}, timeout=60).status_code == 200
    oip = {
        "inputs": [
            {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": [user]},
            {"name": "item_id", "shape": [1], "datatype": "BYTES", "data": history[:1]},
        ]
    }
    assert httpx.post(f"{url}/v2/models/shop-test/infer", json=oip, timeout=60).status_code == 200
    key = pseudonymizer_from(embedded_key_file(root / "state"))

    erased = httpx.delete(f"{url}/v1/users/{user}", timeout=60)
    assert erased.json() == {
        "erased": True,
        "userPseudonym": key.user(user),
        "historyErased": True,
        "eventsTombstoned": True,
    }
    gone = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": 3}, timeout=60)
    assert gone.status_code == 404 and "unknown user" in gone.text, "an erased user's history is not served"
    cli = subprocess.run(
        [*RECSERVE, "users", "erase", NEW_USER, "--endpoint", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"erased user {key.user(NEW_USER)} through {url}: online history emptied" in cli.stdout
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert 'endpoint="/v1/users/{user_id:path}"' in metrics
    assert 'recserve_feedback_events_compacted_total{model="shop-test",reason="erased"}' in metrics, (
        "the router's log maintenance made its first pass in the real replica"
    )

    ray_logs = root / "ray"

    def access_logged() -> bool:
        """Ray Serve writes its access lines asynchronously: wait until the erasures are there, which
        also shows that they are logged, under the route template."""
        text = "\n".join(p.read_text(errors="replace") for p in ray_logs.rglob("*.log") if "serve" in p.parts)
        return text.count("DELETE /v1/users/{user_id:path} 200") >= 2

    wait_for(access_logged, 60, interval=1.0, message="Ray Serve's access log lines of the two erasures")
    written = [p for p in [*ray_logs.rglob("*"), *(root / "state/online").rglob("*")] if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in written) and any(p.name == "online.db" for p in written)
    sources = {str(p): p.read_bytes() for p in written}
    sources["recserve up output"] = "\n".join(up.lines).encode()
    sources["/metrics"] = metrics.encode()
    sources["recserve users erase output"] = (cli.stdout + cli.stderr).encode()
    lists = [json.dumps(history), json.dumps(history, separators=(",", ":")), str(history)]
    leaks = [
        (name, needle)
        for name, data in sources.items()
        for needle in [user, NEW_USER, *lists]
        if needle.encode() in data
    ]
    assert not leaks, f"raw user ids or histories written: {leaks[:5]}"
    logged = [
        json.loads(line)
        for segment in sorted((root / "state/online/shop-test/feedback").glob("*.jsonl"))
        for line in segment.read_text().splitlines()
    ]
    assert {r["erase"] for r in logged if "erase" in r} == {key.user(user), key.user(NEW_USER)}
