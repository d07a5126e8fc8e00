"""Locust load test for the gateway's REST API, with an SLO gate.

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 2m \
        --host http://127.0.0.1:8080 --csv out/run --html out/report.html

Request types (each its own row in the stats, CSV and HTML report):

* ``predict:hit``   one entity from the pre-warmed hot set, ``cache: prefer`` → served from cache
* ``predict:miss``  one entity with ``cache: bypass`` or with request feature overrides → Triton
* ``predict:batch`` ``instances`` of ``--batch-size`` random entities (mixed hits and misses)

The hot set (``--hot-entities`` ids of the data set) is scored once at test start, outside the
stats, so hits are hits from the first request. ``--hit-ratio`` and ``--batch-ratio`` set the
task weights. Feature pushes are not part of the mix: the API has no feature-write endpoint yet.
The gRPC user is pending (the gRPC API is being built). Load shapes: loadtests/shapes.py.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from pathlib import Path
from typing import Any

import requests
import slo
from locust import FastHttpUser, constant_throughput, events
from locust.runners import WorkerRunner

MODEL = "fraud_scorer"
PREDICT_PATH = f"/v1/models/{MODEL}/predict"
DEFAULT_ENTITIES_FILE = Path(__file__).resolve().parents[1] / "data/demo/card_features.csv"
WARM_BATCH = 256  # the model's max_batch_size in config/models.yaml

slo.register(events)


@events.init_command_line_parser.add_listener
def _(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gateway mix (loadtests/locustfile.py)")
    group.add_argument(
        "--hit-ratio",
        type=float,
        default=0.8,
        help="share of single-entity requests that are cache hits (default: %(default)s)",
    )
    group.add_argument(
        "--batch-ratio",
        type=float,
        default=0.1,
        help="share of all requests that are batches (default: %(default)s)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="entities per batch request (default: %(default)s)",
    )
    group.add_argument(
        "--hot-entities",
        type=int,
        default=1000,
        help="entities pre-warmed at test start and used for hits (default: %(default)s)",
    )
    group.add_argument(
        "--entities-file",
        default=str(DEFAULT_ENTITIES_FILE),
        help="CSV whose first column holds the loaded entity ids (default: the demo data set)",
    )
    group.add_argument(
        "--user-rate",
        type=float,
        default=10.0,
        help="requests per second per user, 0 = as fast as possible (default: %(default)s)",
    )
    group.add_argument(
        "--shape",
        choices=("ramp", "step"),
        default="ramp",
        help="load shape, used only with -f loadtests/locustfile.py,loadtests/shapes.py",
    )
    group.add_argument(
        "--step-users", type=int, default=10, help="users added per step (--shape step)"
    )
    group.add_argument(
        "--step-time", default="30s", help="duration of each step, e.g. 30s (--shape step)"
    )
    parser.add_argument(  # on the parser, not the group: only it takes is_secret
        "--api-key",
        default=os.environ.get("GATEWAY_API_KEY", ""),
        is_secret=True,  # masked in the web UI
        help="gateway API key, sent as 'Authorization: Bearer' (default: env GATEWAY_API_KEY)",
    )
    group.add_argument(
        "--skip-warmup",
        action="store_true",
        default=False,
        help="do not pre-warm the hot set (it is already cached)",
    )


class Mix:
    """Entity ids and request weights, set once from the options in ``init``."""

    entities: list[str] = [f"card-{i:06d}" for i in range(1, 10_001)]
    hot: list[str] = entities[:1000]
    batch_size = 8
    headers: dict[str, str] = {}
    """The API key header, when one is given."""


def read_entity_ids(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        rows = csv.reader(fh)
        next(rows, None)  # header
        return [row[0] for row in rows if row]


def task_weights(hit_ratio: float, batch_ratio: float) -> tuple[int, int, int]:
    """(hit, miss, batch) integer weights out of 100."""
    if not (0 <= hit_ratio <= 1 and 0 <= batch_ratio <= 1):
        raise ValueError("--hit-ratio and --batch-ratio must be within [0, 1]")
    batch = round(100 * batch_ratio)
    hit = round((100 - batch) * hit_ratio)
    return hit, 100 - batch - hit, batch


@events.init.add_listener
def _(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    path = Path(options.entities_file)
    if path.exists():
        Mix.entities = read_entity_ids(path)
    rng = random.Random(7)
    Mix.hot = rng.sample(Mix.entities, min(options.hot_entities, len(Mix.entities)))
    Mix.batch_size = options.batch_size
    Mix.headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    hit, miss, batch = task_weights(options.hit_ratio, options.batch_ratio)
    RestUser.tasks = (
        [RestUser.predict_hit] * hit
        + [RestUser.predict_miss] * miss
        + [RestUser.predict_batch] * batch
    )


@events.test_start.add_listener
def _(environment: Any, **_kwargs: Any) -> None:
    """Score the hot set once (outside the stats) so ``predict:hit`` is a hit from the start."""
    options = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner) or options is None or options.skip_warmup:
        return
    url = (environment.host or "").rstrip("/") + PREDICT_PATH
    with requests.Session() as session:
        session.headers.update(Mix.headers)
        for start in range(0, len(Mix.hot), WARM_BATCH):
            chunk = Mix.hot[start : start + WARM_BATCH]
            body = {"instances": [{"entity_id": e} for e in chunk]}
            session.post(url, json=body, timeout=30).raise_for_status()


class RestUser(FastHttpUser):
    """One client app calling ``POST /v1/models/fraud_scorer/predict``."""

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        rate = options.user_rate if options is not None else 0.0
        # constant throughput: pace each user's loop to `rate` tasks per second
        return constant_throughput(rate)(self) if rate > 0 else 0.0

    def _post(self, name: str, body: dict[str, Any], expect: int) -> None:
        with self.client.post(
            PREDICT_PATH, json=body, name=name, headers=Mix.headers, catch_response=True
        ) as response:
            text = (response.text or "")[:200]
            if response.status_code != 200:
                # status 0: connection error, already carried by response.error
                response.failure(response.error or f"HTTP {response.status_code}: {text}")
                return
            try:
                payload = response.json()
            except ValueError:
                response.failure(f"not JSON: {text}")
                return
            got = len(payload.get("predictions", ())) if "instances" in body else 1
            if got != expect or ("instances" not in body and "scores" not in payload):
                response.failure(f"unexpected body: {text}")

    def predict_hit(self) -> None:
        self._post("predict:hit", {"entity_id": random.choice(Mix.hot)}, 1)

    def predict_miss(self) -> None:
        entity = random.choice(Mix.entities)
        if random.random() < 0.5:
            body: dict[str, Any] = {"entity_id": entity, "cache": "bypass"}
        else:
            amount = round(random.uniform(1, 2000), 2)
            body = {"entity_id": entity, "features": {"amount": amount}}
        self._post("predict:miss", body, 1)

    def predict_batch(self) -> None:
        chosen = random.sample(Mix.entities, Mix.batch_size)
        self._post("predict:batch", {"instances": [{"entity_id": e} for e in chosen]}, len(chosen))

    tasks = [predict_hit] * 72 + [predict_miss] * 18 + [predict_batch] * 10
