"""Prediction cache layout: keys, the stored record, and the freshness rule.

Keys carry model name AND version (``gw:p:<model>:<version>:<entity>``) so a new model
version never serves an old version's answers. The record remembers when it was scored and
the write time of the features it was computed from, so newer stored features make it stale.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

PREDICTION_PREFIX = "gw:p"


def prediction_key(model: str, version: str, entity_id: str) -> str:
    return f"{PREDICTION_PREFIX}:{model}:{version}:{entity_id}"


@dataclass(frozen=True, slots=True)
class CachedPrediction:
    scores: tuple[float, ...]
    """One value per declared output, in spec order."""
    model_version: str
    scored_at: float
    """Unix time the prediction was computed."""
    features_at: float | None
    """Write time of the stored features it was computed from (None: none were stored)."""

    def encode(self) -> bytes:
        return orjson.dumps(
            {"s": self.scores, "v": self.model_version, "t": self.scored_at, "f": self.features_at}
        )

    @classmethod
    def decode(cls, raw: bytes) -> CachedPrediction | None:
        """None for a record this gateway cannot read (treated as a miss, then overwritten)."""
        try:
            body = orjson.loads(raw)
            if not isinstance(body["s"], list):
                return None
            return cls(
                scores=tuple(float(s) for s in body["s"]),
                model_version=str(body["v"]),
                scored_at=float(body["t"]),
                features_at=None if body.get("f") is None else float(body["f"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def is_fresh(
        self, *, now: float, version: str, max_staleness_s: float, features_at: float | None
    ) -> bool:
        """Servable: same model version, young enough, and not older than its features."""
        if self.model_version != version or now - self.scored_at > max_staleness_s:
            return False
        if features_at is None:
            return True
        return self.features_at is not None and features_at <= self.features_at
