"""gateway.guard + the REST middleware, around a stand-in ASGI app (no servers needed).

The real gateway process is exercised in tests/integration/test_access.py and test_overload.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from gateway.api.middleware import HEALTH_PATHS, GuardMiddleware
from gateway.auth import ANONYMOUS, current_principal
from gateway.config import AuthSettings, LimitSettings, Settings
from gateway.guard import Guard, InFlightLimit
from gateway.keys import mint, write_keys_file


class StandIn:
    """Answers 200 with the principal's client; ``hold`` keeps API requests in flight."""

    def __init__(self) -> None:
        self.hold = asyncio.Event()
        self.hold.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] not in HEALTH_PATHS:
            await self.hold.wait()
        principal = current_principal.get()
        body = orjson.dumps({"client": principal.client if principal else None})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    full_key, full = mint("full", ["*"])
    narrow_key, narrow = mint("narrow", ["fraud_scorer"], tier="premium")
    write_keys_file(tmp_path / "keys.yaml", [full, narrow])
    return {"full": full_key, "narrow": narrow_key, "path": str(tmp_path / "keys.yaml")}


def guard_for(keys: dict[str, str], max_in_flight: int = 2) -> Guard:
    settings = Settings(
        auth=AuthSettings(keys_file=Path(keys["path"])),
        limits=LimitSettings(max_in_flight=max_in_flight),
    )
    return Guard.from_settings(settings)


@pytest.fixture
async def stack(
    keys: dict[str, str],
) -> AsyncIterator[tuple[httpx.AsyncClient, Guard, StandIn]]:
    guard, app = guard_for(keys), StandIn()
    transport = httpx.ASGITransport(
        app=GuardMiddleware(app, guard=guard, public_paths=HEALTH_PATHS)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client, guard, app


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_valid_key_reaches_the_app_with_its_principal(stack, keys) -> None:
    client, guard, _ = stack
    by_bearer = await client.get("/v1/models", headers=bearer(keys["full"]))
    by_header = await client.get("/v1/models", headers={"X-API-Key": keys["narrow"]})
    lowercase = await client.get("/v1/models", headers={"authorization": f"bearer {keys['full']}"})

    assert by_bearer.json() == {"client": "full"}
    assert by_header.json() == {"client": "narrow"}
    assert lowercase.status_code == 200
    assert guard.in_flight.in_flight == 0


async def test_missing_key_is_401_problem_with_a_challenge(stack) -> None:
    client, guard, _ = stack
    response = await client.post("/v1/models/fraud_scorer/predict", json={})

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["type"] == "urn:gateway:error:Unauthenticated"
    assert guard.in_flight.in_flight == 0


async def test_basic_auth_is_not_an_api_key(stack, keys) -> None:
    client, _, _ = stack
    response = await client.get("/v1/models", headers={"Authorization": f"Basic {keys['full']}"})
    assert response.status_code == 401


async def test_model_outside_the_allow_list_is_403(stack, keys) -> None:
    client, _, _ = stack
    denied = await client.post("/v1/models/credit_limit/predict", headers=bearer(keys["narrow"]))
    info = await client.get("/v1/models/credit_limit", headers=bearer(keys["narrow"]))
    allowed = await client.post("/v1/models/fraud_scorer/predict", headers=bearer(keys["narrow"]))

    assert denied.status_code == 403
    assert denied.json()["field"] == "model"
    assert info.status_code == 403
    assert allowed.status_code == 200


@pytest.mark.parametrize("path", sorted(HEALTH_PATHS))
async def test_health_and_metrics_need_no_key(stack, path: str) -> None:
    client, _, _ = stack
    assert (await client.get(path)).status_code == 200


async def test_beyond_the_bound_requests_are_shed_but_health_is_not(stack, keys) -> None:
    client, guard, app = stack
    app.hold.clear()
    held = [
        asyncio.create_task(client.get("/v1/models", headers=bearer(keys["full"])))
        for _ in range(2)
    ]
    for _ in range(500):  # both requests admitted and held in the app
        if guard.in_flight.in_flight == 2:
            break
        await asyncio.sleep(0.002)

    shed = await client.get("/v1/models", headers=bearer(keys["full"]))
    unauthenticated = await client.get("/v1/models")  # shed first: no key check at all
    health = await client.get("/healthz")
    app.hold.set()
    answers = await asyncio.gather(*held)

    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "1"
    assert shed.json()["type"] == "urn:gateway:error:Overloaded"
    assert unauthenticated.status_code == 503
    assert health.status_code == 200
    assert [a.status_code for a in answers] == [200, 200]
    assert guard.in_flight.in_flight == 0


async def test_an_app_error_still_releases_the_slot(keys) -> None:
    guard = guard_for(keys)

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    middleware = GuardMiddleware(broken, guard=guard, public_paths=HEALTH_PATHS)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        with pytest.raises(RuntimeError):
            await client.get("/v1/models", headers=bearer(keys["full"]))
    assert guard.in_flight.in_flight == 0


def test_auth_disabled_makes_everyone_anonymous() -> None:
    guard = Guard.from_settings(Settings(auth=AuthSettings(enabled=False)))
    assert guard.keyring is None
    assert guard.authenticate(None, "any_model") is ANONYMOUS


def test_in_flight_limit_zero_is_unbounded() -> None:
    limit = InFlightLimit(0)
    assert all(limit.try_acquire() for _ in range(10_000))
    bounded = InFlightLimit(1)
    assert bounded.try_acquire()
    assert not bounded.try_acquire()
    bounded.release()
    assert bounded.try_acquire()
