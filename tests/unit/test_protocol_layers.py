"""``benchmarks.protocol_layers`` times what it says: every request answered, each way."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks import protocol_layers
from gateway.api import http_protocol


@pytest.mark.parametrize("make", [protocol_layers.BareProtocol, protocol_layers.gateway_protocol])
async def test_each_protocol_answers_every_request_in_one_write(make: object) -> None:
    assert callable(make)
    spent = await protocol_layers.per_request_us(make, 200)
    assert spent > 0


async def test_the_gateway_protocol_hands_the_request_to_the_fast_path() -> None:
    protocol = protocol_layers.gateway_protocol()
    transport = protocol_layers.CountingTransport()
    protocol.connection_made(transport)
    assert isinstance(protocol, http_protocol.GatewayHttpProtocol)
    protocol.data_received(protocol_layers.REQUEST)
    assert type(protocol.cycle) is http_protocol._PredictCycle  # not uvicorn's ASGI cycle
    await asyncio.sleep(0)
    assert transport.writes == 1
    assert protocol.cycle.response_complete
