"""A progress line on a terminal (nothing when stderr is not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``label: done/total (pct)`` redrawn in place at most ten times a second."""

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None):
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0

    def update(self, done: int, total: int | None = None, force: bool = False) -> None:
        """Redraw with ``done`` items (of ``total``, when it becomes known)."""
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        if self.total:
            text = f"{self.label}: {done:,}/{self.total:,} ({100 * done // self.total}%)"
        else:
            text = f"{self.label}: {done:,}"
        self.stream.write("\r" + text + "\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
