"""The Ray Serve REST API of a running Ray cluster as a rollout target.

Used by the embedded default and by e2e. ``apply`` is declarative and idempotent (Ray
diffs the config): a change only in a deployment's ``user_config`` reconfigures replicas
in place, which is how canary weights move without a restart.
"""

from __future__ import annotations

from typing import Any

import httpx

from recserve_operator.planners.serve_config import ServeObservation
from recserve_serving.errors import Unavailable
from recserve_serving.serve.config import owned_by

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

    def apply_for(self, model_name: str, serve_config: dict[str, Any] | None) -> None:
        """Replace ``model_name``'s applications with those of ``serve_config`` (None: remove them),
        leaving every other model's applications on this Ray cluster as they are."""
        status = self.status()
        apps = status.get("applications") or {}
        others = [
            a["deployed_app_config"]
            for name, a in apps.items()
            if not owned_by(name, model_name) and a.get("deployed_app_config")
        ]
        if serve_config is None:
            if not others:
                self.delete()
                return
            kept = {k: status[k] for k in ("proxy_location", "http_options") if status.get(k)}
            serve_config = {**kept, "applications": []}
        self.apply({**serve_config, "applications": [*serve_config["applications"], *others]})

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

    def observe(self, model_name: str) -> ServeObservation:
        """What Serve was last given for ``model_name`` (its applications' deployed configs) and
        which applications are RUNNING."""
        apps = self.status().get("applications") or {}
        deployed = [
            a["deployed_app_config"]
            for name, a in apps.items()
            if owned_by(name, model_name) and a.get("deployed_app_config")
        ]
        running = frozenset(name for name, a in apps.items() if a.get("status") == "RUNNING")
        return ServeObservation({"applications": deployed} if deployed else None, running)

    def failed_applications(self, model_name: str) -> dict[str, str]:
        """{name: message} of ``model_name``'s applications that are DEPLOY_FAILED or UNHEALTHY."""
        apps = self.status().get("applications") or {}
        return {
            name: f"{a.get('status')}: {str(a.get('message', '')).strip()[:2000]}"
            for name, a in apps.items()
            if owned_by(name, model_name) and a.get("status") in {"DEPLOY_FAILED", "UNHEALTHY"}
        }
