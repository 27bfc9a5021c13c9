"""The durable feedback log: every event ``POST /v1/feedback`` acknowledged, as JSON lines.

The log is the record training reads later, so an acknowledged event must survive a crash of the
replica (and of the machine): ``append`` writes the lines, flushes, and ``fsync``s the file (and
the directory when it created the segment) before it returns, and the endpoint acknowledges only
after that.

Layout: one directory shared by every replica; each process appends to its own segment files,
``<writer>-<seq>.jsonl``, so replicas never write to one file and need no coordination. An
exclusive ``flock`` on ``.<writer>.lock`` refuses a second live log with the same writer name.
A segment is closed at ``SEGMENT_BYTES``, by ``rotate``, and whenever the process restarts or a
write fails: appends never follow a line a crash may have torn, so a torn line can only be the
last of a segment.

Each line is one event in the request's camelCase form, ``ts`` filled with the receipt time when
the client gave none, plus ``received`` (the server's Unix time when it took the event).

Erasure appends a tombstone line, ``{"erase": PSEUDONYM, "received": T}``, to the same log:
``read_feedback`` drops every event of that user received up to T, and reports the user as
erased so that training also drops their rows in the platform's own interaction table.

``compact`` rewrites closed segments without the erased users' events (keeping the tombstones),
which is how an erasure leaves the log itself and not only what training reads, and, given a
retention, without events received longer ago than that; a segment left with nothing is deleted.
A router compacts on a schedule (``online/maintenance.py``); compactions of one log take turns
(``.compact.lock``).

``read`` skips a torn last line (a crash mid-write: that append never returned, so the event was
never acknowledged) with a warning; a bad line anywhere else is corruption and raises, naming the
file and line. An append that crashed part-way may leave its first events readable although the
client got no acknowledgement; a retry then logs them twice (at-least-once).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import field_validator, model_validator

from recserve_serving.errors import RecserveError
from recserve_serving.schema import CamelModel

SEGMENT_BYTES = 64 * 1024 * 1024
_SEGMENT = re.compile(r"^(?P<writer>.+)-(?P<seq>\d{8})\.jsonl$")
_WRITER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TOMBSTONE = b'{"erase":'
COMPACTION_LOCK = ".compact.lock"
CLAIM_WAIT_SECONDS = 5.0
DAY_SECONDS = 86_400
log = logging.getLogger(__name__)


class FeedbackLogError(RecserveError):
    """The log cannot be written (writer name taken or invalid) or read (a corrupt line)."""


class FeedbackEvent(CamelModel):
    """One interaction a client reports: the body item of ``POST /v1/feedback``."""

    user_id: int | str
    item_id: int | str
    event: Literal["view", "click", "rating", "skip"]
    value: float | None = None
    ts: float | None = None

    @field_validator("user_id", "item_id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"must be a non-empty string or an integer id (got {value!r})")
        return value

    @field_validator("value", "ts", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be a number (got {value!r})")
        return value

    @model_validator(mode="after")
    def _complete(self) -> FeedbackEvent:
        if self.event == "rating" and self.value is None:
            raise ValueError(
                "value is required for a rating event: give the rating as a finite number, e.g. 4.5"
            )
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(
                f"value must be a finite number (got {self.value}); omit it unless event is rating"
            )
        if self.ts is not None and not (math.isfinite(self.ts) and self.ts > 0):
            raise ValueError(
                f"ts must be a finite Unix time in seconds, greater than 0 (got {self.ts}); "
                "omit it to use the time the server receives the event"
            )
        return self


class FeedbackLog:
    """Append events durably to this process's segments; read every writer's segments back."""

    def __init__(self, directory: Path, writer: str) -> None:
        if not _WRITER.match(writer):
            raise FeedbackLogError(
                f"feedback log writer name {writer!r} is not usable in a file name: use 1-128 letters, "
                "digits, '.', '_' or '-', starting with a letter or digit (e.g. the replica id)"
            )
        self.directory = directory
        self.writer = writer
        self._lock = threading.Lock()
        self._claim: IO[bytes] | None = None
        self._segment: IO[bytes] | None = None
        self._size = 0

    def append(self, events: Sequence[FeedbackEvent]) -> int:
        """Write ``events`` and make them durable before returning how many were written."""
        received = time.time()
        self._write_durably(b"".join(_line(event, received) for event in events))
        return len(events)

    def tombstone(self, users: Sequence[str]) -> int:
        """Record the erasure of ``users`` (pseudonyms), durably, before returning how many."""
        received = time.time()
        self._write_durably(
            b"".join(
                (json.dumps({"erase": user, "received": received}, separators=(",", ":")) + "\n").encode()
                for user in users
            )
        )
        return len(users)

    def _write_durably(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            segment = self._writable(len(data))
            try:
                segment.write(data)
                segment.flush()
                os.fsync(segment.fileno())
            except BaseException:
                # The file may now end in a partial line; the next append starts a new segment.
                self._close_segment()
                raise
            self._size += len(data)

    def rotate(self) -> None:
        """Close the current segment; the next append starts a new one."""
        with self._lock:
            self._close_segment()

    def read(self) -> Iterator[dict[str, Any]]:
        """Every record (events and erasure tombstones) of every writer's segments, in order (writer, then seq)."""
        for path in _segments(self.directory):
            yield from _read_segment(path)

    def close(self) -> None:
        """Close the segment and release the writer name."""
        with self._lock:
            self._close_segment()
            if self._claim is not None:
                self._claim.close()
                self._claim = None

    def _writable(self, incoming: int) -> IO[bytes]:
        if self._segment is not None and self._size > 0 and self._size + incoming > SEGMENT_BYTES:
            self._close_segment()
        if self._segment is None:
            self._segment = self._create_segment()
            self._size = 0
        return self._segment

    def _create_segment(self) -> IO[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._claim_writer()
        path = self.directory / f"{self.writer}-{_last_sequence(self.directory, self.writer) + 1:08d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        segment = os.fdopen(fd, "ab")
        _fsync_directory(self.directory)
        return segment

    def compact(self, retention_days: float | None = None) -> Compaction:
        """Compact the whole log, this writer's segments included: its open segment is closed
        first (the next append starts a new one), so every event it wrote so far can go. Appends
        wait only for the close, not for the compaction."""
        with self._lock:
            self._close_segment()
            closed = _last_sequence(self.directory, self.writer)
        return compact(self.directory, retention_days=retention_days, closed_own=(self.writer, closed))

    def _claim_writer(self) -> None:
        if self._claim is not None:
            return
        claim = open(self.directory / f".{self.writer}.lock", "ab")  # noqa: SIM115 (held open)
        # A compaction holds a stopped writer's name only while it rewrites that writer's
        # segments; a process resuming that name (a restarted container keeps its host name and
        # often its pid) waits that long rather than failing its first append.
        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(claim.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    claim.close()
                    raise FeedbackLogError(
                        f"feedback log writer {self.writer!r} is in use by another live process in "
                        f"{self.directory}: give each replica its own writer name"
                    ) from None
                time.sleep(0.05)
        self._claim = claim

    def _close_segment(self) -> None:
        if self._segment is not None:
            with contextlib.suppress(OSError):
                self._segment.close()
            self._segment = None
            self._size = 0


@dataclass(frozen=True)
class FeedbackRecords:
    """What training may read from the log: the events still live, and who was erased."""

    events: list[dict[str, Any]]
    erased: frozenset[str]


def read_feedback(directory: Path) -> FeedbackRecords:
    """Every writer's events, less those of erased users received before their erasure."""
    records = [record for path in _segments(directory) for record in _read_segment(path)]
    erased_at = _erasures(records)
    events = [
        record
        for record in records
        if "erase" not in record
        and float(record.get("received", 0.0)) > erased_at.get(str(record.get("userId")), -math.inf)
    ]
    return FeedbackRecords(events, frozenset(erased_at))


def erased_users(directory: Path) -> frozenset[str]:
    """The pseudonyms every tombstone in the log names: what a router starting up must never
    serve or refill from the platform's own data."""
    return frozenset(_erasures(_tombstones(directory)))


def _tombstones(directory: Path) -> Iterator[dict[str, Any]]:
    """Every tombstone in the log. Only tombstone lines are parsed, so a router start or a
    compaction pass reads a large log at disk speed."""
    for path in _segments(directory):
        try:
            file = open(path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            continue  # deleted by a compaction since it was listed; it held no tombstone
        with file:
            for raw in file:
                if raw.startswith(_TOMBSTONE):
                    record = _parse(raw)
                    if record is not None:  # a torn tombstone was never acknowledged
                        yield record


@dataclass(frozen=True)
class Compaction:
    """What ``compact`` did: segments rewritten and deleted, events removed because their user was
    erased and because they outlived the retention, and live segments left alone."""

    rewritten: int = 0
    removed: int = 0
    skipped_live: int = 0
    expired: int = 0
    deleted: int = 0

    def __add__(self, other: Compaction) -> Compaction:
        return Compaction(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def compact(
    directory: Path,
    *,
    retention_days: float | None = None,
    closed_own: tuple[str, int] | None = None,
    now: float | None = None,
) -> Compaction:
    """Rewrite the log's closed segments without the events of erased users and, with
    ``retention_days``, without events received more than that many days before ``now``.

    An event goes when a tombstone of its user was received after it (``read_feedback``'s rule),
    so a user who comes back after an erasure keeps their new events. Tombstones stay: training
    still leaves the erased users' rows out of the platform's own table, and a starting router
    still refuses to serve them. Each rewritten segment is written beside the old one, fsynced,
    and renamed over it, so a crash leaves either the old file or the new one; a segment left
    empty is deleted. A segment a live writer may still append to (the newest segment of a
    writer whose ``.<writer>.lock`` is held) is left as it is; the next compaction takes it once
    the writer has moved on. Writers that are not live are locked for the rewrite, so none can
    start appending under the same name meanwhile. ``closed_own`` is the calling writer's name
    and the last of its segments it has closed (``FeedbackLog.compact``): those are rewritten
    without taking its lock, which it holds itself.
    """
    if not directory.is_dir():
        return Compaction()
    cutoff = (
        None
        if retention_days is None
        else (time.time() if now is None else now) - retention_days * DAY_SECONDS
    )
    with open(directory / COMPACTION_LOCK, "ab") as turn:
        fcntl.flock(turn.fileno(), fcntl.LOCK_EX)
        erased_at = _erasures(_tombstones(directory))
        if not erased_at and cutoff is None:
            return Compaction()
        totals = Compaction()
        for writer, segments in _segments_by_writer(directory).items():
            if closed_own is not None and writer == closed_own[0]:
                for seq, path in segments:
                    if seq <= closed_own[1]:
                        totals += _rewrite(path, erased_at, cutoff)
                continue
            with open(directory / f".{writer}.lock", "ab") as claim:
                try:
                    fcntl.flock(claim.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    closed = segments
                except BlockingIOError:  # the newest may be open for appending
                    closed = segments[:-1]
                    totals += Compaction(skipped_live=1)
                for _, path in closed:
                    totals += _rewrite(path, erased_at, cutoff)
        return totals


def _erasures(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Each erased user's pseudonym and the receipt time of their latest tombstone."""
    erased_at: dict[str, float] = {}
    for record in records:
        if "erase" in record:
            user = str(record["erase"])
            erased_at[user] = max(erased_at.get(user, 0.0), float(record.get("received", math.inf)))
    return erased_at


def _rewrite(path: Path, erased_at: dict[str, float], cutoff: float | None) -> Compaction:
    """Rewrite ``path`` without the erased users' earlier events and the expired ones (or delete
    it when nothing is left); what went, as a one-segment ``Compaction``."""
    records = list(_read_segment(path))
    kept, erased, expired = [], 0, 0
    for record in records:
        received = float(record.get("received", 0.0))
        if "erase" in record:
            kept.append(record)
        elif received <= erased_at.get(str(record.get("userId")), -math.inf):
            erased += 1
        elif cutoff is not None and received < cutoff:
            expired += 1
        else:
            kept.append(record)
    if len(kept) == len(records):
        return Compaction()
    if not kept:
        path.unlink()
        _fsync_directory(path.parent)
        return Compaction(removed=erased, expired=expired, deleted=1)
    temporary = path.with_name(f".{path.name}.compact.tmp")
    with open(temporary, "wb") as file:
        file.write(b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in kept))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)
    return Compaction(rewritten=1, removed=erased, expired=expired)


def _line(event: FeedbackEvent, received: float) -> bytes:
    record = event.model_dump(by_alias=True, mode="json")
    record["ts"] = event.ts if event.ts is not None else received
    record["received"] = received
    return (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()


def _fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable (fsync of the file alone does not)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keyed_segments(directory: Path) -> list[tuple[str, int, Path]]:
    """Every segment as (writer, sequence number, path), by writer, then oldest first."""
    if not directory.is_dir():
        return []
    keyed = []
    for path in directory.iterdir():
        match = _SEGMENT.match(path.name)
        if match:
            keyed.append((match["writer"], int(match["seq"]), path))
    return sorted(keyed)


def _segments(directory: Path) -> list[Path]:
    return [path for _, _, path in _keyed_segments(directory)]


def _segments_by_writer(directory: Path) -> dict[str, list[tuple[int, Path]]]:
    """Each writer's segments as (sequence number, path), oldest first."""
    by_writer: dict[str, list[tuple[int, Path]]] = {}
    for writer, seq, path in _keyed_segments(directory):
        by_writer.setdefault(writer, []).append((seq, path))
    return by_writer


def _last_sequence(directory: Path, writer: str) -> int:
    """The sequence number of ``writer``'s newest segment; 0 when it has none."""
    return max((seq for seq, _ in _segments_by_writer(directory).get(writer, [])), default=0)


def _read_segment(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path, "rb") as file:
            lines = file.read().split(b"\n")
    except FileNotFoundError:
        return  # a compaction deleted it since it was listed: nothing in it was kept
    # A segment ends with "\n", so the split leaves b"" last; anything else there is a line the
    # writer never finished.
    complete, tail = lines[:-1], lines[-1]
    for number, raw in enumerate(complete, start=1):
        record = _parse(raw)
        if record is not None:
            yield record
            continue
        if number == len(complete) and not tail:
            log.warning("%s: line %d is torn (a crash mid-write, never acknowledged); skipped", path, number)
            return
        raise FeedbackLogError(
            f"feedback log {path} is corrupt at line {number}: not a JSON event ({raw[:80]!r}); "
            "move the file aside or repair that line"
        )
    if tail:
        log.warning(
            "%s: line %d is torn (a crash mid-write, never acknowledged); skipped", path, len(complete) + 1
        )


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
