"""Pure tick functions behind loadtests/shapes.py (no Locust import: unit-testable)."""

from __future__ import annotations

import re

SHAPES = ("ramp", "step")


def parse_duration(text: str | int | float) -> float:
    """``90``, ``90s``, ``5m``, ``1h30m`` → seconds."""
    if isinstance(text, int | float):
        return float(text)
    parts = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*", str(text))
    if not parts or not any(parts.groups()):
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 5m, 1h30m)")
    h, m, s = (int(g or 0) for g in parts.groups())
    return float(3600 * h + 60 * m + s)


def ramp_tick(
    run_time: float, users: int, spawn_rate: float, duration: float | None
) -> tuple[int, float] | None:
    if duration is not None and run_time >= duration:
        return None
    return users, spawn_rate


def step_tick(
    run_time: float,
    users: int,
    spawn_rate: float,
    duration: float | None,
    step_users: int,
    step_time: float,
) -> tuple[int, float] | None:
    if duration is not None and run_time >= duration:
        return None
    step = int(run_time // step_time) + 1
    return min(users, step * step_users), spawn_rate
