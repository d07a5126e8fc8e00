"""Circuit breaker: stop calling a dependency that keeps failing, probe it, recover by itself.

closed → (``failure_threshold`` consecutive failures) → open: calls fail at once for
``open_s`` → half-open: one probe call is let through; success closes, failure re-opens.
Fast failure matters most for a *slow* dependency: without it every request would wait its
whole deadline before the fallback ladder could answer.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        open_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._threshold = failure_threshold
        self._open_s = open_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = State.CLOSED

    def allow(self) -> bool:
        """May a call go out now? (In half-open state, only the single probe may.)"""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self._clock() - self._opened_at < self._open_s:
                return False
            self.state = State.HALF_OPEN
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        self.state = State.CLOSED

    def record_failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self.state is State.HALF_OPEN or self._failures >= self._threshold:
            self.state = State.OPEN
            self._opened_at = self._clock()

    def release_probe(self) -> None:
        """A call ended without a verdict on the dependency (e.g. cancelled)."""
        self._probing = False

    @property
    def retry_after_s(self) -> float:
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self._open_s - (self._clock() - self._opened_at))
