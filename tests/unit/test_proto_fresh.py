"""The committed generated gRPC code matches gateway/v1/gateway.proto (run `make proto`)."""

from __future__ import annotations

from pathlib import Path

from gateway.v1.codegen import GENERATED, generate


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    stale = [p.name for p in fresh if (GENERATED / p.name).read_text() != p.read_text()]
    assert not stale, f"gateway/v1/_generated is stale ({stale}); run `make proto`"
