"""The online history store's behaviour, one function per case, run against every backend.

tests/unit runs them on SQLite and tests/integration on a real redis-server; each case gets a
function that opens a store on the test's backend (a second call reopens the same data) and
pytest's monkeypatch. Both directories import this module: tests/ is on sys.path through its
conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from recserve_serving.online import history
from recserve_serving.online.history import LIKED_CAP, SEEN_CAP, HistoryStore, UserHistory

Open = Callable[[], HistoryStore]


def unknown_user_is_none(open_store: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    assert store.get("nobody") is None
    assert store.get_many(["nobody"]) == {}


def record_orders_and_dedups(open_store: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    first = store.record("u1", [("a", True), ("b", False), ("c", False)])
    assert first == UserHistory(liked=["a"], seen=["a", "b", "c"])
    # Seen again: moves to the end of seen; a non-liked event never removes a like.
    assert store.record("u1", [("a", False)]) == UserHistory(liked=["a"], seen=["b", "c", "a"])
    assert store.record("u1", [("b", True), ("a", True)]) == UserHistory(
        liked=["b", "a"], seen=["c", "b", "a"]
    )
    # One call with repeats: the last occurrence decides the position.
    assert store.record("u1", [("d", True), ("c", False), ("d", False)]) == UserHistory(
        liked=["b", "a", "d"], seen=["b", "a", "c", "d"]
    )
    assert store.get("u1") == UserHistory(liked=["b", "a", "d"], seen=["b", "a", "c", "d"])
    assert store.record("u1", []) == store.get("u1")
    assert store.record("new", []) == UserHistory(liked=[], seen=[])
    assert store.get("new") is None


def record_caps_keep_most_recent(open_store: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    store.record("u", [(f"i{n}", True) for n in range(SEEN_CAP - 10)])
    after = store.record("u", [(f"j{n}", n % 2 == 0) for n in range(30)])
    assert len(after.seen) == SEEN_CAP
    assert after.seen[-30:] == [f"j{n}" for n in range(30)]
    assert after.seen[0] == "i20"  # the 20 oldest fell off
    assert len(after.liked) == LIKED_CAP
    assert after.liked[-15:] == [f"j{n}" for n in range(0, 30, 2)]
    assert after.liked[0] == f"i{SEEN_CAP - 10 - (LIKED_CAP - 15)}"
    assert store.get("u") == after


def erase_removes_history(open_store: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    store.record("u1", [("a", True)])
    store.record("u2", [("b", False)])
    assert store.erase("u1") is True
    assert store.get("u1") is None
    assert store.erase("u1") is False
    assert store.erase("never") is False
    assert store.get("u2") == UserHistory(liked=[], seen=["b"])
    # An erased user starts over.
    assert store.record("u1", [("c", False)]) == UserHistory(liked=[], seen=["c"])


def get_many_omits_absent(open_store: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    store.record("u1", [("a", True)])
    store.record("u2", [("b", False), ("c", True)])
    assert store.get_many([]) == {}
    assert store.get_many(["u2", "ghost", "u1", "u2"]) == {
        "u1": UserHistory(liked=["a"], seen=["a"]),
        "u2": UserHistory(liked=["c"], seen=["b", "c"]),
    }


def _histories(count: int) -> dict[str, UserHistory]:
    return {f"user{n}": UserHistory(liked=[f"item{n}"], seen=[f"seen{n}", f"item{n}"]) for n in range(count)}


def fill_once_per_digest(open_store: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "FILL_BATCH", 3)
    store = open_store()
    store.record("online-only", [("x", True)])
    data = _histories(10)
    assert store.fill(data, "digest-a") is True
    assert store.get_many(list(data)) == data
    # A fill only overwrites its own users.
    assert store.get("online-only") == UserHistory(liked=["x"], seen=["x"])
    store.record("user0", [("later", True)])
    assert store.fill(data, "digest-a") is False  # skipped: the online update survives
    assert store.get("user0") == UserHistory(liked=["item0", "later"], seen=["seen0", "item0", "later"])
    assert open_store().fill(data, "digest-a") is False  # the marker is in the store, not the instance
    other = {"user0": UserHistory(liked=[], seen=["b"])}
    assert store.fill(other, "digest-b") is True
    assert store.get("user0") == UserHistory(liked=[], seen=["b"])
    assert store.fill(data, "digest-a") is True  # not the last completed fill any more
    assert store.get("user0") == data["user0"]


def fill_applies_caps(open_store: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    long = UserHistory(liked=[f"l{n}" for n in range(LIKED_CAP + 5)], seen=["a", "b", "a", "c"])
    assert store.fill({"u": long}, "caps") is True
    assert store.get("u") == UserHistory(liked=long.liked[5:], seen=["b", "a", "c"])


class _FailingAfter(Mapping[str, UserHistory]):
    """A source of histories whose reads fail after ``limit`` users: a fill dying part-way."""

    def __init__(self, data: dict[str, UserHistory], limit: int) -> None:
        self.data, self.limit, self.reads = data, limit, 0

    def __getitem__(self, key: str) -> UserHistory:
        self.reads += 1
        if self.reads > self.limit:
            raise OSError("source went away mid-fill")
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def fill_interrupted_refills(open_store: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "FILL_BATCH", 4)
    data = _histories(10)
    store = open_store()
    assert store.fill(data, "digest-a") is True
    changed = {user: UserHistory(liked=[], seen=[f"v2-{user}"]) for user in data}
    with pytest.raises(OSError, match="mid-fill"):
        store.fill(_FailingAfter(changed, limit=6), "digest-b")
    partial = store.get_many(list(data))
    assert [partial[f"user{n}"] == changed[f"user{n}"] for n in range(10)] == [True] * 4 + [False] * 6
    # The interrupted fill left no marker: neither its digest nor the previous one is taken as done.
    reopened = open_store()
    assert reopened.fill(data, "digest-a") is True
    assert reopened.fill(changed, "digest-b") is True
    assert reopened.get_many(list(data)) == changed
    assert reopened.fill(changed, "digest-b") is False


def reopen_keeps_data(open_store: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    store.record("u1", [("a", True)])
    store.close()
    again = open_store()  # applies the repository again: a no-op
    assert again.get("u1") == UserHistory(liked=["a"], seen=["a"])
    assert again.record("u1", [("b", False)]) == UserHistory(liked=["a"], seen=["a", "b"])


CASES = [
    unknown_user_is_none,
    record_orders_and_dedups,
    record_caps_keep_most_recent,
    erase_removes_history,
    get_many_omits_absent,
    fill_once_per_digest,
    fill_applies_caps,
    fill_interrupted_refills,
    reopen_keeps_data,
]
