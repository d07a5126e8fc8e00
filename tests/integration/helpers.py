"""Test helpers: arrange Redis state, compute reference scores, read Triton statistics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import redis
import yaml

from gateway.spec import ModelSpec, load_specs

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILE = ROOT / "config/models.yaml"


@cache
def fraud_spec() -> ModelSpec:
    return load_specs(ROOT / "config/models.yaml")["fraud_scorer"]


@cache
def _session() -> ort.InferenceSession:
    return ort.InferenceSession(
        str(ROOT / "model_repository/fraud_scorer/1/model.onnx"),
        providers=["CPUExecutionProvider"],
    )


def reference_score(values: Mapping[str, float]) -> float:
    """The model's own answer for a full feature row, computed without the gateway."""
    spec = fraud_spec()
    row = np.array([[float(values[f.name]) for f in spec.features]], dtype=np.float32)
    out = _session().run(["fraud_probability"], {"features": row})[0]
    return float(out[0, 0])


def with_defaults(values: Mapping[str, float]) -> dict[str, float]:
    spec = fraud_spec()
    full = {f.name: f.default for f in spec.features if f.default is not None}
    full.update(values)
    return full  # type: ignore[return-value]


TYPICAL = {
    "amount": 42.5,
    "hour_of_day": 14,
    "merchant_category_risk": 0.2,
    "distance_from_home_km": 3.0,
    "distance_from_last_txn_km": 1.5,
    "card_present": 1,
    "is_online": 0,
    "foreign_transaction": 0,
    "txn_count_1h": 1,
    "txn_count_24h": 4,
    "avg_amount_30d": 55.0,
    "account_age_days": 900,
    "failed_auth_24h": 0,
    "chargebacks_365d": 0,
}


def put_features(
    kv: redis.Redis, entity_id: str, values: Mapping[str, float], written_at: float | None = None
) -> float:
    written_at = time.time() if written_at is None else written_at
    mapping = {k: repr(float(v)) for k, v in values.items()}
    mapping["_ts"] = repr(written_at)
    kv.hset(f"gw:f:card:{entity_id}", mapping=mapping)  # type: ignore[arg-type]
    return written_at


def cached(kv: redis.Redis, entity_id: str, version: str = "1") -> dict[str, object] | None:
    raw = kv.get(f"gw:p:fraud_scorer:{version}:{entity_id}")
    return None if raw is None else orjson.loads(raw)  # type: ignore[arg-type]


def put_cached(
    kv: redis.Redis,
    entity_id: str,
    score: float,
    scored_at: float,
    *,
    version: str = "1",
    features_at: float | None = None,
) -> None:
    body = {"s": [score], "v": version, "t": scored_at, "f": features_at}
    kv.set(f"gw:p:fraud_scorer:{version}:{entity_id}", orjson.dumps(body), ex=3600)


def triton_counts(http_url: str, model: str = "fraud_scorer") -> tuple[int, int]:
    """(inference_count, execution_count) from Triton's statistics extension."""
    stats = httpx.get(f"{http_url}/v2/models/{model}/stats", timeout=5).json()
    model_stats = stats["model_stats"][0]
    return int(model_stats["inference_count"]), int(model_stats["execution_count"])


def spec_variant(directory: Path, **changes: dict[str, object] | None) -> Path:
    """A copy of the shipped model spec with sections of fraud_scorer replaced (None: removed)."""
    raw = yaml.safe_load(SPEC_FILE.read_text())
    body = raw["models"]["fraud_scorer"]
    for section, value in changes.items():
        if value is None:
            body.pop(section, None)
        else:
            body[section] = value
    path = directory / "models.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
