"""``recserve retrain NAME``: fine-tune a RecommenderModel's stable version on its new feedback.

The model comes from a manifest (``-f``) or as JSON (``--model-json``, what a cluster CronJob
passes); its ``spec.checkpoint`` must be a registry alias (``models:/REGISTERED@ALIAS``): the
retrain starts from what that alias points at and registers the next version of REGISTERED.
The feedback log and the pseudonymization key default to where the embedded router keeps them.

Exit codes: 0 when a version was registered (moved to the candidate alias or rejected by the
gate: both normal outcomes) or when there was too little new data ("nothing to retrain: ...");
1 when the run stopped at its time budget (nothing registered); 2 for bad input (one ``error:``
line, from the CLI).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from recserve_serving.errors import InvalidRequest

if TYPE_CHECKING:
    from recserve_operator.api.types import RecommenderModel
    from recserve_serving.retrain import RetrainResult

EXIT_BUDGET = 1
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[\w.-]+)/?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the RecommenderModel's metadata.name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-f", "--file", type=Path, help="a RecommenderModel manifest (YAML) holding NAME")
    source.add_argument("--model-json", help="the RecommenderModel as JSON (what a retrain CronJob passes)")
    parser.add_argument(
        "--state", default=None, help="state directory (default $RECSERVE_HOME or ./.recserve)"
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="a shared MLflow tracking URI (default: the embedded registry)"
    )
    parser.add_argument(
        "--feedback-dir",
        type=Path,
        default=None,
        help="the feedback log directory (default: the embedded router's, STATE/online/NAME/feedback)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="the pseudonymization key the routers use (default: the embedded one, created if absent)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (default: spec.training.budget)"
    )
    parser.add_argument(
        "--cutoff",
        type=int,
        default=None,
        metavar="UNIX_SECONDS",
        help="treat interactions after this as new (default: the stable version's recserve.data_cutoff tag)",
    )
    parser.add_argument(
        "--eval-users", type=int, default=100, help="held-out users the versions are compared on"
    )
    parser.add_argument("--report", type=Path, default=None, help="write the result as JSON to this file")


def load_model(args: argparse.Namespace) -> RecommenderModel:
    """The RecommenderModel named ``args.name`` from ``--file`` or ``--model-json``."""
    from recserve_operator.validate import check_document, load_models

    if args.model_json is not None:
        try:
            document = json.loads(args.model_json)
        except json.JSONDecodeError as error:
            raise InvalidRequest(f"--model-json is not JSON: {error}") from None
        model, problems = check_document(document)
        if model is None or problems:
            first = problems[0] if problems else "not a RecommenderModel"
            raise InvalidRequest(f"--model-json: {first}")
        models = [model]
    else:
        if not args.file.is_file():
            raise InvalidRequest(f"-f {args.file}: no such file")
        models = load_models(args.file)  # ManifestError names the first problem
    named = [m for m in models if m.metadata.name == args.name]
    if not named:
        known = ", ".join(str(m.metadata.name) for m in models) or "none"
        where = "--model-json" if args.model_json is not None else str(args.file)
        raise InvalidRequest(f"{where} holds no RecommenderModel named {args.name!r} (it holds: {known})")
    return named[0]


def registry_target(model: RecommenderModel) -> tuple[str, str]:
    """(registered name, stable alias) from ``spec.checkpoint.uri``; only an alias can be retrained."""
    uri = model.spec.checkpoint.uri
    match = _ALIAS_URI.match(uri)
    if not match:
        raise InvalidRequest(
            f"spec.checkpoint.uri {uri!r} of {model.metadata.name}: a retrain needs a registry alias, "
            "models:/REGISTERED@ALIAS (e.g. models:/movielens-ranker@champion), to know which model it "
            "retrains and where the stable version is"
        )
    return match["name"], match["alias"]


def run(args: argparse.Namespace) -> int:
    from recserve_serving.online.feedback_log import read_feedback
    from recserve_serving.paths import state_dir
    from recserve_serving.privacy import embedded_key_file, ensure_key_file, pseudonymizer_from
    from recserve_serving.registry import Registry
    from recserve_serving.retrain import NOTHING, RetrainInputs, RetrainOptions, retrain
    from recserve_serving.tabular import load_data
    from recserve_serving.train import TrainingBudgetExceeded
    from recserve_serving.trainingspec import TrainingSpec

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.steps is not None and args.steps < 1:
        raise InvalidRequest(f"--steps must be at least 1, got {args.steps}")
    model = load_model(args)
    registered, alias = registry_target(model)
    state = state_dir(args.state)
    registry = Registry(state, args.tracking_uri)
    if not registry.has_model(registered):
        known = ", ".join(registry.model_names()) or "none"
        raise InvalidRequest(
            f"{model.spec.checkpoint.uri}: the registry at {registry.tracking_uri} holds no model "
            f"{registered!r} (it holds: {known}); train it first (recserve train --name {registered})"
        )
    key_file = args.key_file or ensure_key_file(embedded_key_file(state))
    feedback_dir = args.feedback_dir or state / "online" / args.name / "feedback"
    feedback = read_feedback(feedback_dir)
    inputs = RetrainInputs(
        loaded=load_data(model.spec.data_or_example),
        events=feedback.events,
        erased=feedback.erased,
        pseudonymize=pseudonymizer_from(key_file).user,
    )
    options = RetrainOptions(
        stable_alias=alias, steps=args.steps, cutoff=args.cutoff, eval_users=args.eval_users
    )
    try:
        result = retrain(registry, registered, model.spec.training or TrainingSpec(), inputs, options)
    except TrainingBudgetExceeded as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BUDGET
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(result.model_dump_json(indent=2) + "\n")
    if result.verdict == NOTHING:
        print(f"nothing to retrain: {result.reason}")
        return 0
    _print(result)
    return 0


def _print(result: RetrainResult) -> None:
    print(
        f"registered models:/{result.model}/{result.new_version} from version {result.parent_version}: "
        f"{result.verdict}"
    )
    print(f"  {result.reason}")
    for key in ("ndcg@10", "hitrate@10", "auc"):
        print(f"  {key:<12} new {result.new_metrics[key]:.4f}  stable {result.parent_metrics[key]:.4f}")
    counts = result.counts
    print(
        f"  interactions: {counts.get('new', 0)} new ({counts.get('new_train', 0)} trained on, "
        f"{counts.get('holdout', 0)} held out over {counts.get('holdout_users', 0)} users), "
        f"{counts.get('train_groups_replay', 0)} replayed examples, "
        f"{counts.get('erased_excluded', 0)} of erased users excluded"
    )
    if result.dp_epsilon is not None:
        print(f"  DP-SGD: epsilon {result.dp_epsilon:.3f} at delta {result.dp_delta:g}")
    print(f"  {result.seconds:.1f}s ({result.train_seconds:.1f}s training)")
