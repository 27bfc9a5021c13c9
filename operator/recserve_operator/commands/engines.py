"""``recserve engines gc``: delete cached engines that no model references and nothing used for a TTL.

Run it where the engine store is mounted (a CronJob on the artifact claim, or by hand on a
laptop). Engines that a running ``recserve up`` on this state directory serves are always
kept; ``--keep-from-cluster`` reads every RecommenderModel's status (stable and canary
engine keys) from the API server, so an engine in service is never deleted.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    gc = sub.add_parser("gc", help="delete unreferenced engines unused for --ttl")
    gc.add_argument("--ttl", required=True, help="a duration such as 12h or 168h")
    gc.add_argument("--cache", type=Path, default=None, help="engine cache root (default <state>/engines)")
    gc.add_argument("--state", default=None, help="state directory (default $RECSERVE_HOME or ./.recserve)")
    gc.add_argument("--keep", action="append", default=[], metavar="KEY", help="an engine key to keep")
    gc.add_argument(
        "--keep-from-cluster",
        action="store_true",
        help="also keep every engine a RecommenderModel's status names (needs list on recommendermodels)",
    )
    gc.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")


def cluster_engine_keys() -> set[str]:
    from recserve_operator import kube

    keys: set[str] = set()
    for model in kube.list_models_all_namespaces():
        status = model.get("status") or {}
        for role in ("stable", "canary"):
            key = ((status.get(role) or {}).get("engine") or {}).get("key")
            if key:
                keys.add(str(key))
    return keys


def live_run_engine_keys(state: Path) -> set[str]:
    """Engines that a running ``recserve up`` serves, from its run record's last status.

    A replica touches an engine's use marker only when it loads it, so an engine served for
    longer than the TTL looks unused; the run records say which are in service right now.
    Records of dead processes are ignored: their engines are ordinary cache entries.
    """
    from recserve_operator.embedded.processes import pid_alive
    from recserve_operator.embedded.runs import list_runs

    keys: set[str] = set()
    for record in list_runs(state).values():
        if not pid_alive(int(record.get("pid") or 0)):
            continue
        status = record.get("status") or {}
        for role in ("stable", "canary"):
            key = ((status.get(role) or {}).get("engine") or {}).get("key")
            if key:
                keys.add(str(key))
    return keys


def run(args: argparse.Namespace) -> int:
    from recserve_operator.api.types import duration_seconds
    from recserve_serving.engine.gc import collect_garbage
    from recserve_serving.errors import InvalidRequest
    from recserve_serving.paths import state_dir

    try:
        ttl = duration_seconds(args.ttl)
    except ValueError as error:
        raise InvalidRequest(f"--ttl: {error}; write it like 12h or 168h") from None
    state = state_dir(args.state)
    cache = args.cache or state / "engines"
    keep = set(args.keep) | live_run_engine_keys(state)
    keep |= cluster_engine_keys() if args.keep_from_cluster else set()
    collected = collect_garbage(cache, ttl_seconds=ttl, keep=keep, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for key in collected.removed:
        print(f"{verb} {key}")
    print(
        f"{len(collected.removed)} {verb}, {len(collected.kept_referenced)} kept (referenced), "
        f"{len(collected.kept_recent)} kept (used within {args.ttl})"
    )
    return 0
