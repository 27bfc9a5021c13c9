"""The Feast feature repository of the history store, defined in code.

There is no ``feature_store.yaml`` and no ``feast apply`` step: the store builds its
``RepoConfig`` from the spec's ``HistoryStoreSpec`` and applies these objects itself, so a replica needs
nothing on disk but a directory for the file registry (and, for SQLite, the online database).

Two feature views:

* ``user_history`` (entity ``user``, STRING ``user_id``): ``liked`` and ``seen``, both
  ``Array(String)``; the history itself.
* ``history_fill`` (entity ``history_fill``, STRING ``fill_id``): one row, ``digest``, the digest
  of the last bulk fill that completed. It lives in the online store rather than in a file beside
  it so that SQLite and Redis keep it the same way, and so that every replica sharing a Redis
  sees it.

Neither view is ever read offline; Feast requires a batch source all the same, so each names a
relative Parquet path that is never opened (relative, so the applied objects are identical
whatever the repository directory, and a second ``apply`` changes nothing).
"""

from __future__ import annotations

import importlib
import sys
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.feast_object import FeastObject
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.repo_config import RegistryConfig
from feast.types import Array, String

PROJECT = "recserve"
HISTORY_VIEW = "user_history"
FILL_VIEW = "history_fill"
USER_KEY = "user_id"
FILL_KEY = "fill_id"
TIMESTAMP = "event_timestamp"
OnlineStoreConfig = SqliteOnlineStoreConfig | RedisOnlineStoreConfig

# Feast's online read checks, on every call, whether the store supports versioned reads by
# importing the optional stores it knows (MySQL, PostgreSQL, DynamoDB, Milvus). Their client
# libraries are not installed here, and a failed import is retried, source lookup and all, on each
# call: it was 75% of a get() with bytecode cached (and 10x the read without). Marking the
# modules that cannot be imported as absent makes those imports fail at once.
_OPTIONAL_STORES = (
    "feast.infra.online_stores.mysql_online_store.mysql",
    "feast.infra.online_stores.postgres_online_store.postgres",
    "feast.infra.online_stores.faiss_online_store",
    "feast.infra.online_stores.dynamodb",
    "feast.infra.online_stores.milvus_online_store.milvus",
)


def skip_unimportable_stores() -> None:
    """Record each optional online store that cannot be imported as absent in ``sys.modules``."""
    for name in _OPTIONAL_STORES:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = None  # type: ignore[assignment]


def repo_config(repo_dir: Path, online_store: OnlineStoreConfig) -> RepoConfig:
    """The configuration ``feature_store.yaml`` would hold: local provider, a file registry.

    The registry is cached forever (TTL 0): its objects are fixed in this module, so re-reading
    the file per request would only add latency.
    """
    return RepoConfig(
        project=PROJECT,
        provider="local",
        registry=RegistryConfig(path=str(repo_dir / "registry.db"), cache_ttl_seconds=0),
        online_store=online_store,
        entity_key_serialization_version=3,
    )


def sqlite_store(path: Path) -> SqliteOnlineStoreConfig:
    return SqliteOnlineStoreConfig(path=str(path))


def redis_store(connection_string: str) -> RedisOnlineStoreConfig:
    """Redis, with Feast's write-time timestamp check off.

    That check reads each key's stored timestamp and drops a write that is not newer. The store
    already reads before it writes (record() is read-modify-write), so the check would cost a
    round trip and silently drop a record() from a replica whose clock runs behind another's.
    """
    return RedisOnlineStoreConfig(connection_string=connection_string, skip_dedup=True)


def _source(name: str) -> FileSource:
    return FileSource(name=f"{name}_source", path=f"{name}.parquet", timestamp_field=TIMESTAMP)


def feature_objects() -> list[Entity | FeatureView]:
    """The entities and feature views of the repository, in apply order."""
    user = Entity(name="user", join_keys=[USER_KEY], value_type=ValueType.STRING)
    fill = Entity(name=FILL_VIEW, join_keys=[FILL_KEY], value_type=ValueType.STRING)
    history = FeatureView(
        name=HISTORY_VIEW,
        entities=[user],
        ttl=timedelta(0),
        schema=[
            Field(name=USER_KEY, dtype=String),
            Field(name="liked", dtype=Array(String)),
            Field(name="seen", dtype=Array(String)),
        ],
        source=_source(HISTORY_VIEW),
        online=True,
    )
    marker = FeatureView(
        name=FILL_VIEW,
        entities=[fill],
        ttl=timedelta(0),
        schema=[Field(name=FILL_KEY, dtype=String), Field(name="digest", dtype=String)],
        source=_source(FILL_VIEW),
        online=True,
    )
    return [user, fill, history, marker]


def open_store(config: RepoConfig) -> FeatureStore:
    """A FeatureStore on ``config`` with the repository applied.

    ``apply`` is idempotent but rewrites the registry file each time (its timestamps change), so
    it runs only when the registry lacks an object or holds a different one: reopening a store
    writes nothing.
    """
    skip_unimportable_stores()
    store = FeatureStore(config=config)
    wanted = feature_objects()
    if not all(_applied(store, item) for item in wanted):
        objects: list[FeastObject] = [*wanted]
        store.apply(objects)
    return store


def _applied(store: FeatureStore, item: Entity | FeatureView) -> bool:
    found: Entity | FeatureView | None
    if isinstance(item, Entity):
        found = next((entity for entity in store.list_entities() if entity.name == item.name), None)
    else:
        found = next((view for view in store.list_feature_views() if view.name == item.name), None)
    return found is not None and type(found) is type(item) and found == item
