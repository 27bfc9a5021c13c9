"""The online history store on Feast's SQLite online store (a file in tmp_path), and its config."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from history_cases import CASES
from pydantic import ValidationError

from recserve_serving.online.history import HistoryStore, HistoryStoreConfig, UserHistory

pytestmark = pytest.mark.unit


@pytest.fixture
def open_sqlite(tmp_path: Path) -> Iterator[Callable[[], HistoryStore]]:
    opened: list[HistoryStore] = []

    def open_store() -> HistoryStore:
        opened.append(HistoryStore(HistoryStoreConfig(), tmp_path / "repo"))
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_history_on_sqlite(case, open_sqlite, monkeypatch) -> None:
    case(open_sqlite, monkeypatch)


def test_sqlite_files_live_where_configured(tmp_path: Path) -> None:
    default = HistoryStore(HistoryStoreConfig(), tmp_path / "a")
    default.record("u", [("i", True)])
    default.close()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["online.db", "registry.db"]
    relative = HistoryStore(HistoryStoreConfig(path="data/history.db"), tmp_path / "b")
    relative.record("u", [("i", True)])
    relative.close()
    assert (tmp_path / "b/data/history.db").is_file()
    absolute = HistoryStore(
        HistoryStoreConfig.model_validate({"path": str(tmp_path / "abs.db")}), tmp_path / "c"
    )
    absolute.record("u", [("i", False)])
    assert absolute.get("u") == UserHistory(liked=[], seen=["i"])
    absolute.close()
    assert (tmp_path / "abs.db").is_file()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"kind": "redis"},
            "kind redis needs connectionString, the Redis server as Feast takes it: 'host:port'",
        ),
        (
            {"kind": "redis", "connectionString": "h:1", "path": "x.db"},
            "path is the SQLite file, not used with kind redis",
        ),
        ({"connectionString": "h:1"}, "connectionString is for kind redis .* set kind: redis"),
        ({"kind": "memcached"}, "Input should be 'sqlite' or 'redis'"),
        ({"kind": "sqlite", "host": "x"}, "host\n  Extra inputs are not permitted"),
    ],
)
def test_config_errors_say_what_to_fix(body, message) -> None:
    with pytest.raises(ValidationError, match=message):
        HistoryStoreConfig.model_validate(body)


def test_config_reads_camel_case() -> None:
    config = HistoryStoreConfig.model_validate({"kind": "redis", "connectionString": "redis:6379,db=0"})
    assert (config.kind, config.connection_string, config.path) == ("redis", "redis:6379,db=0", None)


def test_reopening_leaves_the_registry_alone(tmp_path: Path) -> None:
    """The repository is applied on the first open only: a reopen writes no registry."""
    HistoryStore(HistoryStoreConfig(), tmp_path).close()
    registry = (tmp_path / "registry.db").read_bytes()
    again = HistoryStore(HistoryStoreConfig(), tmp_path)
    again.record("u", [("i", True)])
    again.close()
    assert (tmp_path / "registry.db").read_bytes() == registry
