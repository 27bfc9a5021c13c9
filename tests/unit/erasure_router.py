"""A router in process over the real tiny data set, the real SQLite Feast store and the real
interaction log, with the HTTP app served by a TestClient: what the erasure and log-upkeep tests
drive."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from ray import serve
from tiny_data import tiny

from recserve_serving.dataspec import HistoryStoreSpec
from recserve_serving.online.history import HistoryStore
from recserve_serving.privacy import ensure_key_file, pseudonymizer_from
from recserve_serving.serve import app as serve_app
from recserve_serving.serve.catalog import Catalog
from recserve_serving.serve.config import RouterConfig
from recserve_serving.serve.sources import StoreHistories, dataset_histories, fill_marker
from recserve_serving.serving_spec import FeedbackLogSpec


def serve_in_process(monkeypatch: pytest.MonkeyPatch, router: serve_app.Router) -> TestClient:
    context = SimpleNamespace(
        servable_object=router, _deployment_config=SimpleNamespace(max_ongoing_requests=8)
    )
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    return TestClient(serve_app.http_app, raise_server_exceptions=False)


def store_router(tmp_path: Path, feedback_log: FeedbackLogSpec | None = None) -> serve_app.Router:
    key_file = ensure_key_file(tmp_path / "secrets" / "pseudonym.key")
    pseudonyms = pseudonymizer_from(key_file)
    online = tmp_path / "online" / "m"
    dataset = tiny()
    store = HistoryStore(HistoryStoreSpec(kind="sqlite"), online / "feast")
    store.fill(dataset_histories(dataset, pseudonyms), fill_marker(dataset, pseudonyms))
    catalog = Catalog(dataset, retriever=None, histories=StoreHistories(store, dataset, pseudonyms))  # type: ignore[arg-type]
    config = RouterConfig(
        model_name="m",
        index_dir="unused",
        online_dir=str(online),
        pseudonym_key_file=str(key_file),
        feedback_log=feedback_log or FeedbackLogSpec(),
    )
    return serve_app.Router(config.to_dict(), catalog=catalog)
