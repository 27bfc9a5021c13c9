"""``recserve operator``: run the kopf operator against the current cluster.

Peering (``--peering``) lets several replicas run with one active; ``--namespace``
(repeatable) or ``--all-namespaces`` sets the watch scope. The webhook is served only when
``--webhook-port`` is given, with the certificate from ``--webhook-cert-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from recserve_operator.settings import OperatorSettings

if TYPE_CHECKING:
    from recserve_operator.cluster.handlers import TrainingScheduler
    from recserve_operator.platform import Platform

from recserve_serving.serve.config import SERVE_PORT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="namespace to watch (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    parser.add_argument("--peering", default=None, help="kopf peering name: one active replica among several")
    parser.add_argument(
        "--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    parser.add_argument(
        "--serve-rest",
        default=None,
        metavar="DASHBOARD_URL",
        help="roll out to this Ray cluster's Serve REST API and build engines in-process (instead of KubeRay)",
    )
    parser.add_argument(
        "--serve-port",
        type=int,
        default=SERVE_PORT,
        help="HTTP port of the Serve app with --serve-rest",
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="serve operator metrics on this port")
    parser.add_argument(
        "--webhook-port", type=int, default=None, help="serve the admission webhook on this port"
    )
    parser.add_argument("--webhook-host", default="0.0.0.0", help="webhook bind address")
    parser.add_argument(
        "--webhook-cert-dir", type=Path, default=None, help="dir with tls.crt, tls.key (and ca.crt)"
    )
    parser.add_argument(
        "--webhook-service", default=None, help="Service name[.namespace] that fronts the webhook"
    )


def run(args: argparse.Namespace) -> int:
    import kopf

    import recserve_operator.cluster.handlers as handlers

    if args.webhook_port is not None:
        import recserve_operator.cluster.admission  # noqa: F401 - registers the webhook

        _configure_webhook(args)
    chosen = _platform(args)
    handlers.use_platform(chosen, training=_scheduler(chosen))
    if args.metrics_port is not None:
        from recserve_operator import metrics

        metrics.serve(args.metrics_port)
    if args.namespace and not any(set(ns) & _NAMESPACE_PATTERN_CHARS for ns in args.namespace):
        _watch_exact_namespaces()
    kopf.configure(verbose=False)
    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace or (),
        standalone=args.peering is None,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
    )
    return 0


def _platform(args: argparse.Namespace) -> Platform:
    """KubeRay and build Jobs by default; a running Ray cluster's Serve REST API when configured.

    The REST target (``--serve-rest URL``) builds engines in the operator's process and rolls
    out to an existing Ray cluster: the embedded default's platform, driven by the API server.
    """
    settings = OperatorSettings.from_env()
    if args.serve_rest:
        settings = dataclasses.replace(settings, serve_rest_url=args.serve_rest, serve_port=args.serve_port)
    if not settings.serve_rest_url:
        from recserve_operator.cluster.platform import ClusterPlatform

        return ClusterPlatform(settings)
    from recserve_operator.embedded.platform import EmbeddedPlatform
    from recserve_operator.rollout.serve_rest import ServeRestTarget
    from recserve_serving.paths import state_dir

    embedded = EmbeddedPlatform(
        state_dir(settings.local_state),
        "127.0.0.1",
        settings.serve_port,
        logging.getLogger("recserve.operator").info,
    )
    embedded.target = ServeRestTarget(settings.serve_rest_url)
    return embedded


def _scheduler(chosen: Platform) -> TrainingScheduler | None:
    """KubeRay installs schedule retrains as CronJobs; a ``--serve-rest`` operator keeps the
    feedback log on its own disk, where no CronJob could read it, so it schedules none."""
    from recserve_operator.cluster.platform import ClusterPlatform

    return chosen if isinstance(chosen, ClusterPlatform) else None


_NAMESPACE_PATTERN_CHARS = set("!*?,")  # kopf globs, negations and lists


def _watch_exact_namespaces() -> None:
    """Namespaces named exactly need no namespace observation, and the namespaced scope's RBAC
    grants none: without this, kopf retries the forbidden cluster-wide namespace list 9 times
    (about a minute of backoff, an ERROR each) before falling back to the names given."""
    import kopf

    @kopf.on.startup()
    def _exact(settings: kopf.OperatorSettings, **_: object) -> None:
        settings.scanning.disabled = True


def _configure_webhook(args: argparse.Namespace) -> None:
    import kopf

    certs: Path | None = args.webhook_cert_dir
    host = None
    if args.webhook_service:
        name, _, namespace = args.webhook_service.partition(".")
        host = f"{name}.{namespace or 'default'}.svc"

    @kopf.on.startup()
    def _webhook(settings: kopf.OperatorSettings, **_: object) -> None:
        settings.admission.server = kopf.WebhookServer(
            addr=args.webhook_host,
            port=args.webhook_port,
            host=host,
            certfile=str(certs / "tls.crt") if certs else None,
            pkeyfile=str(certs / "tls.key") if certs else None,
            cafile=str(certs / "ca.crt") if certs and (certs / "ca.crt").exists() else None,
        )
        settings.admission.managed = "recserve.dev"
