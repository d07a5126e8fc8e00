"""Start-up checks: wait for every served model in Triton, then verify it against the spec."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from gateway.errors import GatewayError, SpecError
from gateway.spec import ModelSpec, check_against_triton, resolve_version
from gateway.triton import TritonClient


async def verify_models(
    specs: Mapping[str, ModelSpec], triton: TritonClient, *, url: str, wait_s: float
) -> dict[str, str]:
    """The served version of each model; SpecError if Triton disagrees or never gets ready."""
    deadline = time.monotonic() + wait_s
    versions: dict[str, str] = {}
    for spec in specs.values():
        pinned = "" if spec.triton_version == "latest" else spec.triton_version
        while not await triton.model_ready(spec.triton_name, pinned):
            if time.monotonic() >= deadline:
                raise SpecError(
                    f"models.{spec.name}: Triton at {url} has no ready model "
                    f"{spec.triton_name!r} (version {spec.triton_version}) after {wait_s:.0f}s"
                )
            await asyncio.sleep(0.25)
        try:
            metadata = await triton.model_metadata(spec.triton_name, pinned)
        except GatewayError as e:
            raise SpecError(f"models.{spec.name}: cannot read Triton metadata: {e.detail}") from e
        version = resolve_version(spec, [str(v) for v in metadata.get("versions", [])])
        check_against_triton(spec, metadata, metadata["config"])
        versions[spec.name] = version
    return versions
