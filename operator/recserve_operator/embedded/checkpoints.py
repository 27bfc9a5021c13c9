"""Resolve a spec's checkpoint, training a missing example model on first use.

A fresh machine has an empty registry, and the demo must still serve a real model. So
``movielens-ranker`` (the bundled example's) is trained and registered as version 1 the first
time it is asked for, and so is any model whose manifest opts in with the annotation
``recserve.dev/train-if-missing: "true"``, on that manifest's own ``spec.data``. Any other
unknown name, version or alias is an error that names what the registry does hold: a typo
must never start a training run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from recserve_serving.registry import Registry, ResolvedCheckpoint

if TYPE_CHECKING:
    from recserve_serving.dataspec import DataSpec

SEED_MODEL = "movielens-ranker"
TRAIN_IF_MISSING = "recserve.dev/train-if-missing"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


def registered_name(uri: str) -> str | None:
    match = _MODELS_URI.match(uri)
    return match.group("name") if match else None


def train_seed_model(
    registry: Registry, name: str, data: DataSpec | None, say: Callable[[str], None]
) -> ResolvedCheckpoint:
    from recserve_serving.data import load_dataset
    from recserve_serving.example_data import load_example
    from recserve_serving.train import train_and_register

    say(f"registry has no {name}: fine-tuning MiniLM on its data (a few minutes, once)")
    dataset = load_example() if data is None else load_dataset(data)
    resolved, metrics = train_and_register(registry, name, dataset)
    say(f"registered {name} v{resolved.version}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return resolved


def ensure_checkpoint(
    registry: Registry,
    uri: str,
    say: Callable[[str], None],
    *,
    train_if_missing: bool = False,
    data: DataSpec | None = None,
) -> ResolvedCheckpoint:
    """``uri`` resolved; a missing seedable model (the example's, or one whose manifest opts in
    with ``train_if_missing``, trained on ``data``) is trained and registered first."""
    name = registered_name(uri)
    seedable = name == SEED_MODEL or train_if_missing
    if name is not None and seedable and not registry.has_model(name):
        train_seed_model(registry, name, data, say)
    return registry.resolve(uri)
