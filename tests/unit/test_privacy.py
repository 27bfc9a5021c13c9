"""Pseudonyms, the key file, erased users in the log (tombstones, compaction) and in the stores,
and `recserve users erase` on an embedded state: the real log, the real SQLite Feast store."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from tiny_data import tiny

from recserve_operator.cli import main
from recserve_serving.dataspec import HistoryStoreSpec
from recserve_serving.online.feedback_log import (
    FeedbackEvent,
    FeedbackLog,
    compact,
    erased_users,
    read_feedback,
)
from recserve_serving.online.history import HistoryStore
from recserve_serving.privacy import (
    PrivacyKeyError,
    Pseudonymizer,
    embedded_key_file,
    ensure_key_file,
    load_key,
    pseudonymizer_from,
)
from recserve_serving.serve.catalog import DatasetHistories
from recserve_serving.serve.config import RouterConfig
from recserve_serving.serve.sources import dataset_histories, fill_marker, router_pseudonyms

pytestmark = pytest.mark.unit
KEY = Pseudonymizer(b"a" * 32)


def test_a_pseudonym_is_stable_keyed_and_one_per_user() -> None:
    again = Pseudonymizer(b"a" * 32)
    other = Pseudonymizer(b"b" * 32)
    assert KEY.user("cust-1") == again.user("cust-1") != other.user("cust-1")
    assert KEY.user(42) == KEY.user("42") == KEY.user(" 42 "), "an id's int and string forms are one user"
    assert KEY.user("cust-1") != KEY.user("cust-2")
    pseudonym = KEY.user("cust-1")
    assert pseudonym.startswith("ph-") and len(pseudonym) == 35 and int(pseudonym[3:], 16) >= 0
    assert KEY.user(pseudonym) == pseudonym, "a pseudonym passes through (erasure by pseudonym)"
    assert KEY.key_id == again.key_id != other.key_id and "cust" not in KEY.key_id
    with pytest.raises(PrivacyKeyError, match="has 5 bytes; it needs at least 16"):
        Pseudonymizer(b"short")


def test_the_generated_key_file_is_0600_in_a_0700_folder_and_kept(tmp_path: Path) -> None:
    path = ensure_key_file(embedded_key_file(tmp_path))
    assert path == tmp_path / "secrets" / "pseudonym.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    key = load_key(path)
    assert len(key) == 64 and ensure_key_file(path) == path and load_key(path) == key, "never regenerated"
    assert not [p for p in path.parent.iterdir() if p != path], "no temporary file left behind"
    assert pseudonymizer_from(path).user("u") == Pseudonymizer(key).user("u")


def test_a_router_with_an_unreadable_key_fails_at_start_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "key"
    config = RouterConfig(model_name="shop", index_dir="i", online_dir="o", pseudonym_key_file=str(missing))
    with pytest.raises(
        PrivacyKeyError, match=rf"router shop: cannot read the pseudonymization key {missing}"
    ):
        router_pseudonyms(config)
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    with pytest.raises(PrivacyKeyError, match="has 3 bytes, fewer than 16"):
        router_pseudonyms(config.model_copy(update={"pseudonym_key_file": str(short)}))
    assert router_pseudonyms(RouterConfig(model_name="shop", index_dir="i")) is None
    with pytest.raises(ValueError, match="pseudonymKeyFile is not, and raw user ids are never written"):
        RouterConfig(model_name="shop", index_dir="i", online_dir="o")


def event(user: str, item: str, kind: str = "click") -> FeedbackEvent:
    return FeedbackEvent(user_id=KEY.user(user), item_id=item, event=kind)


def lines(directory: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_compaction_removes_erased_users_events_keeps_tombstones_and_live_segments(tmp_path: Path) -> None:
    old = FeedbackLog(tmp_path, "router-old")  # a replica that has since stopped
    old.append([event("u1", "sku-a"), event("u2", "sku-b")])
    old.close()
    live = FeedbackLog(tmp_path, "router-live")
    live.append([event("u1", "sku-c")])
    live.rotate()
    live.append([event("u1", "sku-d")])  # the live writer's open segment
    live.tombstone([KEY.user("u1")])
    live.append([event("u1", "sku-b")])  # the user came back after the erasure
    before = read_feedback(tmp_path)
    assert erased_users(tmp_path) == {KEY.user("u1")} == before.erased

    done = compact(tmp_path)

    assert (done.rewritten, done.deleted, done.removed, done.skipped_live) == (1, 1, 2, 1), (
        "a segment left empty is deleted"
    )
    assert read_feedback(tmp_path) == before, "training reads the same thing before and after"
    kept = lines(tmp_path)
    assert [r.get("itemId") for r in kept if r.get("userId") == KEY.user("u2")] == ["sku-b"]
    assert [r.get("itemId") for r in kept if r.get("userId") == KEY.user("u1")] == ["sku-d", "sku-b"], (
        "the open segment waits for the next compaction; the event after the erasure stays"
    )
    assert [r["erase"] for r in kept if "erase" in r] == [KEY.user("u1")]
    live.close()
    assert compact(tmp_path).removed == 1 and erased_users(tmp_path) == {KEY.user("u1")}
    assert not list(tmp_path.glob(".*.tmp"))
    live_again = FeedbackLog(tmp_path, "router-live")
    live_again.append([event("u3", "sku-a")])  # the writer resumes in a new segment, as after a restart
    assert [r["itemId"] for r in read_feedback(tmp_path).events if r["userId"] == KEY.user("u3")] == ["sku-a"]
    live_again.close()


def test_stores_are_keyed_by_pseudonym_and_erased_users_never_come_back(tmp_path: Path) -> None:
    dataset = tiny()
    histories = dataset_histories(dataset, KEY, erased=frozenset({KEY.user("u2")}))
    assert set(histories) == {KEY.user("u1")} and histories[KEY.user("u1")].liked == ["sku-a"]
    assert fill_marker(dataset, KEY) != fill_marker(dataset, Pseudonymizer(b"b" * 32)), "a new key refills"

    from_data = DatasetHistories(dataset, KEY, erased=frozenset({KEY.user("u2")}))
    assert from_data.past("u2") is None and from_data.past("u1") is not None
    assert from_data.erase("u1") is True and from_data.past("u1") is None
    assert from_data.erase("u1") is False
    with pytest.raises(Exception, match="no pseudonymKeyFile"):
        DatasetHistories(dataset).erase("u1")


def embedded_state(tmp_path: Path) -> tuple[Path, Path]:
    """A stopped model's embedded state as `recserve up` leaves it: key, log and SQLite store."""
    state = tmp_path / "state"
    key = Pseudonymizer(load_key(ensure_key_file(embedded_key_file(state))))
    online = state / "online" / "shop"
    log = FeedbackLog(online / "feedback", "router-host-1")
    log.append([FeedbackEvent(user_id=key.user(u), item_id="sku-a", event="click") for u in ("u1", "u2")])
    log.close()
    dataset = tiny()
    store = HistoryStore(HistoryStoreSpec(kind="sqlite"), online / "feast")
    store.fill(dataset_histories(dataset, key), fill_marker(dataset, key))
    store.close()
    return state, online


def test_cli_erases_a_user_in_an_embedded_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, online = embedded_state(tmp_path)
    key = pseudonymizer_from(embedded_key_file(state))
    assert main(["users", "erase", "u1", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert f"erased user {key.user('u1')} of shop" in out and "online history emptied" in out
    assert "1 event(s) of erased users removed; 1 segment(s) rewritten, 0 deleted" in out and "u1 " not in out
    logged = lines(online / "feedback")
    assert [r["userId"] for r in logged if "userId" in r] == [key.user("u2")]
    assert [r["erase"] for r in logged if "erase" in r] == [key.user("u1")]
    store = HistoryStore(HistoryStoreSpec(kind="sqlite"), online / "feast")
    assert store.get(key.user("u1")) is None and store.get(key.user("u2")) is not None
    store.close()
    assert main(["users", "erase", "u1", "--model", "shop", "--state", str(state)]) == 0, "idempotent"
    assert "online history none stored" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["users", "erase", " "], "error: user id: give the id of the user to erase"),
        (["users", "erase", "u1", "--model", "nope"], "error: model 'nope' has no online data in"),
        (["users", "erase", "u1", "--endpoint", "http://127.0.0.1:9"], "error: cannot reach the router at"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    state, _ = embedded_state(tmp_path)
    assert main([*argv, "--state", str(state)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_cli_needs_a_model_when_the_state_has_several_and_a_key_to_erase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    for model in ("a", "b"):
        (state / "online" / model).mkdir(parents=True)
    assert main(["users", "erase", "u1", "--state", str(state)]) == 2
    assert "--model: " in capsys.readouterr().err
    assert main(["users", "erase", "u1", "--model", "a", "--state", str(state)]) == 2
    assert "error: no pseudonym key at" in capsys.readouterr().err
    assert not os.path.exists(state / "online" / "a" / "feedback"), "nothing was written"
