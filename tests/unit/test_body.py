"""A body the server buffered whole gets the same limit and errors as one read from ASGI."""

from __future__ import annotations

import pytest

from gateway.api.body import parse_buffered_json, read_json
from gateway.errors import BodyTooLarge, GatewayError, MalformedBody


async def errors_of_both(raw: bytes, limit: int) -> tuple[GatewayError, GatewayError]:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": raw, "more_body": False}

    with pytest.raises(GatewayError) as buffered:
        parse_buffered_json(raw, limit)
    with pytest.raises(GatewayError) as read:
        await read_json(receive, None, limit)
    return buffered.value, read.value


@pytest.mark.parametrize(
    ("raw", "limit", "error"),
    [
        (b'{"entity_id": "x"}', 10, BodyTooLarge),
        (b"", 10, MalformedBody),
        (b"{", 10, MalformedBody),
    ],
)
async def test_bad_bodies_fail_alike(raw: bytes, limit: int, error: type[GatewayError]) -> None:
    buffered, read = await errors_of_both(raw, limit)
    assert type(buffered) is type(read) is error
    assert (str(buffered), buffered.field) == (str(read), read.field)


def test_a_body_within_the_limit_is_parsed() -> None:
    assert parse_buffered_json(b'{"entity_id": "x"}', 18) == {"entity_id": "x"}
