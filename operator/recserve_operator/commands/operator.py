"""``recserve operator``: run the kopf operator against the current cluster.

Peering (``--peering``) lets several replicas run with one active; ``--namespace``
(repeatable) or ``--all-namespaces`` sets the watch scope. The webhook is served only when
``--webhook-port`` is given, with the certificate from ``--webhook-cert-dir``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

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
    if args.serve_rest:
        os.environ["RECSERVE_SERVE_REST_URL"] = args.serve_rest
        os.environ["RECSERVE_SERVE_PORT"] = str(args.serve_port)
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
    del handlers
    return 0


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
