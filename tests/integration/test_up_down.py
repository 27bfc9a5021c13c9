"""`recserve up` on the MovieLens example, end to end over HTTP, then `down` leaves nothing.

The model is the test registry's small fine-tuned ranker (the root conftest's ``test_state``,
``.recserve-test/``, trained once per machine in about a minute); Ray's temp dir is in the
test's tmp path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from up_process import RECSERVE, Up

from recserve_operator.embedded.processes import free_port
from recserve_serving.engine.cache import newest_cached
from recserve_serving.example_data import load_example
from recserve_serving.privacy import embedded_key_file, pseudonymizer_from
from recserve_serving.recipe import OptimizationRecipe

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "manifests/examples/movielens-ranker.yaml"


@pytest.fixture(scope="module")
def env(test_state, tmp_path_factory):
    values = dict(os.environ)
    values.update(RECSERVE_HOME=str(test_state), RECSERVE_RAY_TMP=str(tmp_path_factory.mktemp("r")))
    return values


@pytest.fixture(scope="module")
def served(env, test_state):
    # A fresh online store and feedback log each run: the store refills from the ratings.
    shutil.rmtree(test_state / "online", ignore_errors=True)
    port = free_port()
    up = Up(EXAMPLE, env, port)
    try:
        up.wait_ready()
        yield up, f"http://127.0.0.1:{port}", up.tree
    finally:
        up.down()


@pytest.fixture(scope="module")
def dataset():
    return load_example()


def test_recommend_returns_ten_unseen_titles(served, dataset):
    _, url, _ = served
    response = httpx.post(f"{url}/v1/recommend", json={"user_id": 42, "k": 10}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Recserve-Version"] == "movielens-ranker/1"
    items = body["items"]
    assert len(items) == 10
    seen = {dataset.item_id(code) for code in dataset.interacted_items(dataset.user_code(42))}
    assert not {item["item_id"] for item in items} & seen
    assert all(item["title"] == dataset.title(dataset.item_code(item["item_id"])) for item in items)
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True)


def test_feedback_is_logged_and_the_next_recommendation_reflects_it(served, test_state):
    _, url, _ = served
    before = httpx.post(f"{url}/v1/recommend", json={"user_id": 99, "k": 10}, timeout=60).json()["items"]
    clicked, viewed = before[0]["item_id"], before[1]["item_id"]
    events = [
        {"user_id": 99, "item_id": clicked, "event": "click"},
        {"user_id": 99, "item_id": viewed, "event": "view"},
    ]
    answer = httpx.post(f"{url}/v1/feedback", json={"events": events}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 2, "history_updated": True}
    after = httpx.post(f"{url}/v1/recommend", json={"user_id": 99, "k": 10}, timeout=60).json()["items"]
    shown = [item["item_id"] for item in after]
    assert clicked not in shown and viewed not in shown, "what the user saw is not recommended back"
    assert shown != [item["item_id"] for item in before][2:12], "the clicked item changed the user's text"
    logged = [
        json.loads(line)
        for path in sorted((test_state / "online/movielens-ranker/feedback").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    user = pseudonymizer_from(embedded_key_file(test_state)).user(99)
    assert [(e["userId"], e["itemId"], e["event"]) for e in logged][-2:] == [
        (user, clicked, "click"),
        (user, viewed, "view"),
    ]
    bad = httpx.post(
        f"{url}/v1/feedback", json={"events": [{"user_id": 99, "item_id": -5, "event": "click"}]}, timeout=60
    )
    assert bad.status_code == 400 and "events[0].item_id: item -5 is not in the catalog" in bad.text


def test_metrics_count_requests_by_version(served):
    _, url, _ = served
    httpx.post(f"{url}/v1/recommend", json={"user_id": 7, "k": 5}, timeout=60)
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("recserve_requests_total{")
        and 'version="movielens-ranker/1"' in line
        and 'endpoint="/v1/recommend"' in line
        and 'code="200"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1
    assert "recserve_request_duration_seconds_bucket{" in metrics


def test_printed_curl_works(served):
    up, _, _ = served
    curl = next(line for line in up.lines if line.startswith("try: curl"))
    completed = subprocess.run(
        curl.removeprefix("try: "), shell=True, capture_output=True, text=True, timeout=60
    )
    assert len(json.loads(completed.stdout)["items"]) == 10


def test_open_inference_protocol_scores_pairs(served):
    _, url, _ = served
    body = {
        "id": "r1",
        "inputs": [
            {"name": "user_id", "shape": [3], "datatype": "INT64", "data": [42, 42, 42]},
            {"name": "item_id", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
        ],
    }
    response = httpx.post(f"{url}/v2/models/movielens-ranker/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["id"] == "r1" and out["model_name"] == "movielens-ranker"
    assert out["outputs"][0]["shape"] == [3] and len(out["outputs"][0]["data"]) == 3
    assert httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "says"),
    [
        ("post", "/v1/recommend", b"{not json", 400, "invalid request"),
        ("post", "/v1/recommend", {"user_id": 999999, "k": 10}, 404, "unknown user 999999"),
        ("post", "/v1/recommend", {"user_id": 42, "k": 0}, 400, "k must be between 1 and"),
        ("post", "/v1/recommend", {"user_id": 42, "k": 100000}, 400, "k must be between 1 and"),
        ("post", "/v1/recommend", {"user_id": 42, "candidates": []}, 400, "candidates is empty"),
        ("post", "/v2/models/movielens-ranker/infer", {"inputs": []}, 400, "inputs must be"),
        (
            "post",
            "/v2/models/movielens-ranker/infer",
            {
                "inputs": [
                    {"name": "user_id", "shape": [1], "datatype": "FP32", "data": [1.0]},
                    {"name": "item_id", "shape": [1], "datatype": "INT64", "data": [1]},
                ]
            },
            400,
            "datatype must be one of",
        ),
        ("get", "/v2/models/nope", None, 404, "unknown model 'nope'"),
    ],
)
def test_bad_requests_get_4xx_and_replica_keeps_serving(served, method, path, payload, status, says):
    _, url, _ = served
    if isinstance(payload, bytes):
        response = httpx.post(
            url + path, content=payload, headers={"Content-Type": "application/json"}, timeout=30
        )
    elif method == "post":
        response = httpx.post(url + path, json=payload, timeout=30)
    else:
        response = httpx.get(url + path, timeout=30)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]
    again = httpx.post(f"{url}/v1/recommend", json={"user_id": 1, "k": 3}, timeout=60)
    assert again.status_code == 200


def test_eval_through_the_endpoint_equals_the_offline_served_pipeline(served, env, tmp_path):
    """``recserve eval --endpoint`` measures what the live router returns; the offline served
    pipeline (the same engine, the router's own planning, in-process) must give the same lists,
    so the offline figures in the README are what a deployment serves."""
    _, url, _ = served
    recipe = OptimizationRecipe.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"]["optimization"])
    engine = newest_cached(Path(env["RECSERVE_HOME"]) / "engines", "movielens-ranker", "1", recipe)
    assert engine is not None, "the served model's engine is in the test registry's cache"
    out = tmp_path / "eval"
    args = ["eval", "--engine", str(engine), "--endpoint", url, "--users", "12", "--no-baselines"]
    args += ["--diversity", "--out", str(out), "--quiet"]
    done = subprocess.run([*RECSERVE, *args], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "eval.json").read_text())
    rows = {row["name"]: row["cohorts"]["all"] for row in report["methods"]}
    offline = next(row for name, row in rows.items() if name.startswith("served: hybrid"))
    live = next(row for name, row in rows.items() if name.startswith("served endpoint"))
    for metric in ("ndcg@10", "hr@10", "mrr@10", "ild_genres", "novelty"):
        assert live[metric] == pytest.approx(offline[metric], abs=1e-9), metric
    assert live["users"] == offline["users"] == 12
    assert (out / "eval.png").stat().st_size > 10_000 and "| served endpoint" in (out / "eval.md").read_text()


def test_second_up_of_the_same_model_is_refused(served, env):
    completed = subprocess.run(
        [*RECSERVE, "up", str(EXAMPLE), "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "movielens-ranker is already running" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


def test_down_stops_every_process(served, env):
    up, url, tree = served
    assert len(tree) > 5, "expected the Ray head, raylet, GCS and workers in the tree"
    completed = subprocess.run([*RECSERVE, "down"], env=env, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr
    up.process.wait(timeout=60)
    survivors = [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert survivors == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/health/live", timeout=5)
