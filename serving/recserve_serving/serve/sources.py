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
from recserve_serving.online.feedback_log import erased_users
from recserve_serving.privacy import PrivacyKeyError, Pseudonymizer, pseudonymizer_from
from recserve_serving.serve.catalog import Catalog, DatasetHistories, Past
from recserve_serving.serve.config import RouterConfig

if TYPE_CHECKING:
    # Feast takes seconds of CPU to import: only routers whose data reads a store load it, never
    # rankers (which import this app module too) or request-history routers.
    from recserve_serving.online.history import HistoryStore, UserHistory

log = logging.getLogger(__name__)


class StoreHistories:
    """Pasts from the online store, read per request: feedback recorded by any replica shows in
    the next recommendation. Store entries are keyed by the user's pseudonym, never the raw id,
    and name items by the platform's ids, as strings."""

    def __init__(self, store: HistoryStore, dataset: Dataset, pseudonyms: Pseudonymizer) -> None:
        self.store = store
        self.dataset = dataset
        self.pseudonyms = pseudonyms

    def _codes(self, item_ids: Sequence[str]) -> list[int]:
        codes = []
        for item_id in item_ids:
            try:
                codes.append(self.dataset.item_code(item_id))
            except NotFound:  # an item dropped from the catalog since it was recorded
                continue
        return codes

    def past(self, user_id: ExternalId) -> Past | None:
        found = self.store.get(self.pseudonyms.user(user_id))
        if found is None:
            return None
        return Past(self._codes(found.liked), set(self._codes(found.seen)))

    def record(self, user_id: ExternalId, items: Sequence[tuple[int, bool]]) -> bool:
        pseudonym = self.pseudonyms.user(user_id)
        self.store.record(pseudonym, [(str(self.dataset.item_id(code)), liked) for code, liked in items])
        return True

    def erase(self, user_id: ExternalId) -> bool:
        return self.store.erase(self.pseudonyms.user(user_id))


def dataset_histories(
    dataset: Dataset, pseudonyms: Pseudonymizer, erased: frozenset[str] = frozenset()
) -> dict[str, UserHistory]:
    """Every user's history from the interaction table, in the store's form: keyed by pseudonym,
    and without the users the log's tombstones erased (a refill must not bring them back)."""
    from recserve_serving.online.history import UserHistory

    ordered = dataset.interactions.sort_values("timestamp", kind="stable")
    histories = {}
    for user, frame in ordered.groupby("user"):
        pseudonym = pseudonyms.user(dataset.user_id(int(user)))
        if pseudonym in erased:
            continue
        items = [str(dataset.item_id(code)) for code in frame.item]
        liked = [item for item, like in zip(items, frame.liked, strict=True) if like]
        histories[pseudonym] = UserHistory(liked=liked, seen=items)
    return histories


def fill_marker(dataset: Dataset, pseudonyms: Pseudonymizer) -> str:
    """What a completed fill records: the data and the key, so that a new key refills the store
    under the new pseudonyms (the old ones no longer name anybody)."""
    return f"{dataset.digest}:{pseudonyms.key_id}"


def open_history_store(
    config: RouterConfig, dataset: Dataset, pseudonyms: Pseudonymizer, erased: frozenset[str]
) -> HistoryStore:
    """The model's online store, filled from its interactions once per data digest and key."""
    from recserve_serving.online.history import HistoryStore

    assert config.data is not None and config.data.history.store is not None
    if config.online_dir is None:
        raise RecserveError(
            f"router {config.model_name}: history.source store needs an online folder (onlineDir) "
            "for the store's Feast repository"
        )
    store = HistoryStore(config.data.history.store, Path(config.online_dir) / "feast")
    if store.fill(dataset_histories(dataset, pseudonyms, erased), fill_marker(dataset, pseudonyms)):
        log.info("filled the online history store from %d interactions", len(dataset.interactions))
    return store


def router_pseudonyms(config: RouterConfig) -> Pseudonymizer | None:
    """The config's key, read now: a router whose key file is missing or unreadable fails at
    start with the path and the fix, never later on a request that would log a raw id."""
    if config.pseudonym_key_file is None:
        return None
    try:
        return pseudonymizer_from(Path(config.pseudonym_key_file))
    except PrivacyKeyError as error:
        raise PrivacyKeyError(f"router {config.model_name}: {error}") from None


def open_catalog(config: RouterConfig, pseudonyms: Pseudonymizer | None) -> Catalog:
    if config.data is None:
        raise RecserveError(f"router {config.model_name}: its config names no data (spec.data) to serve")
    dataset = load_dataset(config.data)
    feedback = config.feedback_dir()
    erased = frozenset() if feedback is None else erased_users(feedback)
    if config.data.history.source == "store":
        if pseudonyms is None:  # RouterConfig requires a key with an onlineDir: neither is set
            raise RecserveError(
                f"router {config.model_name}: history.source store needs an online folder (onlineDir) "
                "for the store's Feast repository and a pseudonymKeyFile to key its users by"
            )
        histories = StoreHistories(
            open_history_store(config, dataset, pseudonyms, erased), dataset, pseudonyms
        )
        return Catalog.open(dataset, Path(config.index_dir), histories)
    return Catalog.open(dataset, Path(config.index_dir), DatasetHistories(dataset, pseudonyms, erased))
