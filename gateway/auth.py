"""Who is calling: API keys → :class:`Principal`, shared by the REST and gRPC transports.

:class:`KeyRing` holds the keys file's entries by key id. A presented key is checked once
(SHA-256, constant-time compare); the verified key → principal mapping is then kept in a
bounded LRU, so the hot path costs one dict lookup. ``reload_if_changed`` re-reads the file
when its mtime/inode/size change (called every few seconds by the guard, never per request),
and clears the LRU, so a removed key stops working within one reload interval.

The principal of the running request is in :data:`current_principal` (a ContextVar set by
the transport guard), e.g. for mapping ``tier`` onto Triton priorities.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from gateway.config import AuthSettings, RateLimitSettings
from gateway.errors import KeysFileError, PermissionDenied, Unauthenticated
from gateway.keys import KeyEntry, digest, key_id_of, load_keys_file

log = logging.getLogger(__name__)

MISSING_KEY = "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
INVALID_KEY = "the API key is not valid"
# Compared against when the key id is unknown, so unknown ids take as long as wrong secrets.
_DUMMY_DIGEST = digest("gw_00000000_unknown")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: a client, through one of its keys."""

    key_id: str
    client: str
    models: frozenset[str] | None
    """Allowed models; None = every model."""
    tier: str | None
    rate_per_s: float
    """Token-bucket rate for this client; 0 = unlimited (no Redis call)."""
    burst: int

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def check_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise PermissionDenied(f"this API key may not use model {model!r}", field="model")

    def check_feature_write(self, namespace: str, readers: Sequence[str]) -> None:
        """Writing an entity's features changes every reader's predictions (and retires their
        cached ones), so the key must be allowed to use every model that reads the namespace."""
        if self.models is None:
            return
        denied = sorted(set(readers) - self.models)
        if denied:
            raise PermissionDenied(
                f"this API key may not write features of namespace {namespace!r}: "
                f"model(s) {', '.join(map(repr, denied))} read them",
                field="namespace",
            )


@dataclass(frozen=True, slots=True)
class KeysUpdate:
    signature: tuple[int, int, int] | None
    entries: Sequence[KeyEntry]


ANONYMOUS = Principal("-", "anonymous", None, None, 0.0, 0)
"""Every request's principal when auth is explicitly disabled."""

current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


def principal_of(entry: KeyEntry, defaults: RateLimitSettings) -> Principal:
    """A key's limits, else the gateway's defaults; burst defaults to one second's worth."""
    if entry.rate_per_s is None:
        rate, burst = defaults.default_per_s, defaults.default_burst
    else:
        rate, burst = entry.rate_per_s, entry.burst or 0
    return Principal(
        key_id=entry.key_id,
        client=entry.client,
        models=entry.models,
        tier=entry.tier,
        rate_per_s=rate,
        burst=burst or max(1, math.ceil(rate)),
    )


class KeyRing:
    """The keys file in memory, plus the LRU of keys already verified."""

    def __init__(
        self,
        path: Path,
        entries: Sequence[KeyEntry],
        rate_defaults: RateLimitSettings,
        *,
        cache_size: int = 4096,
    ) -> None:
        self.path = path
        self._defaults = rate_defaults
        self._cache_size = max(1, cache_size)
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._entries: dict[str, tuple[bytes, Principal]] = {}
        self._signature = _signature(path)
        self._install(entries)

    @classmethod
    def load(cls, settings: AuthSettings, rate_defaults: RateLimitSettings) -> KeyRing:
        """Start-up: a missing or invalid keys file stops the gateway with a clear message."""
        if settings.keys_file is None:
            raise KeysFileError(
                "API keys are required (GATEWAY_AUTH__ENABLED=true) but GATEWAY_AUTH__KEYS_FILE "
                "is not set. Mint a key with `python -m gateway keys create --keys-file PATH "
                "--client NAME --models MODEL` and point GATEWAY_AUTH__KEYS_FILE at PATH, or set "
                "GATEWAY_AUTH__ENABLED=false to run without access control."
            )
        entries = load_keys_file(settings.keys_file)
        if not entries:
            log.warning(
                "API keys file %s holds no keys: every API call gets 401", settings.keys_file
            )
        return cls(settings.keys_file, entries, rate_defaults, cache_size=settings.cache_size)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, presented: str | None) -> Principal:
        """The principal of a presented key; Unauthenticated (one message) for any bad key."""
        if not presented:
            raise Unauthenticated(MISSING_KEY)
        principal = self._cache.get(presented)
        if principal is not None:
            self._cache.move_to_end(presented)
            return principal
        key_id = key_id_of(presented)
        if key_id is None:
            raise Unauthenticated(INVALID_KEY)
        found = self._entries.get(key_id)
        stored = _DUMMY_DIGEST if found is None else found[0]
        if not hmac.compare_digest(digest(presented), stored) or found is None:
            raise Unauthenticated(INVALID_KEY)
        principal = found[1]
        self._cache[presented] = principal
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    def reload_if_changed(self) -> bool:
        """Re-read the file when it changed on disk; a bad file keeps the current keys."""
        update = self.read_if_changed()
        if update is not None:
            self.apply(update)
        return update is not None

    def read_if_changed(self) -> KeysUpdate | None:
        """The file's new entries when it changed (no state is touched: safe in a thread)."""
        signature = _signature(self.path)
        if signature == self._signature:
            return None
        try:
            entries = load_keys_file(self.path)
        except KeysFileError as e:
            # Locking every client out because of a half-written Secret would be worse.
            log.error("API keys file not reloaded, keeping the current keys: %s", e)
            return None
        return KeysUpdate(signature, entries)

    def apply(self, update: KeysUpdate) -> None:
        """Swap in reloaded keys (on the event loop thread: the LRU is not thread-safe)."""
        self._signature = update.signature
        self._install(update.entries)
        log.warning("API keys file %s reloaded: %d keys", self.path, len(update.entries))

    def _install(self, entries: Sequence[KeyEntry]) -> None:
        self._entries = {e.key_id: (e.digest, principal_of(e, self._defaults)) for e in entries}
        self._cache.clear()


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows the ..data symlink a Kubernetes Secret mount swaps
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def check_caller_may_write(namespace: str, readers: Sequence[str]) -> None:
    principal = current_principal.get()
    if principal is not None:
        principal.check_feature_write(namespace, readers)


def caller_may_use(model: str) -> bool:
    """Whether the running request's key may use ``model`` (model listings show only those)."""
    principal = current_principal.get()
    return principal is None or principal.allows(model)
