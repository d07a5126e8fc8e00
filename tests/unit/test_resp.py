"""The pre-packed commands are byte for byte what redis-py would send."""

from __future__ import annotations

from redis.asyncio.connection import Connection

from gateway.resp import HmgetCommand, pack_get, pack_set_ex

PACKER = Connection()


def packed(*args: object) -> bytes:
    return b"".join(PACKER.pack_command(*args))


def test_hmget_matches_redis_py() -> None:
    fields = ["amount", "hour_of_day", "_ts", "é"]
    assert HmgetCommand(fields).pack("gw:f:card:card-1") == packed(
        "HMGET", "gw:f:card:card-1", *fields
    )


def test_get_and_set_ex_match_redis_py() -> None:
    assert pack_get("gw:p:m:1:e") == packed("GET", "gw:p:m:1:e")
    value = b'{"s":[0.5],"v":"1"}\r\n binary \x00'
    assert pack_set_ex("gw:p:m:1:e", value, 3600) == packed("SET", "gw:p:m:1:e", value, "EX", 3600)
