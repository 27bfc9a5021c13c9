"""Shared fixtures: an isolated state directory and Ray settings for every test."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A fresh recserve state directory for one test."""
    path = tmp_path / "state"
    path.mkdir()
    monkeypatch.setenv("RECSERVE_HOME", str(path))
    return path
