"""loadtests/mix.py: the request mix both Locust users draw from (weights, entities, pushes)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from gateway.spec import load_specs
from gateway.validation import parse_feature_update
from loadtests.mix import (
    BATCH,
    HIT,
    MISS,
    NAMESPACE,
    PUSH,
    default_grpc_target,
    draw_batch,
    draw_hit,
    draw_miss,
    draw_push,
    entity_pool,
    grpc_weights,
    read_entity_ids,
    sent_names,
    task_weights,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "config/models.yaml"
DEMO_FEATURES = ROOT / "data/demo/card_features.csv"
IDS = [f"card-{i:06d}" for i in range(1, 101)]


def test_weights_split_pushes_and_batches_off_all_requests_and_hits_off_the_rest() -> None:
    weights = task_weights(hit_ratio=0.8, batch_ratio=0.1, push_ratio=0.05)

    assert weights == {HIT: 680, MISS: 170, BATCH: 100, PUSH: 50}
    assert sum(weights.values()) == 1000


def test_small_ratios_keep_a_share() -> None:
    assert task_weights(0.8, 0.1, 0.002)[PUSH] == 2


def test_grpc_weights_are_the_predictions_without_pushes() -> None:
    assert grpc_weights(0.8, 0.1) == {
        "grpc:predict:hit": 720,
        "grpc:predict:miss": 180,
        "grpc:predict:batch": 100,
    }


def test_only_types_with_weight_are_sent() -> None:
    assert sent_names(task_weights(1.0, 0.0, 0.0)) == {HIT}
    assert sent_names(task_weights(0.5, 0.1, 0.1)) == {HIT, MISS, BATCH, PUSH}


@pytest.mark.parametrize(
    ("hit", "batch", "push", "message"),
    [
        (1.5, 0.1, 0.0, "--hit-ratio"),
        (0.8, -0.1, 0.0, "--batch-ratio"),
        (0.8, 0.1, 2.0, "--push-ratio"),
        (0.8, 0.6, 0.5, "must not exceed 1"),
    ],
)
def test_bad_ratios_are_rejected(hit: float, batch: float, push: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        task_weights(hit, batch, push)


def test_pool_keeps_pushes_off_the_hot_set_and_is_the_same_in_every_process() -> None:
    pool = entity_pool(IDS, 30)

    assert len(pool.hot) == 30
    assert set(pool.cold) == set(IDS) - set(pool.hot)
    assert entity_pool(IDS, 30).hot == pool.hot  # fixed seed: --processes workers agree


def test_pool_pushes_to_the_hot_set_when_it_covers_every_id() -> None:
    pool = entity_pool(IDS, 500)

    assert sorted(pool.hot) == IDS
    assert pool.cold == pool.hot
    with pytest.raises(ValueError, match="empty"):
        entity_pool([], 10)


def test_draws() -> None:
    pool, rng = entity_pool(IDS, 10), random.Random(3)

    assert all(draw_hit(pool, rng).entity_ids[0] in pool.hot for _ in range(50))
    misses = [draw_miss(pool, rng) for _ in range(200)]
    # every miss reaches Triton: a bypass or a what-if override, never a plain cached read
    assert all(m.bypass != bool(m.features) for m in misses)
    assert {m.bypass for m in misses} == {True, False}
    batch = draw_batch(pool, rng, 8)
    assert len(set(batch.entity_ids)) == 8
    assert not batch.bypass
    assert len(draw_batch(entity_pool(IDS[:3], 1), rng, 8).entity_ids) == 3


def test_pushes_pass_the_gateways_own_validation_with_a_current_event_time() -> None:
    specs = [s for s in load_specs(SPEC_PATH).values() if s.entity_namespace == NAMESPACE]
    pool, rng, now = entity_pool(IDS, 10), random.Random(5), time.time()

    for _ in range(500):
        entity, body = draw_push(pool, rng, now)
        update = parse_feature_update(specs, {**body, "entity_id": entity}, "", now=now)
        assert entity in pool.cold
        assert update.event_time == pytest.approx(now, abs=0.001)
    assert body["features"]["hour_of_day"] == time.gmtime(now).tm_hour


def test_demo_entities_file_is_read_without_its_header() -> None:
    ids = read_entity_ids(DEMO_FEATURES)

    assert ids[0] == "card-000001"
    assert len(ids) == 10_000


@pytest.mark.parametrize(
    ("host", "target"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:50051"),
        ("https://gateway.prod.svc.cluster.local", "gateway.prod.svc.cluster.local:50051"),
        ("http://[::1]:8080", "[::1]:50051"),
        ("", "127.0.0.1:50051"),
        (None, "127.0.0.1:50051"),
    ],
)
def test_grpc_target_defaults_to_the_rest_hosts_name(host: str | None, target: str) -> None:
    assert default_grpc_target(host) == target
