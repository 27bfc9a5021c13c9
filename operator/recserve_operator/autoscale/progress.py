"""A text progress bar on stderr for the long commands (profiling, the knob search).

On a terminal it redraws one line; in a log (not a TTY) it prints a line at every tenth of the
way, so CI output stays short. Nothing here touches stdout, which carries the results.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, label: str, unit: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_tenth = -1

    def __call__(self, done: int, total: int) -> None:
        total = max(total, done, 1)
        fraction = done / total
        elapsed = time.monotonic() - self.started
        text = f"{self.label} [{'#' * round(WIDTH * fraction):<{WIDTH}}] {done}/{total} {self.unit} {elapsed:.0f}s"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done >= total else ""))
            self.stream.flush()
            return
        tenth = int(10 * fraction)
        if tenth != self.last_tenth:
            self.last_tenth = tenth
            print(text, file=self.stream, flush=True)

    def note(self, line: str) -> None:
        """A line of detail (e.g. a finished level) that must not be overdrawn by the bar."""
        print(("\r\x1b[K" if self.tty else "") + line, file=self.stream, flush=True)
