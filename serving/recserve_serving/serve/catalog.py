"""What the router knows about users and items at serving time.

Training texts come from the time split (so evaluation never sees the future); serving
texts use everything a user has interacted with, because in production the whole past is
known. Where that past comes from is a ``Histories``: the data set itself (``history.source:
request``, histories fixed at start-up), or the online store that ``/v1/feedback`` updates.

Requests and responses speak the platform's ids; everything here below the edge works on the
data set's item codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from recserve_serving.data import Dataset, ExternalId
from recserve_serving.errors import InvalidRequest, NotFound, Unavailable
from recserve_serving.hybrid import (
    HybridRetriever,
    collaborative_path,
    load_or_build_collaborative,
)
from recserve_serving.privacy import Pseudonymizer
from recserve_serving.quality.split import protocol_split
from recserve_serving.retrieval import ItemIndex, index_path, load_or_build_index


@dataclass(frozen=True)
class Past:
    """A user's past as item codes: ``liked`` (oldest first) builds their text, ``seen`` is never
    recommended back."""

    liked: list[int]
    seen: set[int]


class Histories(Protocol):
    """Where users' pasts come from at serving time."""

    def past(self, user_id: ExternalId) -> Past | None:
        """None for a user this source does not know."""

    def record(self, user_id: ExternalId, items: Sequence[tuple[int, bool]]) -> bool:
        """Add ``(item code, liked)`` interactions in order; False when this source is fixed."""

    def erase(self, user_id: ExternalId) -> bool:
        """Forget the user's past (``DELETE /v1/users/{id}``); True when there was one."""


class DatasetHistories:
    """Pasts from the interaction table, fixed when the router starts (``history.source:
    request``: requests bring any history newer than the data).

    The table is the platform's own and is not rewritten here: a user erased (``erased``, the
    log's tombstones when the router started, and each erasure this replica takes since) reads as
    unknown, and the retrain leaves their rows out."""

    def __init__(
        self, dataset: Dataset, pseudonyms: Pseudonymizer | None = None, erased: frozenset[str] = frozenset()
    ) -> None:
        self.dataset = dataset
        self.pseudonyms = pseudonyms
        self._erased = set(erased)
        ordered = dataset.interactions.sort_values("timestamp", kind="stable")
        positives = ordered[ordered.liked]
        self._liked = {int(u): [int(m) for m in frame.item] for u, frame in positives.groupby("user")}

    def past(self, user_id: ExternalId) -> Past | None:
        if self._erased and self.pseudonyms is not None and self.pseudonyms.user(user_id) in self._erased:
            return None
        try:
            code = self.dataset.user_code(user_id)
        except NotFound:
            return None
        return Past(self._liked.get(code, []), self.dataset.interacted_items(code))

    def record(self, user_id: ExternalId, items: Sequence[tuple[int, bool]]) -> bool:
        return False

    def erase(self, user_id: ExternalId) -> bool:
        if self.pseudonyms is None:
            raise Unavailable(
                "this router cannot erase users: its config names no pseudonymKeyFile, so it cannot "
                "tell which logged user the id is"
            )
        known = self.past(user_id) is not None
        self._erased.add(self.pseudonyms.user(user_id))
        return known


def item_texts(dataset: Dataset) -> dict[int, str]:
    return {int(m): dataset.item_text(int(m)) for m in dataset.item_ids}


def interaction_snapshot(dataset: Dataset) -> pd.DataFrame:
    """The interactions the collaborative stages learn from: the evaluation protocol's snapshot.

    Serving the model fitted on the protocol's training side is what lets ``recserve eval
    --endpoint`` measure the running server without it having seen the held-out answers.
    """
    return protocol_split(dataset.interactions).snapshot


def build_retriever(dataset: Dataset, index_dir: Path) -> HybridRetriever:
    """The content and collaborative indexes of this data, built into ``index_dir`` unless there."""
    content = load_or_build_index(index_dir, item_texts(dataset))
    collaborative = load_or_build_collaborative(index_dir, dataset.item_ids, interaction_snapshot(dataset))
    return HybridRetriever(content, collaborative)


def index_paths(dataset: Dataset, index_dir: Path) -> list[Path]:
    """Where this data's retrieval indexes (content, collaborative) are, built or not."""
    return [
        index_path(index_dir, item_texts(dataset)),
        collaborative_path(index_dir, dataset.item_ids, interaction_snapshot(dataset)),
    ]


def ensure_index(dataset: Dataset, index_dir: Path) -> list[Path]:
    """Build this data's retrieval indexes into ``index_dir`` unless they are there, and return
    their paths: build steps do it, so that routers (no torch, no implicit) only read them."""
    build_retriever(dataset, Path(index_dir))
    return index_paths(dataset, Path(index_dir))


@dataclass
class Catalog:
    dataset: Dataset
    retriever: HybridRetriever
    histories: Histories

    @classmethod
    def open(cls, dataset: Dataset, index_dir: str | Path, histories: Histories | None = None) -> Catalog:
        return cls(dataset, build_retriever(dataset, Path(index_dir)), histories or DatasetHistories(dataset))

    @property
    def index(self) -> ItemIndex:
        """The content stage's item embeddings (explanations and diversity read them)."""
        return self.retriever.content

    def codes(self, item_ids: Sequence[object], field: str) -> list[int]:
        """The codes of a request's item ids; an unknown id is the client's error, named."""
        found, unknown = [], []
        for item_id in item_ids:
            try:
                found.append(self.dataset.item_code(item_id))
            except NotFound:
                unknown.append(item_id)
        if unknown:
            shown = ", ".join(map(repr, unknown[:5]))
            raise InvalidRequest(
                f"{field}: unknown item ids {shown}"
                + (" …" if len(unknown) > 5 else "")
                + f" (the catalog has {len(self.dataset.item_ids)} items)"
            )
        return found

    def item_id(self, item: int) -> ExternalId:
        return self.dataset.item_id(item)

    def past(self, user_id: ExternalId | None) -> Past | None:
        """The user's past (one read of the history source), None for no or an unknown user."""
        return None if user_id is None else self.histories.past(user_id)

    def knows_user(self, user_id: ExternalId) -> bool:
        return self.past(user_id) is not None

    def seen(self, user_id: ExternalId) -> set[int]:
        past = self.past(user_id)
        return set() if past is None else past.seen

    def user_text(
        self, user_id: ExternalId | None, history: list[int] | None, past: Past | None = None
    ) -> str:
        """The user's text from an explicit history (codes), else from everything they liked
        (``past``, when the caller has read it already)."""
        if history is not None:
            return self.dataset.user_text(None, history=history)
        if user_id is None:
            raise InvalidRequest("give a user_id or a history")
        past = past or self.past(user_id)
        if past is None:
            raise NotFound(
                f"unknown user {user_id!r}: no interactions and no history given; "
                "send a 'history' of liked item ids for a new user"
            )
        return self.dataset.user_text(None, history=past.liked)

    def item_text(self, item: int) -> str:
        return self.dataset.item_text(item)

    def title(self, item: int) -> str:
        return self.dataset.title(item)

    def item_vectors(self, items: list[int]) -> np.ndarray:
        """The retrieval index's L2-normalised embeddings of ``items``, row for row: what
        diversity re-ranking measures similarity with. Every catalog item is in the index,
        which is built from the same catalog."""
        return self.index.vectors[[self.index.row[m] for m in items]]

    def history(
        self, user_id: ExternalId | None, history: list[int] | None, past: Past | None = None
    ) -> list[int]:
        """Liked item codes, oldest first: the request's own, else the stored ones."""
        if history is not None:
            return history
        past = past or self.past(user_id)
        return [] if past is None else past.liked

    def retrieve(
        self, history: list[int], seen: set[int], n: int, candidates: list[int] | None = None
    ) -> tuple[list[int], np.ndarray]:
        """Candidates (the retriever's, or the given ones) and their retrieval features, which the
        ranker's fusion head reads."""
        user = self.retriever.user(history)
        picked = (
            self._topped_up(self.retriever.top(user, seen, n), seen, n) if candidates is None else candidates
        )
        return picked, self.retriever.features(user, picked)

    def candidates(self, history: list[int], seen: set[int], n: int) -> list[int]:
        """The hybrid retriever's best items, topped up with popular ones if it has too few."""
        return self._topped_up(self.retriever.search(history, seen, n), seen, n)

    def _topped_up(self, picked: list[int], seen: set[int], n: int) -> list[int]:
        if len(picked) < n:
            taken = seen | set(picked)
            for item in self.dataset.popular_items():
                if item not in taken:
                    picked.append(item)
                    if len(picked) == n:
                        break
        return picked
