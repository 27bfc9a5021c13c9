"""``recserve build``: resolve a checkpoint and build (or fetch from cache) its optimized engine."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="models:/name/N, models:/name@alias, file://, pvc://"
    )
    parser.add_argument("--recipe", type=Path, default=None, help="YAML file holding an OptimizationRecipe")
    parser.add_argument("--backend", choices=["auto", "onnxruntime", "torch", "tensorrt"], default=None)
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None)
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--max-sequence-length", type=int, default=None)
    parser.add_argument(
        "--state", default=None, help="state directory (default $RECSERVE_HOME or ./.recserve)"
    )


def load_recipe(args: argparse.Namespace):  # -> OptimizationRecipe
    """The recipe file (if any) with command-line flags applied on top."""
    import yaml
    from pydantic import ValidationError

    from recserve_serving.errors import RecipeError
    from recserve_serving.recipe import OptimizationRecipe

    raw: dict = {}
    if args.recipe is not None:
        try:
            raw = yaml.safe_load(args.recipe.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise RecipeError(f"cannot read recipe {args.recipe}: {error}") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"recipe {args.recipe} must be a mapping, got {type(raw).__name__}")
    flags = {
        "backend": args.backend,
        "precision": args.precision,
        "maxBatchSize": args.max_batch_size,
        "maxSequenceLength": args.max_sequence_length,
    }
    raw.update({k: v for k, v in flags.items() if v is not None})
    try:
        return OptimizationRecipe.model_validate(raw)
    except ValidationError as error:
        raise RecipeError(f"invalid recipe: {error}") from None


def run(args: argparse.Namespace) -> int:
    from recserve_serving.engine.build import build_engine
    from recserve_serving.paths import state_dir
    from recserve_serving.registry import Registry

    recipe = load_recipe(args)
    state = state_dir(args.state)
    resolved = Registry(state).resolve(args.checkpoint)
    built = build_engine(resolved, recipe, state / "engines")
    manifest = built.manifest
    print(built.path)
    rows = [
        ("checkpoint", f"{resolved.uri} ({resolved.digest[:19]})"),
        ("engine key", manifest.key),
        ("backend", f"{manifest.backend} ({manifest.backend_version})"),
        ("precision", manifest.precision),
        ("hardware", manifest.hardware),
        ("cache", "hit" if built.cache_hit else "built"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if built.report is not None:
        print(built.report.table())
    return 0
