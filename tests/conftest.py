"""Shared fixtures: an isolated state directory and Ray settings for every test."""

from __future__ import annotations

import os

import pytest

from recserve_operator.embedded.local_ray import LOCAL_RAY_ENV
from recserve_serving.offline import OFFLINE_ENV

for _name, _value in {**OFFLINE_ENV, **LOCAL_RAY_ENV}.items():
    os.environ.setdefault(_name, _value)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A fresh recserve state directory for one test."""
    path = tmp_path / "state"
    path.mkdir()
    monkeypatch.setenv("RECSERVE_HOME", str(path))
    return path
