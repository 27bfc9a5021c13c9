"""``manifest.json``: what an engine directory is, where it came from, and its file digests.

The manifest is written last, so an engine directory without one is unfinished; its file
digests are checked on every load, so a tampered or truncated engine is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from recserve_serving.errors import EngineError
from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.schema import CamelModel

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


class CheckpointRef(CamelModel):
    uri: str
    digest: str
    name: str
    version: str | None = None


class EngineManifest(CamelModel):
    format_version: int = MANIFEST_VERSION
    key: str
    checkpoint: CheckpointRef
    recipe: OptimizationRecipe
    backend: str = Field(description="The backend that was built (never 'auto').")
    backend_version: str
    precision: str
    hardware: str
    max_sequence_length: int
    model_file: str
    model_shape: Literal["cross", "prefix"] = Field(
        default="cross", description="The checkpoint's shape: how pairs are laid out for the model."
    )
    item_max_length: int | None = Field(
        default=None, description="Tokens per candidate of a prefix-shaped model (item [SEP])."
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str] = Field(description="relative path -> sha256 of every file but the manifest.")

    def write(self, directory: Path) -> None:
        (Path(directory) / MANIFEST_FILE).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def read(cls, directory: Path) -> EngineManifest:
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            raise EngineError(f"{directory} is not a finished engine: {MANIFEST_FILE} is missing")
        try:
            manifest = cls.model_validate(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as error:
            raise EngineError(f"{path} is corrupt: {error}") from None
        if manifest.format_version != MANIFEST_VERSION:
            raise EngineError(
                f"{path}: manifest format {manifest.format_version}, this build reads {MANIFEST_VERSION}"
            )
        return manifest
