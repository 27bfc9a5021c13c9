"""The online history store against a real redis-server, and the feedback log under kill -9.

Redis comes from ``scripts/redis-server.sh`` (Debian's package, installed with apt-get when the
machine has none); each test starts its own server on a free port, without persistence, and
stops it by pid. The store behaviour is the same list of cases tests/unit runs on SQLite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from history_cases import CASES
from redis.backoff import NoBackoff
from redis.retry import Retry

from recserve_serving.dataspec import HistoryStoreSpec
from recserve_serving.online.feedback_log import FeedbackLog
from recserve_serving.online.history import HistoryStore, UserHistory

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.fixture
def open_redis(redis_server: str, tmp_path: Path) -> Iterator[Callable[[], HistoryStore]]:
    opened: list[HistoryStore] = []
    config = HistoryStoreSpec(kind="redis", connection_string=f"{redis_server},db=0")

    def open_store() -> HistoryStore:
        # Each opening has its own registry directory, as each replica has: Redis is what they share.
        opened.append(HistoryStore(config, tmp_path / f"replica{len(opened)}"))
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_history_on_redis(case, open_redis, monkeypatch) -> None:
    case(open_redis, monkeypatch)


def test_replicas_share_history_through_redis(open_redis) -> None:
    one, two = open_redis(), open_redis()
    one.record("u", [("a", True)])
    assert two.record("u", [("b", False)]) == UserHistory(liked=["a"], seen=["a", "b"])
    assert one.get("u") == UserHistory(liked=["a"], seen=["a", "b"])
    assert two.erase("u") is True
    assert one.get("u") is None


def test_a_down_redis_fails_fast_without_retries(redis_server: str, tmp_path: Path) -> None:
    """The setting HistoryStoreConfig recommends for the request path: no redis-py retries."""
    config = HistoryStoreSpec(kind="redis", connection_string=f"{redis_server},retry=null,socket_timeout=0.5")
    store = HistoryStore(config, tmp_path / "repo")
    store.record("u", [("a", True)])
    redis.Redis.from_url(f"redis://{redis_server}", retry=Retry(NoBackoff(), 0)).shutdown(nosave=True)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        store.get("u")
    assert time.monotonic() - started < 1.0
    store.close()


def test_feedback_log_keeps_every_acked_event_through_kill_9(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "serving"), os.environ.get("PYTHONPATH", "")]),
    }
    writer = subprocess.Popen(
        [sys.executable, str(HERE / "feedback_writer.py"), str(tmp_path / "log"), "replica-0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked: list[int] = []
    try:
        assert writer.stdout is not None
        deadline = time.monotonic() + 60
        while len(acked) < 200 and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            acked.append(int(line.split()[1]))
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        _, stderr = writer.communicate(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert len(acked) == 200, stderr[-3000:]
    logged = [record["itemId"] for record in FeedbackLog(tmp_path / "log", "reader").read()]
    # Every acknowledged event is there, in order; the writer may have written more before it died.
    assert logged[: len(acked)] == acked == list(range(200))
    assert logged == list(range(len(logged)))
