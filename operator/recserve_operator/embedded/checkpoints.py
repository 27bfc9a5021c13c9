"""Resolve a spec's checkpoint, seeding the local registry with the MovieLens ranker on first use.

A fresh machine has an empty registry, and the demo must still serve a real model, so
the one model this project knows how to train — ``movielens-ranker`` — is trained and
registered as version 1 the first time it is asked for. Any other unknown name, version
or alias is an error that names what the registry does hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from recserve_serving.registry import Registry, ResolvedCheckpoint

SEED_MODEL = "movielens-ranker"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


def registered_name(uri: str) -> str | None:
    match = _MODELS_URI.match(uri)
    return match.group("name") if match else None


def train_seed_model(registry: Registry, say: Callable[[str], None]) -> ResolvedCheckpoint:
    from recserve_serving.train import train_and_register

    say(f"registry has no {SEED_MODEL}: fine-tuning MiniLM on MovieLens (a few minutes, once)")
    resolved, metrics = train_and_register(registry, SEED_MODEL)
    say(
        f"registered {SEED_MODEL} v{resolved.version}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    )
    return resolved


def ensure_checkpoint(registry: Registry, uri: str, say: Callable[[str], None]) -> ResolvedCheckpoint:
    if registered_name(uri) == SEED_MODEL and not registry.has_model(SEED_MODEL):
        train_seed_model(registry, say)
    return registry.resolve(uri)
