"""A feedback log writer for the kill -9 test: one event per append, an ack line after each.

Usage: python feedback_writer.py DIRECTORY WRITER. Appends events with item ids 0, 1, 2, ...
until killed, printing ``ack N`` only once ``append`` has returned (the event is durable).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from recserve_serving.online.feedback_log import FeedbackEvent, FeedbackLog


def main() -> None:
    log = FeedbackLog(Path(sys.argv[1]), sys.argv[2])
    for n in itertools.count():
        log.append([FeedbackEvent(user_id="killed", item_id=n, event="click")])
        print(f"ack {n}", flush=True)


if __name__ == "__main__":
    main()
