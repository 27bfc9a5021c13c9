"""``recserve build``: resolve a checkpoint and build (or fetch from cache) its optimized engine."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recserve_operator.commands.data_option import add_data_arguments, data_spec

if TYPE_CHECKING:
    from recserve_serving.engine.throughput import Workload
    from recserve_serving.recipe import OptimizationRecipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="models:/name/N, models:/name@alias, file://, pvc://"
    )
    parser.add_argument("--recipe", type=Path, default=None, help="YAML file holding an OptimizationRecipe")
    parser.add_argument("--backend", choices=["auto", "onnxruntime", "torch", "tensorrt"], default=None)
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default=None)
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--max-sequence-length", type=int, default=None)
    parser.add_argument(
        "--state", default=None, help="state directory (default $RECSERVE_HOME or ./.recserve)"
    )
    parser.add_argument(
        "--recipe-json", default=None, help="the recipe as one JSON object (build Jobs use it)"
    )
    parser.add_argument("--expect-digest", default=None, help="refuse a checkpoint whose digest differs")
    parser.add_argument(
        "--cache", type=Path, default=None, help="engine cache root (default <state>/engines)"
    )
    parser.add_argument(
        "--index-dir",
        type=Path,
        default=None,
        help="also make sure the data's retrieval indexes are in this directory (build Jobs: routers, "
        "whose image has no torch, only read them)",
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="engine threads of the search benchmark: the serving replica's (default 2)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="pairs per request of the search benchmark: the retrieval candidates (default 200)",
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=None,
        help="write {engineDir, engine} JSON here (a Job's terminationMessagePath)",
    )


def load_recipe(args: argparse.Namespace) -> OptimizationRecipe:
    """The recipe file (if any) with command-line flags applied on top."""
    import yaml
    from pydantic import ValidationError

    from recserve_serving.errors import RecipeError
    from recserve_serving.recipe import OptimizationRecipe

    raw: dict[str, Any] = {}
    if args.recipe_json is not None:
        import json

        try:
            raw = json.loads(args.recipe_json)
        except ValueError as error:
            raise RecipeError(f"--recipe-json is not JSON: {error}") from None
    elif args.recipe is not None:
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


def write_result(path: Path, built: Any) -> None:
    """The operator reads this from the build pod's status (4 KiB limit, so metrics only)."""
    import json

    manifest = built.manifest
    metrics = dict(manifest.metrics)
    engine = {
        "key": manifest.key,
        "backend": manifest.backend,
        "precision": manifest.precision,
        "sizeBytes": int(metrics["size_bytes"]) if "size_bytes" in metrics else None,
        "quality": {k: v for k, v in metrics.items() if k in ("ndcg@10", "auc", "ndcg@10_drop", "auc_drop")},
    }
    search = getattr(built, "search", None)  # a SearchedEngine's; not imported, it would load torch
    if search is not None:
        engine["search"] = search.status()
    path.write_text(json.dumps({"engineDir": str(built.path), "engine": engine}))


def write_failure(path: Path, error: Exception) -> None:
    """A failed build's reason and gate report, for the operator to put on the version that
    asked for it (a termination message holds 4 KiB, so the error's tail only)."""
    import json

    from recserve_serving.errors import QualityGateFailed

    failure = {
        "failure": "QualityGateFailed" if isinstance(error, QualityGateFailed) else "EngineFailed",
        "error": str(error)[-2500:],
        "report": getattr(error, "report", None),
    }
    path.write_text(json.dumps(failure))


def workload(args: argparse.Namespace) -> Workload:
    """The search benchmark's shape from the flags; defaults where a flag is not given."""
    from recserve_serving.engine.throughput import DEFAULT_PAIRS, Workload

    return Workload(pairs=args.pairs or DEFAULT_PAIRS, threads=args.threads or Workload().threads)


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args)  # before the heavy imports: a bad recipe fails in a blink

    from recserve_serving.engine.search_build import build_best, search_of
    from recserve_serving.errors import CheckpointError
    from recserve_serving.paths import state_dir
    from recserve_serving.registry import Registry

    state = state_dir(args.state)
    resolved = Registry(state, os.environ.get("MLFLOW_TRACKING_URI")).resolve(args.checkpoint)
    if (
        args.expect_digest
        and not args.expect_digest.startswith("uri:")
        and resolved.digest != args.expect_digest
    ):
        raise CheckpointError(
            f"{args.checkpoint}: digest {resolved.digest} differs from the expected {args.expect_digest}"
        )
    from recserve_serving.data import load_dataset
    from recserve_serving.errors import DataError, EngineError

    try:
        data = load_dataset(data_spec(args))
        built = build_best(
            resolved, recipe, args.cache or state / "engines", workload=workload(args), data=data
        )
    except (EngineError, DataError) as error:
        if args.termination_log is not None:
            write_failure(args.termination_log, error)
        raise
    index = None
    if args.index_dir is not None:
        from recserve_serving.serve.catalog import ensure_index

        index = ensure_index(data, args.index_dir)
    if args.termination_log is not None:
        write_result(args.termination_log, built)
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
    if index is not None:
        rows.append(("retrieval index", ", ".join(str(path) for path in index)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if built.report is not None:
        print(built.report.table())
    search = search_of(built)
    if search is not None:
        print(search.table())
    return 0
