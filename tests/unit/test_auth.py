"""gateway.auth: key verification, the LRU, reloads, allow-lists and rate-limit defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.auth import INVALID_KEY, MISSING_KEY, KeyRing, principal_of
from gateway.config import AuthSettings, RateLimitSettings
from gateway.errors import KeysFileError, PermissionDenied, Unauthenticated
from gateway.keys import KeyEntry, mint, write_keys_file

DEFAULTS = RateLimitSettings()


def ring_with(tmp_path: Path, *entries: KeyEntry, cache_size: int = 4096) -> KeyRing:
    path = tmp_path / "keys.yaml"
    write_keys_file(path, list(entries))
    return KeyRing.load(AuthSettings(keys_file=path, cache_size=cache_size), DEFAULTS)


def unauthenticated(ring: KeyRing, presented: str | None) -> str:
    with pytest.raises(Unauthenticated) as info:
        ring.authenticate(presented)
    return info.value.detail


def test_valid_key_gives_its_principal(tmp_path: Path) -> None:
    key, entry = mint("checkout", ["fraud_scorer"], tier="premium")
    principal = ring_with(tmp_path, entry).authenticate(key)

    assert (principal.client, principal.key_id, principal.tier) == (
        "checkout",
        entry.key_id,
        "premium",
    )
    assert principal.allows("fraud_scorer")
    assert not principal.allows("other")


def test_missing_and_bad_keys_get_one_message_each(tmp_path: Path) -> None:
    key, entry = mint("checkout", ["*"])
    ring = ring_with(tmp_path, entry)
    other_key, _ = mint("checkout", ["*"])  # well-formed, unknown id

    assert unauthenticated(ring, None) == MISSING_KEY
    assert unauthenticated(ring, "") == MISSING_KEY
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for presented in (wrong_secret, other_key, "not-a-key", key + "x"):
        assert unauthenticated(ring, presented) == INVALID_KEY


def test_verified_keys_are_cached_within_a_bound(tmp_path: Path) -> None:
    minted = [mint(f"c{i}", ["*"]) for i in range(5)]
    ring = ring_with(tmp_path, *(e for _, e in minted), cache_size=3)

    for key, _ in minted:
        ring.authenticate(key)

    assert len(ring._cache) == 3
    assert list(ring._cache) == [k for k, _ in minted[2:]]
    # an evicted key is simply verified again
    assert ring.authenticate(minted[0][0]).client == "c0"


def test_reload_adds_and_revokes_keys_and_clears_the_cache(tmp_path: Path) -> None:
    old_key, old = mint("checkout", ["*"])
    ring = ring_with(tmp_path, old)
    ring.authenticate(old_key)
    assert ring.reload_if_changed() is False  # unchanged file: nothing read

    new_key, new = mint("checkout", ["*"])
    write_keys_file(ring.path, [old, new])
    assert ring.reload_if_changed() is True
    assert ring.authenticate(new_key).key_id == new.key_id
    assert ring.authenticate(old_key).key_id == old.key_id

    write_keys_file(ring.path, [new])
    assert ring.reload_if_changed() is True
    assert unauthenticated(ring, old_key) == INVALID_KEY  # even though it was cached
    assert ring.authenticate(new_key).key_id == new.key_id


def test_a_broken_file_keeps_the_current_keys(tmp_path: Path) -> None:
    key, entry = mint("checkout", ["*"])
    ring = ring_with(tmp_path, entry)
    ring.path.write_text("keys: [{id: x")
    os.utime(ring.path, ns=(1, 1))

    assert ring.reload_if_changed() is False
    assert ring.authenticate(key).client == "checkout"


def test_auth_without_a_keys_file_refuses_to_start() -> None:
    with pytest.raises(KeysFileError, match="GATEWAY_AUTH__KEYS_FILE is not set") as info:
        KeyRing.load(AuthSettings(), DEFAULTS)
    assert "GATEWAY_AUTH__ENABLED=false" in str(info.value)


def test_allow_list_denial_names_the_model_only(tmp_path: Path) -> None:
    key, entry = mint("checkout", ["fraud_scorer"])
    principal = ring_with(tmp_path, entry).authenticate(key)

    principal.check_model("fraud_scorer")
    with pytest.raises(PermissionDenied) as info:
        principal.check_model("credit_limit")
    assert info.value.detail == "this API key may not use model 'credit_limit'"


@pytest.mark.parametrize(
    ("key_rate", "key_burst", "defaults", "expected"),
    [
        (None, None, RateLimitSettings(), (0.0, 1)),
        (None, None, RateLimitSettings(default_per_s=2.5), (2.5, 3)),
        (None, None, RateLimitSettings(default_per_s=10, default_burst=50), (10.0, 50)),
        (5.0, None, RateLimitSettings(default_per_s=100, default_burst=500), (5.0, 5)),
        (5.0, 20, RateLimitSettings(), (5.0, 20)),
        (0.0, None, RateLimitSettings(default_per_s=100), (0.0, 1)),
    ],
)
def test_rate_limit_comes_from_the_key_else_the_defaults(
    key_rate: float | None,
    key_burst: int | None,
    defaults: RateLimitSettings,
    expected: tuple[float, int],
) -> None:
    _, entry = mint("c", ["*"], rate_per_s=key_rate, burst=key_burst)
    principal = principal_of(entry, defaults)
    assert (principal.rate_per_s, principal.burst) == expected
