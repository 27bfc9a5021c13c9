"""How long the interaction log keeps events, and who removes them: compaction with a retention,
a writer compacting its own segments, the router's scheduled compaction and its metric, the CLI.
The real log on disk, the real router HTTP app in process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from erasure_router import serve_in_process, store_router

from recserve_operator.cli import main
from recserve_operator.planners.serve_config import DeployPlan, ServedVersion, ServeSite, plan_serve_config
from recserve_operator.validate import load_model
from recserve_serving.online import feedback_log
from recserve_serving.online.feedback_log import (
    DAY_SECONDS,
    FeedbackEvent,
    FeedbackLog,
    FeedbackLogError,
    compact,
    read_feedback,
)
from recserve_serving.online.maintenance import LogMaintenance
from recserve_serving.privacy import Pseudonymizer
from recserve_serving.serving_spec import FeedbackLogSpec, ServingSpec
from recserve_serving.waiting import wait_for

pytestmark = pytest.mark.unit
KEY = Pseudonymizer(b"r" * 32)
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests/examples/movielens-ranker.yaml"


def event(user: str, item: str) -> FeedbackEvent:
    return FeedbackEvent(user_id=KEY.user(user), item_id=item, event="click")


def written_at(monkeypatch: pytest.MonkeyPatch, moment: float) -> None:
    """Appends from now on are received at ``moment`` (the log stamps ``received`` itself)."""
    monkeypatch.setattr(feedback_log.time, "time", lambda: moment)


def items(directory: Path) -> list[str]:
    return [str(e["itemId"]) for e in read_feedback(directory).events]


def test_retention_removes_expired_events_keeps_tombstones_and_deletes_emptied_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = 1_800_000_000.0
    written_at(monkeypatch, now - 40 * DAY_SECONDS)
    old = FeedbackLog(tmp_path, "router-old")
    old.append([event("u1", "sku-a"), event("u2", "sku-b")])  # a whole segment past retention
    old.rotate()
    old.tombstone([KEY.user("u9")])
    old.append([event("u3", "sku-c")])  # expired, beside a tombstone that stays
    old.close()
    written_at(monkeypatch, now - 5 * DAY_SECONDS)
    recent = FeedbackLog(tmp_path, "router-recent")
    recent.append([event("u1", "sku-d")])
    recent.close()
    monkeypatch.undo()

    done = compact(tmp_path, retention_days=30, now=now)

    assert (done.expired, done.removed, done.rewritten, done.deleted) == (3, 0, 1, 1)
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == [
        "router-old-00000002.jsonl",
        "router-recent-00000001.jsonl",
    ]
    assert items(tmp_path) == ["sku-d"]
    assert read_feedback(tmp_path).erased == {KEY.user("u9")}, "tombstones outlive the retention"
    assert compact(tmp_path, retention_days=30, now=now) == feedback_log.Compaction(), (
        "a second pass finds nothing"
    )
    assert compact(tmp_path, retention_days=1, now=now).expired == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_writer_compacts_its_own_segments_and_keeps_its_name_and_appending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feedback_log, "CLAIM_WAIT_SECONDS", 0.3)
    live = FeedbackLog(tmp_path, "router-live")
    live.append([event("u1", "sku-a"), event("u2", "sku-b")])
    live.tombstone([KEY.user("u1")])
    assert compact(tmp_path).skipped_live == 1, "from outside, a live writer's open segment waits"
    assert [
        r.get("itemId") for r in map(json.loads, next(tmp_path.glob("*.jsonl")).read_text().splitlines())
    ][:1] == ["sku-a"]

    done = live.compact()

    assert (done.removed, done.rewritten, done.skipped_live) == (1, 1, 0)
    assert b"sku-a" not in b"".join(p.read_bytes() for p in tmp_path.glob("*.jsonl"))
    live.append([event("u3", "sku-c")])
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == [
        "router-live-00000001.jsonl",
        "router-live-00000002.jsonl",
    ]
    assert items(tmp_path) == ["sku-b", "sku-c"]
    with pytest.raises(FeedbackLogError, match="in use by another live process"):
        FeedbackLog(tmp_path, "router-live").append([event("u4", "sku-d")])
    live.close()


def test_maintenance_compacts_at_start_and_on_schedule_and_outlives_a_failed_pass(tmp_path: Path) -> None:
    old = FeedbackLog(tmp_path, "router-old")
    old.append([event("u1", "sku-a"), event("u2", "sku-b")])
    old.tombstone([KEY.user("u1")])
    old.close()
    live = FeedbackLog(tmp_path, "router-live")
    passes: list[feedback_log.Compaction] = []
    maintenance = LogMaintenance(live, retention_days=None, every_seconds=0.2, on_pass=passes.append).start()
    try:
        wait_for(lambda: passes, 10, message="the first pass, at start")
        assert passes[0].removed == 1 and items(tmp_path) == ["sku-b"]

        corrupt = tmp_path / "router-old-00000002.jsonl"
        corrupt.write_bytes(b"not json\n{}\n")
        wait_for(lambda: maintenance.failures >= 1, 10, message="a pass over a corrupt segment to fail")
        corrupt.unlink()
        live.append([event("u1", "sku-c")])  # after the erasure: kept
        live.tombstone([KEY.user("u2")])
        wait_for(lambda: items(tmp_path) == ["sku-c"], 10, message="the next scheduled pass")
    finally:
        maintenance.stop()
        live.close()
    assert not maintenance._thread.is_alive()


def test_the_router_compacts_with_the_spec_retention_and_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "online" / "m" / "feedback"
    written_at(monkeypatch, time.time() - 3 * DAY_SECONDS)
    stale = FeedbackLog(directory, "router-gone")
    stale.append([FeedbackEvent(user_id="ph-stale", item_id="sku-a", event="click")] * 2)
    stale.close()
    monkeypatch.undo()
    router = store_router(tmp_path, FeedbackLogSpec(retention_days=2, compact_every_minutes=60))
    try:
        with serve_in_process(monkeypatch, router) as client:
            wait_for(
                lambda: 'reason="expired"} 2.0' in client.get("/metrics").text, 10, message="the start pass"
            )
            assert (
                client.post(
                    "/v1/feedback", json={"events": [{"user_id": "u1", "item_id": "sku-c", "event": "click"}]}
                ).status_code
                == 200
            )
        assert not list(directory.glob("router-gone-*.jsonl")) and items(directory) == ["sku-c"]
    finally:
        router.log_maintenance.stop()  # type: ignore[union-attr]


def test_spec_feedback_log_reaches_the_router_and_is_bounded() -> None:
    loaded = load_model(EXAMPLE)
    assert loaded.spec.serving.feedback_log == FeedbackLogSpec(retention_days=None, compact_every_minutes=60)
    wanted = {"retentionDays": 90, "compactEveryMinutes": 15}
    serving = ServingSpec.model_validate({**loaded.spec.serving.to_dict(), "feedbackLog": wanted})
    model = loaded.model_copy(update={"spec": loaded.spec.model_copy(update={"serving": serving})})
    plan = DeployPlan(stable=ServedVersion(label="movielens-ranker/1", engine_dir="/engines/a"))
    site = ServeSite(index_dir="/index", online_dir="/online", pseudonym_key_file="/keys/pseudonym")
    config = plan_serve_config(model, plan, site)
    assert json.loads(json.dumps(config.router.to_dict()))["feedbackLog"] == wanted
    for bad in ({"retentionDays": 0}, {"compactEveryMinutes": 0}, {"retentionDays": 3651}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FeedbackLogSpec.model_validate(bad)


def test_cli_compact_applies_a_retention_and_refuses_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "state" / "online" / "shop" / "feedback"
    written_at(monkeypatch, time.time() - 10 * DAY_SECONDS)
    log = FeedbackLog(directory, "router-host-1")
    log.append([event("u1", "sku-a")])
    log.close()
    monkeypatch.undo()
    state = str(tmp_path / "state")
    with pytest.raises(SystemExit) as refused:
        main(["users", "compact", "--state", state, "--retention-days", "0"])
    assert refused.value.code == 2
    assert "argument --retention-days: '0' is not a number of days above 0" in capsys.readouterr().err
    assert main(["users", "compact", "--state", state]) == 0
    assert "0 event(s) of erased users removed" in capsys.readouterr().out and items(directory) == ["sku-a"]
    assert main(["users", "compact", "--state", state, "--retention-days", "7"]) == 0
    out = capsys.readouterr().out
    assert "0 event(s) of erased users, 1 past retention removed; 0 segment(s) rewritten, 1 deleted" in out
    assert items(directory) == []


def test_readers_take_a_segment_deleted_after_listing_as_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retrain or a starting router lists the segments, then reads them; a router's compaction
    may delete one in between (all its events expired), which must not fail the reader."""
    log = FeedbackLog(tmp_path, "router-a")
    log.append([event("u1", "sku-a")])
    log.tombstone([KEY.user("u2")])
    log.close()
    listed = feedback_log._segments(tmp_path)
    gone = tmp_path / "router-b-00000001.jsonl"
    monkeypatch.setattr(feedback_log, "_segments", lambda directory: [*listed, gone])
    assert items(tmp_path) == ["sku-a"]
    assert feedback_log.erased_users(tmp_path) == {KEY.user("u2")}
