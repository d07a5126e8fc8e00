"""API keys: their format, the keys file that holds their hashes, and ``python -m gateway keys``.

A key is ``gw_<key id>_<secret>``: the id (8 hex characters, not secret) names the file entry
to check, the secret is 32 random bytes (``secrets.token_urlsafe``). The file stores only
``sha256:<hex>`` of the whole key. A plain SHA-256 is enough *because* the secret is 256 random
bits: salts and slow hashes (bcrypt, argon2) defend low-entropy passwords against dictionary
and rainbow-table attacks, and no dictionary covers 2**256 values; a slow hash would only make
every new key cost milliseconds of CPU at the gateway. See docs/security.md.

The keys file (YAML; JSON is valid YAML) is mounted from a Secret::

    keys:
      - id: 3f9a1c2e
        client: checkout
        hash: sha256:9b74c9897bac770ffc029102a200c5de...
        models: [fraud_scorer]          # or ["*"]
        tier: premium                   # optional, exposed to the request context
        rate_limit: {per_s: 100, burst: 200}   # optional; per_s 0 = unlimited
        created: "2025-06-01T12:00:00Z" # optional, informational
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import math
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import KeysFileError

KEY_PREFIX = "gw"
ALL_MODELS = "*"
MAX_KEY_LENGTH = 128
"""Longer presented keys are rejected before hashing."""
_KEY_ID = re.compile(r"^[a-z0-9]{4,32}$")
_CLIENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_ENTRY_KEYS = frozenset({"id", "client", "hash", "models", "tier", "rate_limit", "created"})
_RATE_KEYS = frozenset({"per_s", "burst"})


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key as the keys file declares it (the key itself is never stored)."""

    key_id: str
    client: str
    digest: bytes
    """SHA-256 of the whole key."""
    models: frozenset[str] | None
    """Models this key may use; None = every model (``"*"``)."""
    tier: str | None = None
    rate_per_s: float | None = None
    """Tokens per second; None = the gateway's default, 0 = unlimited."""
    burst: int | None = None
    created: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.key_id,
            "client": self.client,
            "hash": f"sha256:{self.digest.hex()}",
            "models": [ALL_MODELS] if self.models is None else sorted(self.models),
        }
        if self.tier is not None:
            out["tier"] = self.tier
        if self.rate_per_s is not None:
            rate: dict[str, Any] = {"per_s": self.rate_per_s}
            if self.burst is not None:
                rate["burst"] = self.burst
            out["rate_limit"] = rate
        if self.created is not None:
            out["created"] = self.created
        return out


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id_of(key: str) -> str | None:
    """The id part of a well-formed key, else None (nothing about the secret is checked)."""
    if len(key) > MAX_KEY_LENGTH:
        return None
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not secret or not _KEY_ID.match(key_id):
        return None
    return key_id


def mint(
    client: str,
    models: Sequence[str],
    *,
    tier: str | None = None,
    rate_per_s: float | None = None,
    burst: int | None = None,
    taken_ids: Sequence[str] = (),
) -> tuple[str, KeyEntry]:
    """A new random key and its file entry; the key is returned once and never stored."""
    key_id = secrets.token_hex(4)
    while key_id in taken_ids:
        key_id = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    raw: dict[str, Any] = {
        "id": key_id,
        "client": client,
        "hash": f"sha256:{digest(key).hex()}",
        "models": list(models),
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if tier is not None:
        raw["tier"] = tier
    if rate_per_s is not None:
        raw["rate_limit"] = {"per_s": rate_per_s, **({"burst": burst} if burst else {})}
    # Through the parser, so a minted entry obeys exactly the rules a loaded one does.
    return key, parse_entry(raw, "new key")


# --- the keys file ------------------------------------------------------------------------


def load_keys_file(path: Path) -> list[KeyEntry]:
    """Read and validate the whole file; raises KeysFileError naming the bad entry."""
    try:
        text = path.read_text()
    except OSError as e:
        raise KeysFileError(f"cannot read API keys file {path}: {e.strerror}") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise KeysFileError(f"API keys file {path} is not valid YAML/JSON: {e}") from e
    return parse_keys(raw, str(path))


def parse_keys(raw: Any, where: str = "keys file") -> list[KeyEntry]:
    if raw is None:
        raw = {"keys": []}
    if not isinstance(raw, dict) or set(raw) - {"keys"} or not isinstance(raw.get("keys"), list):
        raise KeysFileError(f"{where}: top level must be a mapping with a 'keys' list")
    entries = [parse_entry(item, f"{where}: keys[{i}]") for i, item in enumerate(raw["keys"])]
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if entry.key_id in seen:
            raise KeysFileError(f"{where}: keys[{i}].id: duplicate key id {entry.key_id!r}")
        seen.add(entry.key_id)
    return entries


def parse_entry(raw: Any, where: str) -> KeyEntry:
    if not isinstance(raw, dict):
        raise KeysFileError(f"{where}: must be a mapping")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise KeysFileError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(_ENTRY_KEYS)}")
    key_id = _matching(raw.get("id"), _KEY_ID, f"{where}.id", "4-32 lowercase letters/digits")
    client = _matching(raw.get("client"), _CLIENT, f"{where}.client", "a client name")
    hash_text = _matching(raw.get("hash"), _HASH, f"{where}.hash", "'sha256:' + 64 hex digits")
    models_raw = raw.get("models")
    if (
        not isinstance(models_raw, list)
        or not models_raw
        or not all(isinstance(m, str) and m for m in models_raw)
    ):
        raise KeysFileError(f"{where}.models: must be a non-empty list of model names or ['*']")
    models = None if ALL_MODELS in models_raw else frozenset(models_raw)
    tier = raw.get("tier")
    if tier is not None:
        tier = _matching(tier, _TIER, f"{where}.tier", "a tier name")
    rate_per_s: float | None = None
    burst: int | None = None
    if raw.get("rate_limit") is not None:
        rate = raw["rate_limit"]
        if not isinstance(rate, dict) or set(rate) - _RATE_KEYS or "per_s" not in rate:
            raise KeysFileError(f"{where}.rate_limit: must be {{per_s: N, burst: M}}")
        rate_per_s = _non_negative(rate["per_s"], f"{where}.rate_limit.per_s")
        if rate.get("burst") is not None:
            burst_value = rate["burst"]
            if isinstance(burst_value, bool) or not isinstance(burst_value, int) or burst_value < 1:
                raise KeysFileError(f"{where}.rate_limit.burst: must be an integer >= 1")
            burst = burst_value
    created = raw.get("created")
    return KeyEntry(
        key_id=key_id,
        client=client,
        digest=bytes.fromhex(hash_text.removeprefix("sha256:")),
        models=models,
        tier=tier,
        rate_per_s=rate_per_s,
        burst=burst,
        created=None if created is None else str(created),
    )


def write_keys_file(path: Path, entries: Sequence[KeyEntry]) -> None:
    """Replace the file atomically (temp file + rename), readable by its owner only."""
    body = yaml.safe_dump({"keys": [e.as_dict() for e in entries]}, sort_keys=False)
    header = (
        "# Gateway API keys: hashes only (python -m gateway keys create shows each key once).\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(header + body)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _matching(value: Any, pattern: re.Pattern[str], where: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise KeysFileError(f"{where}: must be {what}, got {value!r}")
    return value


def _non_negative(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KeysFileError(f"{where}: must be a number, got {value!r}")
    if value < 0:
        raise KeysFileError(f"{where}: must be >= 0, got {value!r}")
    return float(value)


# --- CLI: python -m gateway keys create | list | revoke ----------------------------------


def add_keys_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="mint, list and revoke API keys (hashes only)")
    keys.add_argument(
        "--keys-file", type=Path, help="keys file (default: env GATEWAY_AUTH__KEYS_FILE)"
    )
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="mint a key, print it once, append its hash")
    create.add_argument("--client", required=True, help="client (app) the key belongs to")
    create.add_argument(
        "--models",
        nargs="+",
        required=True,
        help="models the key may use, or '*' for every model",
    )
    create.add_argument("--tier", help="client tier, e.g. premium (exposed to the service)")
    create.add_argument(
        "--rate-limit", type=float, help="requests per second for this client (0 = unlimited)"
    )
    create.add_argument("--burst", type=int, help="bucket size (default: one second's worth)")
    listing = actions.add_parser("list", help="list key ids, clients, models (never keys)")
    revoke = actions.add_parser("revoke", help="remove a key by its id")
    revoke.add_argument("--id", required=True, dest="key_id")
    for action in (create, listing, revoke):
        # also accepted after the action; SUPPRESS keeps a value given before it
        action.add_argument("--keys-file", type=Path, default=argparse.SUPPRESS)


def run_keys(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> int:
    path: Path | None = args.keys_file or (
        Path(env["GATEWAY_AUTH__KEYS_FILE"]) if env.get("GATEWAY_AUTH__KEYS_FILE") else None
    )
    if path is None:
        print("error: give --keys-file or set GATEWAY_AUTH__KEYS_FILE", file=sys.stderr)
        return 2
    try:
        entries = load_keys_file(path) if path.exists() else []
        if args.keys_command == "create":
            key, entry = mint(
                args.client,
                args.models,
                tier=args.tier,
                rate_per_s=args.rate_limit,
                burst=args.burst,
                taken_ids=[e.key_id for e in entries],
            )
            write_keys_file(path, [*entries, entry])
            print(key)
            print(
                f"key {entry.key_id} for client {entry.client!r} added to {path}; the key is "
                "shown only now. Send it as 'Authorization: Bearer <key>' or 'X-API-Key'.",
                file=sys.stderr,
            )
        elif args.keys_command == "list":
            for e in entries:
                models = ",".join(sorted(e.models)) if e.models is not None else ALL_MODELS
                rate = "default" if e.rate_per_s is None else f"{e.rate_per_s:g}/s"
                print(
                    f"{e.key_id}  client={e.client}  models={models}  tier={e.tier or '-'}  "
                    f"rate={rate}  created={e.created or '-'}"
                )
        else:
            kept = [e for e in entries if e.key_id != args.key_id]
            if len(kept) == len(entries):
                print(f"error: no key with id {args.key_id!r} in {path}", file=sys.stderr)
                return 1
            write_keys_file(path, kept)
            print(f"key {args.key_id} removed from {path}", file=sys.stderr)
    except KeysFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
