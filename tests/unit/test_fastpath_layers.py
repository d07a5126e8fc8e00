"""``benchmarks.fastpath_layers`` times what it says: its hit case answers a fresh hit."""

from __future__ import annotations

import orjson

from benchmarks import fastpath_layers


def test_the_hit_case_answers_its_cached_prediction_from_the_cache() -> None:
    answer = fastpath_layers.answer_from_record()
    assert answer.status == 200
    body = orjson.loads(answer.body)
    assert body["source"] == "cache"
    assert body["scores"] == {"fraud_probability": 0.25}
    assert body["entity_id"] == "card-000001"


async def test_every_case_is_timed() -> None:
    results = await fastpath_layers.measure(requests=20, rounds=1)
    assert "a hit from its lookup's reply" in results
    assert all(len(rounds) == 1 and rounds[0] > 0 for rounds in results.values())
