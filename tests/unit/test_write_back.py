"""Write-backs of real-time scores: after the answer, one call per batch, failures logged once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.errors import FeatureStoreUnavailable
from gateway.spec import ModelSpec
from gateway.store import EntityRecord
from tests.unit.test_predict_entity import (
    ENTITY,
    HalvingTriton,
    OneRecordStore,
    record,
    service_for,
    spec_with,
)


class FailingWrites(OneRecordStore):
    def __init__(self, record: EntityRecord | None) -> None:
        super().__init__(record)
        self.write_calls = 0

    async def write_predictions(self, spec: ModelSpec, entries: Any) -> None:
        self.write_calls += 1
        raise FeatureStoreUnavailable("prediction cache write failed")


async def test_a_failed_write_back_is_logged_once_per_call_and_changes_no_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = spec_with()
    store = FailingWrites(record(None))
    service = service_for(spec, store, HalvingTriton())
    with caplog.at_level(logging.WARNING, logger="gateway.service"):
        answers = await asyncio.gather(
            service.predict_entity(spec, ENTITY),
            service.predict_entity(spec, ENTITY + "-2", mode="bypass"),
        )
        await service.drain()
    assert [a.source for a in answers] == ["model", "model"]  # type: ignore[union-attr]
    assert store.write_calls == 1  # the two misses' write-backs made one call
    failures = [r for r in caplog.records if r.getMessage() == "prediction write-back failed"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.WARNING
    assert failures[0].__dict__["predictions"] == 2
