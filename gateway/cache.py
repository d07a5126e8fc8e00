"""Prediction cache layout: keys, the stored record, and the freshness rule.

Keys carry model name AND version (``gw:p:<model>:<version>:<entity>``) so a new model
version never serves an old version's answers. The record remembers when it was scored and
the event time of the features it was computed from, so newer stored features retire it.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import orjson

from gateway.spec import ServingPolicy

PREDICTION_PREFIX = "gw:p"


def prediction_key(model: str, version: str, entity_id: str) -> str:
    return f"{PREDICTION_PREFIX}:{model}:{version}:{entity_id}"


class CachedPrediction(NamedTuple):
    """Immutable like a frozen dataclass, built in half the time (~0.8 against ~1.6 µs here):
    one is built for every lookup that finds a cached answer and every write-back."""

    scores: tuple[float, ...]
    """One value per declared output, in spec order."""
    model_version: str
    scored_at: float
    """Unix time the prediction was computed."""
    features_at: float | None
    """Event time of the stored features it was computed from (None: none were stored)."""

    def encode(self) -> bytes:
        return orjson.dumps(
            {"s": self.scores, "v": self.model_version, "t": self.scored_at, "f": self.features_at}
        )

    @classmethod
    def decode(cls, raw: bytes) -> CachedPrediction | None:
        """None for a record this gateway cannot read (treated as a miss, then overwritten)."""
        try:
            body = orjson.loads(raw)
            scores = body["s"]
            if not isinstance(scores, list):
                return None
            features_at = body.get("f")
            return cls(
                tuple(map(float, scores)),
                str(body["v"]),
                float(body["t"]),
                None if features_at is None else float(features_at),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def usability(
        self, *, now: float, version: str, policy: ServingPolicy, features_at: float | None
    ) -> Usability:
        """Which rung of the ladder may serve this record now.

        Never usable: another model version, or features stored after it was computed (its
        inputs are out of date). Otherwise by age: fresh, stale-while-revalidate, fallback-only.
        """
        if self.model_version != version:
            return Usability.UNUSABLE
        if features_at is not None and (self.features_at is None or features_at > self.features_at):
            return Usability.UNUSABLE
        age = now - self.scored_at
        if age <= policy.max_age_s:
            return Usability.FRESH
        if age <= policy.max_age_s + policy.stale_while_revalidate_s:
            return Usability.REVALIDATE
        if age <= policy.max_staleness_s:
            return Usability.FALLBACK
        return Usability.UNUSABLE


class Usability(enum.Enum):
    FRESH = "fresh"
    REVALIDATE = "revalidate"
    """Serve flagged stale and refresh in the background."""
    FALLBACK = "fallback"
    """Serve (flagged) only when real-time scoring fails."""
    UNUSABLE = "unusable"
