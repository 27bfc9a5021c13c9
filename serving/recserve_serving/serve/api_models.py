"""Request and response bodies of the HTTP API (the OIP ones come from kserve)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
    k: int | None = None


class RecommendedItem(BaseModel):
    movie_id: int
    title: str
    score: float


class RecommendResponse(BaseModel):
    user_id: int | None
    version: str
    items: list[RecommendedItem]
