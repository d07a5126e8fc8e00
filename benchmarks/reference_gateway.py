"""A straightforward reference gateway: how a team would first write it.

FastAPI + a pydantic request model + redis-py asyncio (HGETALL and GET as separate awaits)
+ ``tritonclient.grpc.aio``. Same model, inputs and cache semantics as the real gateway,
roughly (fresh = same version, younger than max staleness, not older than the features).
Only the single-entity predict route; used by ``python -m benchmarks.run`` as baseline (d).

Run: ``REF_REDIS_URL=... REF_TRITON_URL=host:port uvicorn benchmarks.reference_gateway:app``
"""

from __future__ import annotations

import json
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import redis.asyncio as aioredis
import tritonclient.grpc.aio as grpcclient
import yaml
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((ROOT / "config/models.yaml").read_text())["models"]["fraud_scorer"]
FEATURES = [f["name"] for f in SPEC["features"]]
DEFAULTS = {f["name"]: f.get("default") for f in SPEC["features"]}
VERSION = SPEC["triton"]["version"]
TTL_S = SPEC["cache"]["ttl_s"]
MAX_STALENESS_S = SPEC["cache"]["max_age_s"]

state: dict[str, object] = {}


@asynccontextmanager
async def lifespan(_: FastAPI):
    state["redis"] = aioredis.from_url(os.environ["REF_REDIS_URL"])
    state["triton"] = grpcclient.InferenceServerClient(os.environ["REF_TRITON_URL"])
    yield
    await state["triton"].close()  # type: ignore[attr-defined]
    await state["redis"].aclose()  # type: ignore[attr-defined]


app = FastAPI(lifespan=lifespan)


class PredictRequest(BaseModel):
    entity_id: str
    features: dict[str, float] | None = None
    cache: Literal["prefer", "bypass", "only"] = "prefer"


class PredictResponse(BaseModel):
    model: str
    model_version: str
    entity_id: str
    scores: dict[str, float]
    source: str
    prediction_age_s: float


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/models/{model}/predict", response_model=PredictResponse)
async def predict(model: str, req: PredictRequest) -> PredictResponse:
    if model != "fraud_scorer":
        raise HTTPException(404, "unknown model")
    r: aioredis.Redis = state["redis"]  # type: ignore[assignment]
    stored = await r.hgetall(f"gw:f:card:{req.entity_id}")
    features_at = float(stored[b"_ts"]) if b"_ts" in stored else None
    cache_key = f"gw:p:fraud_scorer:{VERSION}:{req.entity_id}"
    now = time.time()
    if req.cache != "bypass" and not req.features:
        raw = await r.get(cache_key)
        if raw is not None:
            cached = json.loads(raw)
            fresh = (
                cached["v"] == VERSION
                and now - cached["t"] <= MAX_STALENESS_S
                and (features_at is None or (cached["f"] or 0) >= features_at)
            )
            if fresh:
                return PredictResponse(
                    model=model,
                    model_version=VERSION,
                    entity_id=req.entity_id,
                    scores={"fraud_probability": cached["s"][0]},
                    source="cache",
                    prediction_age_s=now - cached["t"],
                )
    if req.cache == "only":
        raise HTTPException(404, "no cached prediction")
    values = []
    for name in FEATURES:
        if req.features and name in req.features:
            values.append(req.features[name])
        elif name.encode() in stored:
            values.append(float(stored[name.encode()]))
        elif DEFAULTS[name] is not None:
            values.append(float(DEFAULTS[name]))
        else:
            raise HTTPException(422, f"missing feature {name}")
    tensor = np.array([values], dtype=np.float32)
    inp = grpcclient.InferInput("features", list(tensor.shape), "FP32")
    inp.set_data_from_numpy(tensor)
    client: grpcclient.InferenceServerClient = state["triton"]  # type: ignore[assignment]
    result = await client.infer(
        "fraud_scorer",
        [inp],
        model_version=VERSION,
        outputs=[grpcclient.InferRequestedOutput("fraud_probability")],
    )
    score = float(result.as_numpy("fraud_probability")[0, 0])
    if not req.features:
        body = {"s": [score], "v": VERSION, "t": time.time(), "f": features_at}
        await r.set(cache_key, json.dumps(body), ex=TTL_S)
    return PredictResponse(
        model=model,
        model_version=VERSION,
        entity_id=req.entity_id,
        scores={"fraud_probability": score},
        source="model",
        prediction_age_s=0.0,
    )
