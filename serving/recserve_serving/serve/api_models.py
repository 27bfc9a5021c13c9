"""Request and response bodies of the HTTP API (the OIP ones come from kserve)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool

VERSION_HEADER = "X-Recserve-Version"
"""Every answer names the model version that served it, so clients and metrics can split by it."""
UNROUTED = "none"
"""The version of an answer no version served (a 404, a request refused before routing)."""


class RecommendRequest(BaseModel):
    """``POST /v1/recommend``: a known user, or an anonymous history, and how many items."""

    model_config = ConfigDict(extra="forbid")

    user_id: int | None = Field(None, ge=0)
    history: list[int] | None = Field(None, description="Movie ids the user liked, most recent last.")
    candidates: list[int] | None = Field(None, description="Rank only these movie ids (skips retrieval).")
    exclude: list[int] | None = Field(
        None,
        description="Movie ids never to return (already watched, say), on top of the history and, for a "
        "known user, everything they rated.",
    )
    k: int | None = None
    explain: StrictBool = Field(
        False,
        description='Give each item its reasons; strict, so that a string such as "no" is refused '
        "rather than read as true.",
    )


class Reason(BaseModel):
    """A liked movie that raised an item's score: ``contribution`` is how much the item's score
    drops when this movie is left out of the user's history (in the engine's score units)."""

    movie_id: int
    title: str
    contribution: float


class Explanation(BaseModel):
    """Up to three reasons, strongest first, and the same in one sentence."""

    reasons: list[Reason]
    text: str


class RecommendedItem(BaseModel):
    movie_id: int
    title: str
    score: float
    explanation: Explanation | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description="Only when the request asked for it: an answer without reasons keeps its old shape.",
    )


class RecommendResponse(BaseModel):
    user_id: int | None
    version: str
    items: list[RecommendedItem]
