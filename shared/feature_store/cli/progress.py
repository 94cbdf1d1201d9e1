"""A progress line for long runs: done, rate and ETA, redrawn on a terminal, logged otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports ``done/total`` with rate and ETA at most every ``every_s`` seconds."""

    def __init__(self, label: str, total: int, unit: str = "rows", stream: TextIO | None = None,
                 every_s: float = 0.5, already_done: int = 0) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.every_s = every_s
        # Work a resumed run finished earlier counts towards done, not towards this run's rate.
        self.done = self._initial = already_done
        self.started = time.monotonic()
        self._last = 0.0
        self._tty = self.stream.isatty()
        if not self._tty:
            self.every_s = max(every_s, 5.0)

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            self._draw(now)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self._initial) / elapsed if elapsed > 0 else 0.0

    def _draw(self, now: float) -> None:
        rate = self.rate
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        width = 30
        bar = "#" * int(width * pct / 100) + "-" * (width - int(width * pct / 100))
        text = (f"{self.label} [{bar}] {pct:5.1f}% {self.done:,}/{self.total:,} {self.unit} "
                f"{rate:,.0f}/s ETA {eta:,.0f}s")
        end = "\r" if self._tty and self.done < self.total else "\n"
        self.stream.write(text + end)
        self.stream.flush()

    def close(self) -> None:
        if self._tty and self.done < self.total:
            self.stream.write("\n")
