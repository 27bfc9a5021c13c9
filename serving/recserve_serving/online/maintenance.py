"""A router's upkeep of the interaction log: compaction on a schedule, in a thread of its own.

Erasure tombstones a user at once, but their events leave the log's files only when a
compaction rewrites them, and a retention means nothing until something deletes what outlived
it. Each router replica therefore compacts the shared log when it starts and then every
``spec.serving.feedbackLog.compactEveryMinutes``: its own segments (closing the open one first)
and the closed segments of every other writer. Replicas take turns on the log's compaction
lock, so more replicas mean more frequent passes, never concurrent rewrites. A pass that fails
(a full disk, a corrupt segment) is logged and retried next time; it never stops the replica.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from recserve_serving.online.feedback_log import Compaction, FeedbackLog

log = logging.getLogger(__name__)


class LogMaintenance:
    """Compacts ``feedback`` now and every ``every_seconds`` until ``stop``."""

    def __init__(
        self,
        feedback: FeedbackLog,
        *,
        retention_days: float | None,
        every_seconds: float,
        on_pass: Callable[[Compaction], None] = lambda done: None,
    ) -> None:
        self.feedback = feedback
        self.retention_days = retention_days
        self.every_seconds = every_seconds
        self.on_pass = on_pass
        self.failures = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"feedback-log-maintenance-{feedback.writer}", daemon=True
        )

    def start(self) -> LogMaintenance:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the pass under way, if any (a pass is never cut short mid-rewrite)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _pass(self) -> None:
        try:
            done = self.feedback.compact(self.retention_days)
        except Exception:
            self.failures += 1
            log.exception(
                "compaction of the feedback log in %s failed; retrying next pass", self.feedback.directory
            )
            return
        if done.removed or done.expired:
            log.info(
                "feedback log compacted: %d events of erased users and %d past retention removed "
                "(%d segments rewritten, %d deleted)",
                done.removed,
                done.expired,
                done.rewritten,
                done.deleted,
            )
        self.on_pass(done)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._pass()
            self._stopping.wait(self.every_seconds)
