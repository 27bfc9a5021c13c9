"""Request and response bodies of the HTTP API (the OIP ones come from kserve)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

VERSION_HEADER = "X-Recserve-Version"
"""Every answer names the model version that served it, so clients and metrics can split by it."""
UNROUTED = "none"
"""The version of an answer no version served (a 404, a request refused before routing)."""
ExternalId = StrictInt | StrictStr
"""A user or item id as the platform writes it; strict, so that 4.0 or true is refused rather
than read as an id."""


class RecommendRequest(BaseModel):
    """``POST /v1/recommend``: a known user, or an anonymous history, and how many items."""

    model_config = ConfigDict(extra="forbid")

    user_id: ExternalId | None = None
    history: list[ExternalId] | None = Field(None, description="Item ids the user liked, most recent last.")
    candidates: list[ExternalId] | None = Field(
        None, description="Rank only these item ids (skips retrieval)."
    )
    exclude: list[ExternalId] | None = Field(
        None,
        description="Item ids never to return (already bought or watched, say), on top of the history "
        "and, for a known user, everything they interacted with.",
    )
    k: int | None = None
    explain: StrictBool = Field(
        False,
        description='Give each item its reasons; strict, so that a string such as "no" is refused '
        "rather than read as true.",
    )


class Reason(BaseModel):
    """A liked item that raised another's score: ``contribution`` is how much that score drops
    when the liked item is left out of the user's history (in the engine's score units)."""

    item_id: ExternalId
    title: str
    contribution: float


class Explanation(BaseModel):
    """Up to three reasons, strongest first, and the same in one sentence."""

    reasons: list[Reason]
    text: str


class RecommendedItem(BaseModel):
    item_id: ExternalId
    title: str
    score: float
    explanation: Explanation | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description="Only when the request asked for it: an answer without reasons keeps its old shape.",
    )


class RecommendResponse(BaseModel):
    user_id: ExternalId | None
    version: str
    items: list[RecommendedItem]
