"""A registry server that accepts connections and never answers must not hold a caller."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from recserve_operator.cluster.checkpoints import describe
from recserve_serving.errors import Unavailable
from recserve_serving.registry import Registry
from recserve_serving.registry_http import HTTP_BOUNDS, bound_registry_calls

pytestmark = pytest.mark.integration


@pytest.fixture
def hung_registry() -> Iterator[str]:
    """A loopback port whose connections are accepted and held open, unanswered."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")


def test_a_hung_registry_is_unavailable_within_the_bound_in_the_operator(hung_registry, short_bounds) -> None:
    secret_uri = hung_registry.replace("http://", "http://alice:s3cret@")
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        describe("models:/ranker/1", secret_uri)
    assert time.monotonic() - started < 8  # one 1 s attempt, not 8 attempts of 120 s
    assert "unavailable" in str(caught.value) and "s3cret" not in str(caught.value)


def test_a_hung_registry_is_unavailable_within_the_bound_in_the_builder(
    hung_registry, short_bounds, tmp_path
) -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable, match="unavailable"):
        Registry(tmp_path, tracking_uri=hung_registry).resolve("models:/ranker/1")
    assert time.monotonic() - started < 8


def test_registry_calls_are_bounded_by_default_and_a_chosen_bound_wins() -> None:
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    bound_registry_calls(env)
    assert env == {**HTTP_BOUNDS, "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    assert int(HTTP_BOUNDS["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= 10
    assert int(HTTP_BOUNDS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 2
