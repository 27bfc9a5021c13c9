"""The Ray Serve REST API of a running Ray cluster as a rollout target.

Used by the embedded default and by e2e. ``apply`` is declarative and idempotent (Ray
diffs the config): a change only in a deployment's ``user_config`` reconfigures replicas
in place, which is how canary weights move without a restart.
"""

from __future__ import annotations

from typing import Any

import httpx

from recserve_serving.errors import Unavailable

_PATH = "/api/serve/applications/"


class ServeRestTarget:
    def __init__(self, dashboard_url: str, timeout: float = 30.0) -> None:
        self.base = dashboard_url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = httpx.request(method, self.base + _PATH, json=body, timeout=self.timeout)
        except httpx.HTTPError as error:
            raise Unavailable(f"Ray Serve REST API at {self.base} unreachable: {error}") from error
        if response.status_code >= 400:
            raise Unavailable(
                f"Ray Serve REST API {method} failed ({response.status_code}): {response.text[:500]}"
            )
        return response

    def apply(self, serve_config: dict[str, Any]) -> None:
        self._request("PUT", serve_config)

    def delete(self) -> None:
        self._request("DELETE")

    def status(self) -> dict[str, Any]:
        return dict(self._request("GET").json())

    def application_status(self, name: str) -> tuple[str, str]:
        """(status, message) of one application; ``NOT_STARTED`` when Ray does not know it."""
        app = self.status().get("applications", {}).get(name)
        if not app:
            return "NOT_STARTED", ""
        return str(app.get("status", "UNKNOWN")), str(app.get("message", ""))
