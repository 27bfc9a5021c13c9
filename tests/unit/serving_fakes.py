"""In-process stand-ins for the router's tests: a catalog small enough to reason about."""

from __future__ import annotations

from recserve_serving.errors import InvalidRequest, NotFound


class FakeCatalog:
    """Users 1..9 and movies 1..99, each with a fixed text."""

    def check_items(self, movie_ids: list[int], field: str) -> None:
        unknown = [m for m in movie_ids if not 1 <= m <= 99]
        if unknown:
            raise InvalidRequest(f"{field}: unknown movie ids {unknown}")

    def user_text(self, user_id: int, history: list[int] | None) -> str:
        if not 1 <= user_id <= 9:
            raise NotFound(f"unknown user {user_id}")
        return f"user {user_id}"

    def item_text(self, movie_id: int) -> str:
        return f"movie {movie_id}"

    def knows_user(self, user_id: int) -> bool:
        return False

    def title(self, movie_id: int) -> str:
        return f"Movie {movie_id}"
