"""Shared fixtures of tests/: an isolated state directory (offline and Ray settings are set for
every test by the repository's root conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A fresh recserve state directory for one test."""
    path = tmp_path / "state"
    path.mkdir()
    monkeypatch.setenv("RECSERVE_HOME", str(path))
    return path
