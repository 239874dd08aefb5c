"""egressproxy/runtime/heap.py: start-up's heap frozen out of full collections; a reload frees the old cycles."""

from __future__ import annotations

import gc
import weakref

import pytest

from egressproxy.runtime.heap import settle


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def unfrozen():
    yield
    gc.unfreeze()  # leave the test process's collector as it found it


def test_settling_frees_cyclic_garbage_then_freezes_what_lives() -> None:
    garbage, kept = Node(), Node()
    dead = weakref.ref(garbage)
    del garbage
    settle("start-up")
    assert dead() is None
    assert gc.get_freeze_count() > 0 and gc.is_tracked(kept)
    # a full collection no longer walks the frozen heap: only what was made since
    assert len(gc.get_objects(generation=2)) < gc.get_freeze_count()


def test_a_reload_collects_cycles_that_were_frozen_while_alive() -> None:
    """The old snapshot's cycles, frozen while it served, are freed by the next settling."""
    old = Node()
    dead = weakref.ref(old)
    settle("start-up")
    del old
    gc.collect()
    assert dead() is not None  # frozen: a collection does not see it
    settle("reload")
    assert dead() is None
