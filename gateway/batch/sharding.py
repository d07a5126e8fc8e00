"""Which entities a shard owns: ``crc32(entity_id) % n``, the same on every run and machine.

Both sources (file and feature store) use this one function, so ``--shard i/n`` names the
same set of entities whichever source the job reads, and N workers with shards ``0/n`` …
``n-1/n`` split the work with every entity in exactly one shard. CRC-32 of the UTF-8 id is
stable across processes and Python versions (unlike ``hash()``, which is salted per process).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= index < count")

    @property
    def is_everything(self) -> bool:
        return self.count == 1

    def owns(self, entity_id: str) -> bool:
        return shard_of(entity_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ALL = Shard(0, 1)


def parse_shard(text: str) -> Shard:
    """``"i/n"`` (as the Helm chart passes ``$(JOB_COMPLETION_INDEX)/<shards>``)."""
    match = _SHARD.match(text)
    if match is None:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}")
    return Shard(int(match[1]), int(match[2]))


def shard_of(entity_id: str, count: int) -> int:
    return zlib.crc32(entity_id.encode()) % count


def shard_mask(entity_ids: Sequence[str | None], shard: Shard) -> npt.NDArray[np.bool_]:
    """True where the shard owns the id. A missing id (None) counts as ``""``: shard 0
    reports it, so an invalid row is reported exactly once across all shards."""
    if shard.is_everything:
        return np.ones(len(entity_ids), dtype=bool)
    crc32 = zlib.crc32
    hashes = np.fromiter(
        (crc32((e or "").encode()) for e in entity_ids), dtype=np.uint32, count=len(entity_ids)
    )
    mask: npt.NDArray[np.bool_] = hashes % shard.count == shard.index
    return mask


def owned(entity_ids: Sequence[bytes], shard: Shard) -> list[bytes]:
    """The ids (UTF-8 bytes, as Redis returns them) that the shard owns: the same rule as
    ``shard_of``, without decoding each id first."""
    if shard.is_everything:
        return list(entity_ids)
    crc32, count, index = zlib.crc32, shard.count, shard.index
    return [e for e in entity_ids if crc32(e) % count == index]
