"""In-process stand-ins for the router's tests: a catalog small enough to reason about."""

from __future__ import annotations

import numpy as np

from recserve_serving.errors import InvalidRequest, NotFound

LIKED = {8: [7, 5, 12]}
"""Stored likes, oldest first: user 8 has a history (what explanations read), the others none."""


class FakeCatalog:
    """Users 1..9 and movies 1..99, each with a fixed text; a user's text lists their likes."""

    def codes(self, item_ids: list[object], field: str) -> list[int]:
        """Item ids are their own codes here."""
        unknown = [m for m in item_ids if not (isinstance(m, int) and 1 <= m <= 99)]
        if unknown:
            raise InvalidRequest(f"{field}: unknown item ids {unknown}")
        return [int(m) for m in item_ids]  # type: ignore[call-overload]

    def item_id(self, item: int) -> int:
        return item

    def past(self, user_id: object) -> None:
        """Stored pasts are read through user_text and history here."""
        return None

    def user_text(self, user_id: int | None, history: list[int] | None, past: object = None) -> str:
        if history is None:
            if user_id is None or not 1 <= user_id <= 9:
                raise NotFound(f"unknown user {user_id}")
            history = LIKED.get(user_id, [])
        return f"user {user_id}" + (f" likes {' '.join(map(str, history))}" if history else "")

    def history(self, user_id: int | None, history: list[int] | None, past: object = None) -> list[int]:
        if history is not None:
            return history
        return LIKED.get(user_id, []) if user_id is not None else []

    def item_text(self, item_id: int) -> str:
        return f"movie {item_id}"

    def seen(self, user_id: int) -> set[int]:
        return set()

    def title(self, item_id: int) -> str:
        return f"Movie {item_id}"

    def retrieve(
        self, history: list[int], seen: set[int], n: int, candidates: list[int] | None = None
    ) -> tuple[list[int], np.ndarray]:
        picked = list(candidates or [])
        return picked, np.zeros((len(picked), 9))

    def item_vectors(self, item_ids: list[int]) -> np.ndarray:
        """Movies of one decade (11..19, 21..29, ...) point the same way, other decades are
        orthogonal: similarity is 1 or 0, so a re-ranking can be worked out by hand."""
        vectors = np.zeros((len(item_ids), 10))
        vectors[np.arange(len(item_ids)), [m // 10 for m in item_ids]] = 1.0
        return vectors
