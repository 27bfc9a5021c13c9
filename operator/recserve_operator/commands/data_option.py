"""``--data``: which catalog and interactions a command reads, shared by train, build and eval.

A manifest (its ``spec.data``, or the bundled example when it has none) or a file holding only a
``data`` block; build Jobs pass the block inline as JSON (``--data-json``), as they do the recipe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recserve_serving.errors import InvalidRequest

if TYPE_CHECKING:
    from recserve_serving.dataspec import DataSpec


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="YAML",
        help="a RecommenderModel manifest (its spec.data) or a YAML data block "
        "(catalog, interactions, history); default: the bundled example catalog",
    )
    group.add_argument("--data-json", default=None, help="the data block as JSON (what build Jobs pass)")


def data_spec(args: argparse.Namespace) -> DataSpec:
    from pydantic import ValidationError

    from recserve_serving.dataspec import DataSpec
    from recserve_serving.example_data import EXAMPLE_DATA

    where, raw = _raw(args)
    if raw is None:
        return EXAMPLE_DATA
    try:
        return DataSpec.model_validate(raw)
    except ValidationError as error:
        raise InvalidRequest(f"{where}: invalid data block: {error}") from None


def _raw(args: argparse.Namespace) -> tuple[str, Any]:
    import yaml

    if args.data_json is not None:
        return "--data-json", json.loads(args.data_json)
    if args.data is None:
        return "", None
    path: Path = args.data
    if not path.is_file():
        raise InvalidRequest(f"--data {path}: no such file")
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        raise InvalidRequest(
            f"--data {path}: expected a manifest or a data block, got {type(document).__name__}"
        )
    if document.get("kind") == "RecommenderModel":
        return f"--data {path} (spec.data)", (document.get("spec") or {}).get("data")
    return f"--data {path}", document.get("data", document)
