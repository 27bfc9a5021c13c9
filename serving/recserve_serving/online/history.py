"""Per-user interaction history in Feast's online store: what the router reads per request.

Each user has two lists of item ids, oldest first:

* ``seen``: every item the user was shown or acted on, de-duplicated (an item seen again moves to
  the end), capped at ``SEEN_CAP`` most recent. The router excludes these from the candidates, so
  a user is not recommended what they already had.
* ``liked``: the items the user engaged with positively, de-duplicated the same way, capped at
  ``LIKED_CAP`` most recent. The router builds the user's text from these, so the ranker sees the
  user's taste and not everything that merely crossed their screen.

Every recorded item is seen; only the liked ones also go into ``liked``.

The store is Feast's real online store API (``write_to_online_store``, ``get_online_features``)
on SQLite (one process, the embedded default) or Redis (clusters: every replica reads and writes
the same history). The repository is defined in code (``feast_repo``) and applied on open.

Limits, honestly:

* ``record`` is read-modify-write. Within one ``HistoryStore`` a lock serializes it, but two
  processes (replicas) recording for the same user at once can both read the old lists and the
  second write then drops the first one's items. Redis could make it atomic later with an
  optimistic transaction: ``WATCH`` the user's hash, read it, compute the lists, write them in
  ``MULTI``/``EXEC`` and retry when another writer got in first. That means reading and writing
  Feast's Redis layout (serialized entity key, hashed field names, protobuf values) beside its
  API; a server-side Lua script would have to decode the protobuf lists, so it is the harder way.
* Feast has no per-entity delete, so ``erase`` overwrites both lists with empty ones: the items
  are gone, the user's key remains with empty lists, and a user with no items reads as absent.
* ``fill`` overwrites the users it is given and leaves the others as they are. Its marker (the
  digest of the last completed fill) is a row of its own feature view in the same online store,
  so SQLite and Redis keep it alike and every replica on one Redis sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recserve_serving.dataspec import HistoryStoreSpec
from recserve_serving.online import feast_repo

LIKED_CAP = 200
SEEN_CAP = 5000
FILL_BATCH = 1000
_FILL_ROW = "user_history"
_FEATURES = [f"{feast_repo.HISTORY_VIEW}:liked", f"{feast_repo.HISTORY_VIEW}:seen"]


@dataclass(frozen=True)
class UserHistory:
    """One user's lists, oldest first (see the module docstring for what each is for)."""

    liked: list[str]
    seen: list[str]


def _push(items: Iterable[str], new: Iterable[str], cap: int) -> list[str]:
    """``items`` with each of ``new`` moved or appended to the end, the ``cap`` most recent kept."""
    order = dict.fromkeys(items)
    for item in new:
        order.pop(item, None)
        order[item] = None
    kept = list(order)
    return kept[-cap:] if len(kept) > cap else kept


def _normalized(history: UserHistory) -> UserHistory:
    return UserHistory(liked=_push((), history.liked, LIKED_CAP), seen=_push((), history.seen, SEEN_CAP))


def _online_store(spec: HistoryStoreSpec, repo_dir: Path) -> feast_repo.OnlineStoreConfig:
    """Feast's online store settings: Redis where the spec says, else ``<repo_dir>/online.db``.

    On the request path a Redis ``connectionString`` wants ``retry=null`` and a short
    ``socket_timeout``: redis-py's default retries make every read against a Redis that is down
    take about 5 s before it fails, against milliseconds without them.
    """
    if spec.kind == "redis":
        assert spec.connection_string is not None  # the spec's validator requires it
        return feast_repo.redis_store(spec.connection_string)
    return feast_repo.sqlite_store(repo_dir / "online.db")


def _now() -> datetime:
    return datetime.now(UTC)


class HistoryStore:
    """Read and update user histories; one instance per process.

    ``record`` and ``erase`` hold a lock, so threads of one process never lose each other's items.
    """

    def __init__(self, spec: HistoryStoreSpec, repo_dir: Path) -> None:
        repo_dir.mkdir(parents=True, exist_ok=True)
        online = _online_store(spec, repo_dir)
        self._store = feast_repo.open_store(feast_repo.repo_config(repo_dir, online))
        self._record_lock = threading.Lock()

    def get(self, user_id: str) -> UserHistory | None:
        """The user's history, or None when the store has none for them."""
        return self.get_many([user_id]).get(user_id)

    def get_many(self, user_ids: Sequence[str]) -> dict[str, UserHistory]:
        """The histories of ``user_ids`` that exist, in one online read."""
        unique = list(dict.fromkeys(user_ids))
        if not unique:
            return {}
        rows = self._store.get_online_features(
            features=_FEATURES, entity_rows={feast_repo.USER_KEY: unique}
        ).to_dict()
        found: dict[str, UserHistory] = {}
        for user_id, liked, seen in zip(rows[feast_repo.USER_KEY], rows["liked"], rows["seen"], strict=True):
            if liked or seen:
                found[user_id] = UserHistory(liked=list(liked or []), seen=list(seen or []))
        return found

    def record(self, user_id: str, items: Sequence[tuple[str, bool]]) -> UserHistory:
        """Add ``(item_id, liked)`` interactions in order and return the user's new history.

        Read-modify-write: atomic within this store (a lock), not across processes (see the
        module docstring).
        """
        with self._record_lock:
            old = self.get(user_id) or UserHistory(liked=[], seen=[])
            if not items:
                return old
            new = UserHistory(
                liked=_push(old.liked, (item for item, liked in items if liked), LIKED_CAP),
                seen=_push(old.seen, (item for item, _ in items), SEEN_CAP),
            )
            self._write({user_id: new})
            return new

    def fill(self, histories: Mapping[str, UserHistory], digest: str) -> bool:
        """Bulk-load ``histories`` in batches, once per ``digest``; False when already done.

        The marker (the digest of the last completed fill) is cleared before the first batch and
        written after the last, so a fill that crashed part-way is redone on the next call, and a
        fill of other data in between is never mistaken for this one.
        """
        if self._fill_digest() == digest:
            return False
        self._write_fill_digest("")
        users = list(histories)
        for start in range(0, len(users), FILL_BATCH):
            batch = users[start : start + FILL_BATCH]
            self._write({user_id: _normalized(histories[user_id]) for user_id in batch})
        self._write_fill_digest(digest)
        return True

    def erase(self, user_id: str) -> bool:
        """Remove the user's history (both lists emptied); True when there was one."""
        with self._record_lock:
            if self.get(user_id) is None:
                return False
            self._write({user_id: UserHistory(liked=[], seen=[])})
            return True

    def close(self) -> None:
        """Close the online store's connection.

        Feast's ``FeatureStore.close`` is async and leaves the synchronous SQLite connection and
        Redis client open, so this closes the one the store's online store holds.
        """
        online = self._store._get_provider().online_store
        for attribute in ("_conn", "_client"):
            connection = getattr(online, attribute, None)
            if connection is not None:
                connection.close()
                setattr(online, attribute, None)

    def _write(self, histories: Mapping[str, UserHistory]) -> None:
        now = _now()
        self._store.write_to_online_store(
            feast_repo.HISTORY_VIEW,
            inputs={
                feast_repo.USER_KEY: list(histories),
                "liked": [history.liked for history in histories.values()],
                "seen": [history.seen for history in histories.values()],
                feast_repo.TIMESTAMP: [now] * len(histories),
            },
        )

    def _fill_digest(self) -> str | None:
        rows = self._store.get_online_features(
            features=[f"{feast_repo.FILL_VIEW}:digest"], entity_rows={feast_repo.FILL_KEY: [_FILL_ROW]}
        ).to_dict()
        digest: str | None = rows["digest"][0]
        return digest

    def _write_fill_digest(self, digest: str) -> None:
        self._store.write_to_online_store(
            feast_repo.FILL_VIEW,
            inputs={feast_repo.FILL_KEY: [_FILL_ROW], "digest": [digest], feast_repo.TIMESTAMP: [_now()]},
        )
