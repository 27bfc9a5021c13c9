"""The one place where failures become HTTP answers.

Domain errors carry their own status (and an overloaded queue its ``Retry-After``);
FastAPI's request-validation errors (malformed JSON, wrong types) become 400 with the
offending field path. Anything else is a bug and is logged, but the replica keeps serving.
The exception handlers and the front door (which sees what escapes them) share these
functions, so every path gives the same answer for the same failure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import Scope

from recserve_serving.errors import Overloaded, RecserveError

log = logging.getLogger("recserve.serve")


def _field_path(location: Sequence[int | str]) -> str:
    parts = [str(part) for part in location if part != "body"]
    return ".".join(parts) or "body"


def domain_answer(error: RecserveError) -> JSONResponse:
    headers = {}
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(max(0, math.ceil(error.retry_after_s)))
    return JSONResponse({"error": str(error)}, status_code=error.http_status, headers=headers)


def route_template(scope: Scope) -> str:
    """The matched route's template (``/v1/users/{user_id:path}``), never the request's path: a
    path can hold a user id, and whatever names a request in logs and metrics must not."""
    return str(getattr(scope.get("route"), "path", "unmatched"))


def unexpected_answer(method: str, route: str, error: BaseException) -> JSONResponse:
    """500 for a bug, logged with the route template and the traceback. The exception's own
    message is logged too: recserve's errors name pseudonyms and fields, never raw user ids."""
    log.error("unhandled error on %s %s", method, route, exc_info=error)
    return JSONResponse({"error": f"internal error: {type(error).__name__}"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RecserveError)
    async def _domain(_: Request, error: RecserveError) -> JSONResponse:
        return domain_answer(error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"body is not valid JSON: {e.get('ctx', {}).get('error', 'decode error')}"
            if e.get("type") == "json_invalid"
            else f"{_field_path(e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in error.errors()
        ]
        return JSONResponse({"error": "invalid request: " + "; ".join(problems)}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        return unexpected_answer(request.method, route_template(request.scope), error)
