"""Base class for every typed edge (CRD spec, serve config, engine manifest).

Kubernetes objects use camelCase keys while Python code reads snake_case; one base keeps
that mapping, and the refusal of unknown keys, identical everywhere.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Strict model that reads and writes camelCase keys and rejects unknown ones."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The Kubernetes-style (camelCase) JSON form, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
