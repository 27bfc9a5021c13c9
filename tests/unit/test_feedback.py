"""POST /v1/feedback's core: checked against the catalog, logged durably, histories updated at
once; on a real (tiny) data set, the real SQLite-backed Feast store and the real log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tiny_data import tiny

from recserve_serving.dataspec import HistoryStoreSpec
from recserve_serving.errors import InvalidRequest, Unavailable
from recserve_serving.online.feedback_log import FeedbackLog
from recserve_serving.online.history import HistoryStore
from recserve_serving.privacy import Pseudonymizer
from recserve_serving.serve.catalog import Catalog, DatasetHistories
from recserve_serving.serve.feedback import FeedbackRequest, record_feedback
from recserve_serving.serve.sources import StoreHistories, dataset_histories

pytestmark = pytest.mark.unit
PSEUDONYMS = Pseudonymizer(b"k" * 32)


@pytest.fixture
def store_catalog(tmp_path: Path) -> Catalog:
    dataset = tiny()
    store = HistoryStore(HistoryStoreSpec(kind="sqlite"), tmp_path / "feast")
    store.fill(dataset_histories(dataset, PSEUDONYMS), dataset.digest)
    histories = StoreHistories(store, dataset, PSEUDONYMS)
    return Catalog(dataset, retriever=None, histories=histories)  # type: ignore[arg-type]


def feedback(*events: dict[str, Any]) -> FeedbackRequest:
    return FeedbackRequest.model_validate({"events": list(events)})


def test_the_store_is_filled_from_the_interactions(store_catalog: Catalog) -> None:
    past = store_catalog.past("u1")
    assert past is not None
    code = store_catalog.dataset.item_code
    assert past.liked == [code("sku-a")] and past.seen == {code("sku-a"), code("sku-b")}
    assert store_catalog.past("nobody") is None


def test_feedback_is_logged_and_changes_the_users_past_at_once(
    store_catalog: Catalog, tmp_path: Path
) -> None:
    log = FeedbackLog(tmp_path / "log", "router-1")
    answer = record_feedback(
        feedback(
            {"user_id": "u1", "item_id": "sku-c", "event": "click", "ts": 10},
            {"user_id": "u1", "item_id": "sku-d", "event": "view"},
            {"user_id": "new", "item_id": "sku-d", "event": "rating", "value": 4},
        ),
        store_catalog,
        log,
        PSEUDONYMS,
    )
    assert answer.accepted == 3 and answer.history_updated
    code = store_catalog.dataset.item_code
    past = store_catalog.past("u1")
    assert past is not None and past.liked[-1] == code("sku-c") and code("sku-d") in past.seen
    assert code("sku-d") not in past.liked, "a view is seen, not liked"
    newcomer = store_catalog.past("new")
    assert newcomer is not None and newcomer.liked == [code("sku-d")], "a rating at the threshold is a like"
    logged = list(FeedbackLog(tmp_path / "log", "reader").read())
    u1, new = PSEUDONYMS.user("u1"), PSEUDONYMS.user("new")
    assert [(e["userId"], e["itemId"], e["event"]) for e in logged] == [
        (u1, "sku-c", "click"),
        (u1, "sku-d", "view"),
        (new, "sku-d", "rating"),
    ]
    raw = b"".join(path.read_bytes() for path in (tmp_path / "log").glob("*.jsonl"))
    assert b'"u1"' not in raw and b'"new"' not in raw, "the log holds pseudonyms, never raw user ids"


def test_one_unknown_item_refuses_the_request_and_writes_nothing(
    store_catalog: Catalog, tmp_path: Path
) -> None:
    log = FeedbackLog(tmp_path / "log", "router-1")
    request = feedback(
        {"user_id": "u1", "item_id": "sku-a", "event": "click"},
        {"user_id": "u1", "item_id": "sku-zz", "event": "click"},
    )
    with pytest.raises(InvalidRequest, match=r"events\[1\]\.item_id: item 'sku-zz' is not in the catalog"):
        record_feedback(request, store_catalog, log, PSEUDONYMS)
    assert list(FeedbackLog(tmp_path / "log", "reader").read()) == []
    assert store_catalog.past("u1").liked == [store_catalog.dataset.item_code("sku-a")]  # type: ignore[union-attr]


def test_with_histories_from_requests_feedback_is_logged_only(tmp_path: Path) -> None:
    dataset = tiny()
    catalog = Catalog(dataset, retriever=None, histories=DatasetHistories(dataset))  # type: ignore[arg-type]
    answer = record_feedback(
        feedback({"user_id": "u1", "item_id": "sku-c", "event": "click"}),
        catalog,
        FeedbackLog(tmp_path / "log", "router-1"),
        PSEUDONYMS,
    )
    assert answer.accepted == 1 and not answer.history_updated


def test_a_router_without_an_online_folder_answers_503() -> None:
    dataset = tiny()
    catalog = Catalog(dataset, retriever=None, histories=DatasetHistories(dataset))  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="no onlineDir"):
        record_feedback(
            feedback({"user_id": "u1", "item_id": "sku-c", "event": "click"}), catalog, None, None
        )


def test_an_unknown_event_kind_is_refused_naming_the_kinds() -> None:
    assert feedback({"user_id": 7, "item_id": "sku-b", "event": "skip"}).events[0].user_id == 7
    with pytest.raises(ValueError, match="'view', 'click', 'rating' or 'skip'"):
        feedback({"user_id": 7, "item_id": "sku-b", "event": "purchase"})
