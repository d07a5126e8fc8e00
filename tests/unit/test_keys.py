"""gateway.keys: the key format, the keys file and ``python -m gateway keys``."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.__main__ import main
from gateway.errors import KeysFileError
from gateway.keys import digest, key_id_of, load_keys_file, mint, parse_keys, write_keys_file


def entry(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": "abcd1234",
        "client": "checkout",
        "hash": "sha256:" + "ab" * 32,
        "models": ["fraud_scorer"],
    }
    raw.update(overrides)
    return raw


def test_minted_key_names_its_entry_and_only_its_hash_is_kept() -> None:
    key, minted = mint("checkout", ["fraud_scorer"], tier="premium", rate_per_s=5, burst=10)

    assert key.startswith(f"gw_{minted.key_id}_")
    assert len(key) > 40
    assert key_id_of(key) == minted.key_id
    assert minted.digest == digest(key)
    assert minted.models == frozenset({"fraud_scorer"})
    assert (minted.tier, minted.rate_per_s, minted.burst) == ("premium", 5.0, 10)
    assert key not in yaml.safe_dump(minted.as_dict())


def test_two_minted_keys_differ() -> None:
    assert mint("a", ["*"])[0] != mint("a", ["*"])[0]


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "gw_",
        "gw_abcd1234_",
        "xx_abcd1234_secret",
        "gw_ABCD1234_s",
        "gw_ab_s",
        "gw_" + "a" * 200,
    ],
)
def test_malformed_keys_have_no_id(presented: str) -> None:
    assert key_id_of(presented) is None


def test_star_means_every_model() -> None:
    (parsed,) = parse_keys({"keys": [entry(models=["*"])]})
    assert parsed.models is None


def test_file_round_trips_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "secret" / "keys.yaml"
    _, first = mint("a", ["*"])
    _, second = mint("b", ["fraud_scorer"], rate_per_s=0)

    write_keys_file(path, [first, second])

    assert load_keys_file(path) == [first, second]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["keys.yaml"]  # no temp file left


def test_json_keys_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [{"id": "abcd1234", "client": "c", "hash": "sha256:'
                    + "0" * 64 + '", "models": ["*"]}]}')  # fmt: skip
    assert load_keys_file(path)[0].client == "c"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"keys": [entry(secret="x")]}, "unknown field(s) ['secret']"),
        ({"keys": [entry(hash="md5:abc")]}, "keys[0].hash"),
        ({"keys": [entry(models=[])]}, "keys[0].models"),
        ({"keys": [entry(client="bad client")]}, "keys[0].client"),
        ({"keys": [entry(rate_limit={"per_s": -1})]}, "rate_limit.per_s: must be >= 0"),
        ({"keys": [entry(rate_limit={"burst": 3})]}, "rate_limit: must be"),
        ({"keys": [entry(rate_limit={"per_s": 1, "burst": 0})]}, "rate_limit.burst"),
        ({"keys": [entry(), entry()]}, "duplicate key id 'abcd1234'"),
        ({"tokens": []}, "top level"),
        ([], "top level"),
    ],
)
def test_invalid_files_name_the_bad_entry(raw: Any, message: str) -> None:
    with pytest.raises(KeysFileError, match=None) as info:
        parse_keys(raw)
    assert message in str(info.value)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="cannot read API keys file"):
        load_keys_file(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("keys: [")
    with pytest.raises(KeysFileError, match="not valid YAML"):
        load_keys_file(tmp_path / "bad.yaml")


def test_cli_creates_lists_and_revokes_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.yaml"
    base = ["keys", "--keys-file", str(path)]

    assert main([*base, "create", "--client", "checkout", "--models", "fraud_scorer"]) == 0
    key = capsys.readouterr().out.strip()
    after = ["keys", "create", "--keys-file", str(path)]  # the file may follow the action too
    assert main([*after, "--client", "ops", "--models", "*", "--rate-limit", "5"]) == 0
    capsys.readouterr()
    entries = load_keys_file(path)
    assert [e.client for e in entries] == ["checkout", "ops"]
    assert entries[0].digest == digest(key)
    assert key not in path.read_text()

    assert main([*base, "list"]) == 0
    listing = capsys.readouterr().out
    assert "client=checkout" in listing
    assert "rate=5/s" in listing
    assert "sha256" not in listing

    assert main([*base, "revoke", "--id", entries[0].key_id]) == 0
    assert [e.client for e in load_keys_file(path)] == ["ops"]
    assert main([*base, "revoke", "--id", entries[0].key_id]) == 1


def test_cli_needs_a_keys_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GATEWAY_AUTH__KEYS_FILE", raising=False)
    assert main(["keys", "list"]) == 2
    assert "GATEWAY_AUTH__KEYS_FILE" in capsys.readouterr().err
