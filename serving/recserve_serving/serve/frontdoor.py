"""The router's front door: request limits, the served version's header, and request metrics.

It is a plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware`` so that it sees
every answer that leaves the router: a 500 that escapes the exception handlers, the 413 and
504 it gives itself, and an error raised after a version was chosen. The endpoint that
chooses a version records it in the request's scope (``mark_version``); the front door puts
that version on whatever answer leaves, whatever its status, and counts the answer under it,
which is what lets canary analysis see a version's errors.

Serve pickles the ingress app into each replica, so the settings live in this module (set by
the replica's Router through ``configure``) rather than in the middleware instance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recserve_serving.errors import DeadlineExceeded, PayloadTooLarge, RecserveError
from recserve_serving.serve.api_models import UNROUTED, VERSION_HEADER
from recserve_serving.serve.http_errors import domain_answer, route_template, unexpected_answer
from recserve_serving.serve.metrics import ServingMetrics
from recserve_serving.serving_spec import LimitsSpec

VERSION_KEY = "recserve.version"
CLIENT_CLOSED = 499
"""Counted for a request its client abandoned: not the version's failure, so not a 5xx."""
UNOBSERVED = frozenset({"/metrics", "/v2/health/live", "/v2/health/ready"})
"""Probes and scrapes: counting them would drown the request rates canary analysis compares."""


@dataclass(frozen=True)
class Gate:
    """What the front door needs from the replica's Router."""

    model: str
    metrics: ServingMetrics
    limits: LimitsSpec


_gate: Gate | None = None


def configure(gate: Gate) -> None:
    global _gate
    _gate = gate


def mark_version(scope: MutableMapping[str, Any], label: str) -> None:
    """Record that ``label`` answers this request, before anything that can fail is tried."""
    scope[VERSION_KEY] = label


async def _buffered_body(scope: Scope, receive: Receive, limit: int) -> Receive:
    """The body, read at most ``limit`` bytes far, replayed to the app as one message."""
    declared = Headers(scope=scope).get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body is {int(declared)} bytes, over the limit of {limit} bytes "
            "(spec.serving.limits.maxBodyBytes); send fewer or shorter inputs, or raise the limit"
        )
    chunks: list[bytes] = []
    size = 0
    first: Message | None = None
    while True:
        message = await receive()
        if message["type"] != "http.request":
            first = message  # the client left; the app sees that as it would have
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {limit} bytes (spec.serving.limits.maxBodyBytes); "
                "send fewer or shorter inputs, or raise the limit"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    replay: Message = first or {"type": "http.request", "body": b"".join(chunks), "more_body": False}
    delivered = False

    async def receive_buffered() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return replay

    return receive_buffered


@dataclass
class _Answer:
    status: int = 500
    started: bool = False
    bounded: bool = False  # inside the request's deadline


class FrontDoor:
    """Bounds each request's body and time, and labels and counts its answer by version."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = _gate
        if scope["type"] != "http" or gate is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        answer = _Answer()
        deadline = asyncio.timeout(gate.limits.request_timeout_seconds)

        async def labelled_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                version = scope.get(VERSION_KEY)
                if version is not None:
                    MutableHeaders(scope=message)[VERSION_HEADER] = version
                answer.status, answer.started = message["status"], True
                if answer.bounded:
                    # The answer is decided: the deadline bounds reaching it, not sending it, so a
                    # slow client or a loaded loop cannot cut a started response short.
                    deadline.reschedule(None)
            await send(message)

        try:
            async with deadline:
                answer.bounded = True
                try:
                    body = await _buffered_body(scope, receive, gate.limits.max_body_bytes)
                    await self.app(scope, body, labelled_send)
                finally:
                    answer.bounded = False
        except asyncio.CancelledError:
            if not answer.started:
                answer.status = CLIENT_CLOSED
            raise
        except Exception as error:
            if answer.started:
                raise
            failure = _failure_answer(error, expired=deadline.expired(), limits=gate.limits, scope=scope)
            await failure(scope, receive, labelled_send)
        finally:
            _observe(gate, scope, answer.status, time.perf_counter() - start)


def _failure_answer(error: Exception, *, expired: bool, limits: LimitsSpec, scope: Scope) -> Response:
    if isinstance(error, RecserveError):
        return domain_answer(error)
    if isinstance(error, TimeoutError) and expired:
        return domain_answer(
            DeadlineExceeded(
                f"request took longer than {limits.request_timeout_seconds:g}s "
                "(spec.serving.limits.requestTimeoutSeconds); the ranker is busy or the request is "
                "large: retry later, send fewer pairs, or raise the limit"
            )
        )
    return unexpected_answer(scope["method"], route_template(scope), error)


def _observe(gate: Gate, scope: Scope, status: int, seconds: float) -> None:
    endpoint = route_template(scope)
    if endpoint in UNOBSERVED:
        return
    labels = (gate.model, scope.get(VERSION_KEY, UNROUTED))
    gate.metrics.requests.labels(*labels, endpoint, str(status)).inc()
    gate.metrics.latency.labels(*labels, endpoint).observe(seconds)
