"""egressproxy/runtime/allocator.py: glibc malloc tuned at start-up and trimmed off the hot path."""

from __future__ import annotations

import asyncio
import ctypes
import platform

import pytest

from egressproxy.runtime import allocator
from egressproxy.runtime.allocator import glibc_malloc, trim, trim_forever, tune_allocator


class FakeMalloc:
    def __init__(self, accept: bool = True) -> None:
        self.opts: list[tuple[int, int]] = []
        self.trims = 0
        self.accept = accept

    def mallopt(self, param: int, value: int) -> int:
        self.opts.append((param, value))
        return 1 if self.accept else 0

    def malloc_trim(self, pad: int) -> int:
        assert pad == 0
        self.trims += 1
        return 1


def test_the_arenas_are_bounded_at_start_up() -> None:
    fake = FakeMalloc()
    assert tune_allocator(fake, environ={}) is True
    assert fake.opts == [(-8, allocator.ARENA_MAX)]  # M_ARENA_MAX from glibc's malloc.h


def test_glibcs_own_variable_wins_over_the_gateways_choice() -> None:
    fake = FakeMalloc()
    assert tune_allocator(fake, environ={"MALLOC_ARENA_MAX": "4"}) is False
    assert fake.opts == []


def test_a_refused_mallopt_is_reported_not_raised() -> None:
    assert tune_allocator(FakeMalloc(accept=False), environ={}) is False


def test_nothing_is_tuned_without_glibc_or_when_turned_off() -> None:
    assert tune_allocator(None, environ={}) is False
    assert glibc_malloc({allocator.OFF_VARIABLE: "off"}) is None


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_real_glibc_is_found_and_trims() -> None:
    malloc = glibc_malloc({})
    assert malloc is not None
    blocks = [ctypes.create_string_buffer(70_000) for _ in range(64)]
    del blocks[::2]  # holes inside the heap: what malloc_trim(0) returns and a top-only trim could not
    assert trim(malloc) >= 0.0


def test_trimming_repeats_until_cancelled() -> None:
    fake = FakeMalloc()

    async def go() -> None:
        task = asyncio.create_task(trim_forever(fake, interval=0.01))
        while fake.trims < 3:  # a condition, not a sleep: at least three passes happened
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(go(), timeout=5))
    assert fake.trims >= 3
