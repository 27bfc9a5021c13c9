"""``DELETE /v1/users/{id}`` and feedback through the router's real HTTP app, in process, on a real
tiny data set, the real SQLite Feast store and the real log: what is erased, idempotence, 503
without a log, and that the metrics and the log name the route and pseudonyms, never the id."""

from __future__ import annotations

from pathlib import Path

import pytest
from erasure_router import serve_in_process, store_router
from tiny_data import tiny

from recserve_serving.online.feedback_log import read_feedback
from recserve_serving.serve import app as serve_app
from recserve_serving.serve.catalog import Catalog, DatasetHistories
from recserve_serving.serve.config import RouterConfig

pytestmark = pytest.mark.unit
RAW = "u1"


def test_erase_empties_the_history_tombstones_the_log_and_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = store_router(tmp_path)
    pseudonym = router.pseudonyms.user(RAW)  # type: ignore[union-attr]
    with serve_in_process(monkeypatch, router) as client:
        logged = client.post(
            "/v1/feedback", json={"events": [{"user_id": RAW, "item_id": "sku-c", "event": "click"}]}
        )
        assert logged.status_code == 200, logged.text
        first = client.delete(f"/v1/users/{RAW}")
        again = client.delete(f"/v1/users/{RAW}")
        slashed = client.delete("/v1/users/a%2Fb")
        metrics = client.get("/metrics").text
    expected = {"erased": True, "userPseudonym": pseudonym, "historyErased": True, "eventsTombstoned": True}
    assert first.status_code == 200 and first.json() == expected
    assert again.status_code == 200 and again.json() == {**expected, "historyErased": False}
    assert slashed.status_code == 200 and slashed.json()["userPseudonym"] == router.pseudonyms.user("a/b")  # type: ignore[union-attr]
    assert router.catalog.past(RAW) is None and router.catalog.past("u2") is not None
    records = read_feedback(tmp_path / "online" / "m" / "feedback")
    assert records.erased == {pseudonym, router.pseudonyms.user("a/b")} and records.events == []  # type: ignore[union-attr]
    raw_log = b"".join(p.read_bytes() for p in (tmp_path / "online" / "m" / "feedback").glob("*.jsonl"))
    assert b'"u1"' not in raw_log and pseudonym.encode() in raw_log
    assert 'endpoint="/v1/users/{user_id:path}"' in metrics and "u1" not in metrics and "a/b" not in metrics


def test_erase_serves_an_erased_user_from_request_histories_as_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``history.source: request``: the data set is not rewritten, but the user reads as unknown."""
    router = store_router(tmp_path)
    router.catalog = Catalog(tiny(), retriever=None, histories=DatasetHistories(tiny(), router.pseudonyms))  # type: ignore[arg-type]
    with serve_in_process(monkeypatch, router) as client:
        answer = client.delete(f"/v1/users/{RAW}")
        assert answer.json()["historyErased"] is True
        assert client.delete("/v1/users/never-seen").json()["historyErased"] is False
    assert router.catalog.past(RAW) is None


def test_a_router_without_a_log_answers_503_and_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = tiny()
    catalog = Catalog(dataset, retriever=None, histories=DatasetHistories(dataset))  # type: ignore[arg-type]
    router = serve_app.Router(RouterConfig(model_name="m", index_dir="unused").to_dict(), catalog=catalog)
    with serve_in_process(monkeypatch, router) as client:
        answer = client.delete(f"/v1/users/{RAW}")
    assert answer.status_code == 503
    assert "cannot be erased through this router: its config has no onlineDir" in answer.json()["error"]
    assert catalog.past(RAW) is not None
