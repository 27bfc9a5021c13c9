"""The online history store on Feast's SQLite online store (a file in tmp_path), and its config."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from history_cases import CASES

from recserve_serving.dataspec import HistoryStoreSpec
from recserve_serving.online.history import HistoryStore, UserHistory

pytestmark = pytest.mark.unit


@pytest.fixture
def open_sqlite(tmp_path: Path) -> Iterator[Callable[[], HistoryStore]]:
    opened: list[HistoryStore] = []

    def open_store() -> HistoryStore:
        opened.append(HistoryStore(HistoryStoreSpec(kind="sqlite"), tmp_path / "repo"))
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_history_on_sqlite(case, open_sqlite, monkeypatch) -> None:
    case(open_sqlite, monkeypatch)


def test_the_sqlite_store_lives_in_its_repository(tmp_path: Path) -> None:
    store = HistoryStore(HistoryStoreSpec(kind="sqlite"), tmp_path / "a")
    store.record("u", [("i", False)])
    assert store.get("u") == UserHistory(liked=[], seen=["i"])
    store.close()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["online.db", "registry.db"]


def test_reopening_leaves_the_registry_alone(tmp_path: Path) -> None:
    """The repository is applied on the first open only: a reopen writes no registry."""
    HistoryStore(HistoryStoreSpec(kind="sqlite"), tmp_path).close()
    registry = (tmp_path / "registry.db").read_bytes()
    again = HistoryStore(HistoryStoreSpec(kind="sqlite"), tmp_path)
    again.record("u", [("i", True)])
    again.close()
    assert (tmp_path / "registry.db").read_bytes() == registry
