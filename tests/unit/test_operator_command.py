"""`recserve operator` picks the platform the kopf handlers drive."""

from __future__ import annotations

import argparse

import pytest

from recserve_operator.commands import operator

pytestmark = pytest.mark.unit


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    operator.add_arguments(parser)
    return parser.parse_args(argv)


def test_kuberay_by_default(monkeypatch) -> None:
    from recserve_operator.cluster.platform import ClusterPlatform

    monkeypatch.delenv("RECSERVE_SERVE_REST_URL", raising=False)
    assert isinstance(operator._platform(_args()), ClusterPlatform)


def test_serve_rest_builds_in_process_and_rolls_out_over_rest(state, monkeypatch) -> None:
    from recserve_operator.embedded.platform import EmbeddedPlatform

    monkeypatch.setattr("recserve_serving.registry.Registry", lambda path: path)  # no MLflow store
    chosen = operator._platform(_args("--serve-rest", "http://ray:8265/", "--serve-port", "8123"))
    assert isinstance(chosen, EmbeddedPlatform)
    assert chosen.target is not None and chosen.target.base == "http://ray:8265"
    assert chosen.endpoint == "http://127.0.0.1:8123" and chosen.state == state
