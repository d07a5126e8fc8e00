"""Progress of a running job on stderr: done/total, rate, ETA and failures.

On a terminal the line is redrawn in place (at most ten times a second); otherwise
(Kubernetes logs, CI) one line every ``interval_s`` seconds and a last one at the end, so a
log shows steady progress without a flood of lines.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Literal, TextIO

ProgressMode = Literal["auto", "tty", "log", "off"]
_BAR_WIDTH = 24
_TTY_REDRAW_S = 0.1


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def progress_line(
    label: str, done: int, total: int, rate_per_s: float, failed: int, *, bar: bool = False
) -> str:
    """``label  [####----]  12,288/200,000  6.1%  20,311/s  ETA 9s  failed 0``."""
    fraction = done / total if total else 1.0
    remaining = max(total - done, 0)
    eta = remaining / rate_per_s if rate_per_s > 0 else (0.0 if remaining == 0 else None)
    parts = [label]
    if bar:
        filled = min(_BAR_WIDTH, int(fraction * _BAR_WIDTH))
        parts.append("[" + "#" * filled + "-" * (_BAR_WIDTH - filled) + "]")
    parts += [
        f"{done:,}/{total:,}",
        f"{fraction:.1%}",
        f"{rate_per_s:,.0f}/s",
        f"ETA {format_duration(eta)}",
        f"failed {failed:,}",
    ]
    return "  ".join(parts)


class Progress:
    """Counts entities as chunks finish and draws the line.

    ``note`` shows a phase that has no total yet (the feature-store snapshot); ``begin`` then
    sets the total and what an earlier run already finished: the rate counts only this run's
    work from that moment.
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        mode: ProgressMode = "auto",
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "tty" if self.stream.isatty() else "log"
        self.mode = mode
        self.label = label
        self.total = 0
        self.done = 0
        self.failed = 0
        self._start_done = 0
        self._interval_s = _TTY_REDRAW_S if mode == "tty" else interval_s
        self._clock = clock
        self._started = clock()
        self._last_draw = self._started

    def begin(self, total: int, *, done: int = 0) -> None:
        self.total = total
        self.done = self._start_done = done
        self._started = self._last_draw = self._clock()

    @property
    def rate_per_s(self) -> float:
        elapsed = self._clock() - self._started
        return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        return progress_line(
            self.label, self.done, self.total, self.rate_per_s, self.failed, bar=self.mode == "tty"
        )

    def note(self, text: str) -> None:
        if self._due():
            self._write(f"{self.label}  {text}")

    def advance(self, entities: int, *, failed: int = 0) -> None:
        self.done += entities
        self.failed += failed
        if self._due():
            self._write(self.line())

    def close(self) -> None:
        """The final state, and a newline after an in-place line."""
        if self.mode == "off":
            return
        self._write(self.line())
        if self.mode == "tty":
            self.stream.write("\n")
            self.stream.flush()

    def _due(self) -> bool:
        now = self._clock()
        if now - self._last_draw < self._interval_s:
            return False
        self._last_draw = now
        return True

    def _write(self, line: str) -> None:
        if self.mode == "off":
            return
        if self.mode == "tty":
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
