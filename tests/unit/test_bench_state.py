"""The benchmarks' private state dir: it must work on a fresh machine, where nothing was shared yet."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench.serving_bench.servers import SHARED_FILES, SHARED_STATE, private_state

pytestmark = pytest.mark.unit


def test_a_fresh_shared_state_gets_every_shared_entry_written_through_the_links(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    private = private_state(shared, tmp_path / "private")
    for name in SHARED_STATE:
        if name in SHARED_FILES:
            sqlite3.connect(private / name).close()
        else:
            (private / name / "run-1").mkdir(parents=True)
        assert (shared / name).exists(), f"{name} written through the link lands in the shared state"


def test_an_existing_shared_state_is_linked_not_replaced(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "engines" / "abc").mkdir(parents=True)
    private = private_state(shared, tmp_path / "private")
    assert (private / "engines" / "abc").is_dir()
    assert (private / "engines").is_symlink()
