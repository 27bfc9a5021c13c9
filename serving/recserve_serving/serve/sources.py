"""Where a router's catalog comes from: its model's data (``spec.data``) and its users'
histories, read from the data set itself (``history.source: request``) or from the online store
(``source: store``), which the build of the data fills and ``/v1/feedback`` updates."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from recserve_serving.data import Dataset, ExternalId, load_dataset
from recserve_serving.errors import NotFound, RecserveError
from recserve_serving.serve.catalog import Catalog, Past
from recserve_serving.serve.config import RouterConfig

if TYPE_CHECKING:
    # Feast takes seconds of CPU to import: only routers whose data reads a store load it, never
    # rankers (which import this app module too) or request-history routers.
    from recserve_serving.online.history import HistoryStore, UserHistory

log = logging.getLogger(__name__)


class StoreHistories:
    """Pasts from the online store, read per request: feedback recorded by any replica shows in
    the next recommendation. Store entries name items by the platform's ids, as strings."""

    def __init__(self, store: HistoryStore, dataset: Dataset) -> None:
        self.store = store
        self.dataset = dataset

    def _codes(self, item_ids: Sequence[str]) -> list[int]:
        codes = []
        for item_id in item_ids:
            try:
                codes.append(self.dataset.item_code(item_id))
            except NotFound:  # an item dropped from the catalog since it was recorded
                continue
        return codes

    def past(self, user_id: ExternalId) -> Past | None:
        found = self.store.get(str(user_id))
        if found is None:
            return None
        return Past(self._codes(found.liked), set(self._codes(found.seen)))

    def record(self, user_id: ExternalId, items: Sequence[tuple[int, bool]]) -> bool:
        self.store.record(str(user_id), [(str(self.dataset.item_id(code)), liked) for code, liked in items])
        return True


def dataset_histories(dataset: Dataset) -> dict[str, UserHistory]:
    """Every user's history from the interaction table, in the store's form."""
    from recserve_serving.online.history import UserHistory

    ordered = dataset.interactions.sort_values("timestamp", kind="stable")
    histories = {}
    for user, frame in ordered.groupby("user"):
        items = [str(dataset.item_id(code)) for code in frame.item]
        liked = [item for item, like in zip(items, frame.liked, strict=True) if like]
        histories[str(dataset.user_id(int(user)))] = UserHistory(liked=liked, seen=items)
    return histories


def open_history_store(config: RouterConfig, dataset: Dataset) -> HistoryStore:
    """The model's online store, filled from its interactions once per data digest."""
    from recserve_serving.online.history import HistoryStore

    assert config.data is not None and config.data.history.store is not None
    if config.online_dir is None:
        raise RecserveError(
            f"router {config.model_name}: history.source store needs an online folder (onlineDir) "
            "for the store's Feast repository"
        )
    store = HistoryStore(config.data.history.store, Path(config.online_dir) / "feast")
    if store.fill(dataset_histories(dataset), dataset.digest):
        log.info("filled the online history store from %d interactions", len(dataset.interactions))
    return store


def open_catalog(config: RouterConfig) -> Catalog:
    if config.data is None:
        raise RecserveError(f"router {config.model_name}: its config names no data (spec.data) to serve")
    dataset = load_dataset(config.data)
    if config.data.history.source == "store":
        histories = StoreHistories(open_history_store(config, dataset), dataset)
        return Catalog.open(dataset, Path(config.index_dir), histories)
    return Catalog.open(dataset, Path(config.index_dir))
