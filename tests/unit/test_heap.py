"""freeze_startup_heap: what start-up left is out of the collector's sight, later objects not."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.heap import freeze_startup_heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def tracked(obj: object) -> bool:
    """Whether a collection would walk ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_frozen_objects_leave_the_generations_and_later_ones_do_not(unfrozen: None) -> None:
    before = [[1], [2]]
    assert tracked(before)
    frozen = freeze_startup_heap()
    # Frozen objects are still freed by reference counting (other threads of this process
    # drop some at any time), so the count only ever shrinks from what was frozen.
    assert 0 < gc.get_freeze_count() <= frozen
    assert not tracked(before)
    after = [[3]]
    assert tracked(after)
    gc.collect()
    assert not tracked(before), "a collection must not thaw the frozen heap"
    assert gc.get_freeze_count() > frozen // 2


class Node:
    def __init__(self) -> None:
        self.me = self


def test_garbage_is_collected_before_freezing(unfrozen: None) -> None:
    # A reference cycle that is already garbage must be freed, not frozen for good.
    node = Node()
    alive = weakref.ref(node)
    del node
    freeze_startup_heap()
    assert alive() is None
