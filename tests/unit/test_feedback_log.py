"""The feedback log: round trip across writers, rotation, torn tails, corruption, validation."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from recserve_serving.online import feedback_log
from recserve_serving.online.feedback_log import FeedbackEvent, FeedbackLog, FeedbackLogError

pytestmark = pytest.mark.unit


def event(item: int | str, kind: str = "click", **extra: object) -> FeedbackEvent:
    return FeedbackEvent.model_validate({"userId": "u1", "itemId": item, "event": kind, **extra})


def segments(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.jsonl"))


def test_round_trip_across_two_writers(tmp_path: Path) -> None:
    a, b = FeedbackLog(tmp_path, "replica-a"), FeedbackLog(tmp_path, "replica-b")
    before = time.time()
    assert a.append([event(1), event("i2", "rating", value=4.5, ts=1_700_000_000.5)]) == 2
    assert b.append([FeedbackEvent(user_id=7, item_id=9, event="skip")]) == 1
    assert a.append([event(3, "view")]) == 1
    assert a.append([]) == 0
    records = list(FeedbackLog(tmp_path, "reader").read())
    assert [(r["userId"], r["itemId"], r["event"], r["value"]) for r in records] == [
        ("u1", 1, "click", None),
        ("u1", "i2", "rating", 4.5),
        ("u1", 3, "view", None),
        (7, 9, "skip", None),
    ]
    assert records[1]["ts"] == 1_700_000_000.5
    for record in records:
        assert before <= record["received"] <= time.time()
    assert records[0]["ts"] == records[0]["received"]  # filled with the receipt time
    assert segments(tmp_path) == ["replica-a-00000001.jsonl", "replica-b-00000001.jsonl"]
    a.close()
    b.close()


def test_rotation_by_call_by_size_and_by_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = FeedbackLog(tmp_path, "w")
    log.rotate()  # nothing written yet: no empty segment
    log.append([event(1)])
    log.rotate()
    log.append([event(2)])
    assert segments(tmp_path) == ["w-00000001.jsonl", "w-00000002.jsonl"]
    line = len((tmp_path / "w-00000001.jsonl").read_bytes())
    monkeypatch.setattr(feedback_log, "SEGMENT_BYTES", 2 * line + 10)
    log.append([event(3)])  # fits beside event 2
    log.append([event(4)])  # would pass the cap: a new segment
    log.append([event(5), event(6), event(7)])  # over the cap beside 4: one new segment for the batch
    log.close()
    restarted = FeedbackLog(tmp_path, "w")  # a restarted replica never appends to an old segment
    restarted.append([event(8)])
    restarted.close()
    assert segments(tmp_path) == [f"w-{n:08d}.jsonl" for n in range(1, 6)]
    assert len((tmp_path / "w-00000004.jsonl").read_bytes().splitlines()) == 3  # a batch is never split
    assert [r["itemId"] for r in restarted.read()] == list(range(1, 9))


def test_a_writer_name_is_one_live_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feedback_log, "CLAIM_WAIT_SECONDS", 0.3)
    first = FeedbackLog(tmp_path, "replica-1")
    first.append([event(1)])
    second = FeedbackLog(tmp_path, "replica-1")
    with pytest.raises(FeedbackLogError, match="writer 'replica-1' is in use by another live process"):
        second.append([event(2)])
    first.close()
    second.append([event(2)])
    second.close()
    assert [r["itemId"] for r in FeedbackLog(tmp_path, "x").read()] == [1, 2]
    with pytest.raises(FeedbackLogError, match=r"writer name '\.\./up' is not usable in a file name"):
        FeedbackLog(tmp_path, "../up")


def test_a_resumed_writer_name_waits_out_a_compaction_holding_it(tmp_path: Path) -> None:
    """A compaction locks a stopped writer's name while it rewrites that writer's segments; a
    process resuming the name then (a restarted container) waits for it instead of failing."""
    holder = open(tmp_path / ".replica-1.lock", "ab")  # noqa: SIM115 (closed by the timer)
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
    release = threading.Timer(0.5, holder.close)
    release.start()
    resumed = FeedbackLog(tmp_path, "replica-1")
    resumed.append([event(1)])
    release.join()
    resumed.close()
    assert [r["itemId"] for r in FeedbackLog(tmp_path, "x").read()] == [1]


@pytest.mark.parametrize(
    "tail", [b'{"userId":"u1","itemId":3,"ev', b'{"userId":"u1","itemId":3}', b"\0\0\0\0", b"\0\0\n"]
)
def test_torn_last_line_is_skipped_with_a_warning(tmp_path: Path, tail: bytes, caplog) -> None:
    log = FeedbackLog(tmp_path, "w")
    log.append([event(1), event(2)])
    log.close()
    with open(tmp_path / "w-00000001.jsonl", "ab") as file:
        file.write(tail)
    with caplog.at_level(logging.WARNING, logger=feedback_log.__name__):
        assert [r["itemId"] for r in log.read()] == [1, 2]
    assert "w-00000001.jsonl: line 3 is torn (a crash mid-write, never acknowledged); skipped" in caplog.text


def test_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path, "w")
    log.append([event(1)])
    log.close()
    path = tmp_path / "w-00000001.jsonl"
    with open(path, "ab") as file:
        file.write(b"not json\n" + path.read_bytes())
    with pytest.raises(
        FeedbackLogError, match=r"w-00000001\.jsonl is corrupt at line 2: not a JSON event \(b'not json'\)"
    ):
        list(log.read())
    path.write_bytes(b'["a list"]\n{"itemId": 1}\n')
    with pytest.raises(FeedbackLogError, match="corrupt at line 1"):
        list(log.read())


def test_append_after_a_failed_write_starts_a_new_segment(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path, "w")
    log.append([event(1)])
    assert log._segment is not None
    log._segment.close()  # the next write fails, as on a full or failing disk
    with pytest.raises(ValueError):
        log.append([event(2)])
    log.append([event(3)])
    log.close()
    assert segments(tmp_path) == ["w-00000001.jsonl", "w-00000002.jsonl"]
    assert [r["itemId"] for r in log.read()] == [1, 3]


def test_stored_line_shape(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path, "w")
    log.append([FeedbackEvent(user_id="u", item_id=5, event="view", ts=12.0)])
    log.close()
    line = (tmp_path / "w-00000001.jsonl").read_text()
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert set(record) == {"userId", "itemId", "event", "value", "ts", "received"}
    assert record["ts"] == 12.0
    assert FeedbackEvent.model_validate({k: v for k, v in record.items() if k != "received"}).item_id == 5


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {"event": "like"},
            "event",
            "Input should be 'view', 'click', 'rating' or 'skip'.*input_value='like'",
        ),
        ({"event": "rating"}, "", "value is required for a rating event: give the rating as a finite number"),
        ({"event": "rating", "value": math.nan}, "", r"value must be a finite number \(got nan\)"),
        ({"event": "click", "value": math.inf}, "", r"value must be a finite number \(got inf\)"),
        ({"event": "rating", "value": "five"}, "value", "Input should be a valid number"),
        ({"event": "rating", "value": True}, "value", r"must be a number \(got True\)"),
        (
            {"event": "view", "ts": 0},
            "",
            r"ts must be a finite Unix time in seconds, greater than 0 \(got 0.0\); omit it",
        ),
        ({"event": "view", "ts": -5}, "", r"greater than 0 \(got -5.0\)"),
        ({"event": "view", "ts": math.inf}, "", r"ts must be a finite Unix time .*\(got inf\)"),
        (
            {"event": "view", "userId": ""},
            "userId",
            r"must be a non-empty string or an integer id \(got ''\)",
        ),
        (
            {"event": "view", "itemId": False},
            "itemId",
            r"must be a non-empty string or an integer id \(got False\)",
        ),
        ({"event": "view", "itemId": 1.5}, "itemId", "itemId"),
        ({"event": "view", "extra": 1}, "extra", "Extra inputs are not permitted"),
    ],
)
def test_validation_says_what_and_how(body: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        FeedbackEvent.model_validate({"userId": "u1", "itemId": 3, **body})
    if field:
        assert any(error["loc"][0] == field for error in caught.value.errors()), caught.value.errors()


def test_valid_events() -> None:
    rating = FeedbackEvent.model_validate(
        {"userId": 1, "itemId": "m7", "event": "rating", "value": 3, "ts": 1.5}
    )
    assert (rating.user_id, rating.item_id, rating.value, rating.ts) == (1, "m7", 3.0, 1.5)
    assert FeedbackEvent(user_id="u", item_id=2, event="skip").value is None
