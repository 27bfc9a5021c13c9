"""Rollout targets: where a rendered serve config goes (KubeRay, or a Ray Serve REST API)."""
