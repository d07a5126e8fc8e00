"""The feature push (REST) keeps the namespace's id index, in the same call as the hash."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import redis

pytestmark = pytest.mark.integration
INDEX = "gw:fi:card"


def new_id() -> str:
    return f"card-i{uuid.uuid4().hex[:12]}"


def test_feature_push_adds_the_entity_to_the_index(client: httpx.Client, kv: redis.Redis) -> None:
    entity = new_id()
    now = time.time()

    pushed = client.put(
        f"/v1/features/card/{entity}", json={"features": {"amount": 10.0}, "event_time": now}
    )
    late = client.put(
        f"/v1/features/card/{entity}",
        json={"features": {"amount": 99.0}, "event_time": now - 60},
    )

    assert pushed.json()["applied"] is True
    assert late.json()["applied"] is False
    assert kv.zscore(INDEX, entity) == 0.0  # all scores 0: the index is in id order
    assert kv.exists(f"gw:f:card:{entity}") == 1


def test_bulk_push_indexes_every_entity_or_none(client: httpx.Client, kv: redis.Redis) -> None:
    a, b, c = new_id(), new_id(), new_id()

    rejected = client.post(
        "/v1/features/card",
        json={
            "updates": [
                {"entity_id": c, "features": {"amount": 1.0}},
                {"entity_id": b, "features": {"amount": -1}},
            ]
        },
    )
    accepted = client.post(
        "/v1/features/card",
        json={
            "updates": [
                {"entity_id": a, "features": {"amount": 12.5}},
                {"entity_id": b, "features": {"txn_count_1h": 3}},
            ]
        },
    )

    assert rejected.status_code == 422
    assert accepted.json()["applied"] == 2
    assert kv.zmscore(INDEX, [a, b, c]) == [0.0, 0.0, None]
