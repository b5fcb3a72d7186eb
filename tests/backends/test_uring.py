"""The io_uring ring the futex backend offers event loops: what the conformance suite cannot
reach through the contract (a ring whose completions outnumber its room)."""

from __future__ import annotations

import ctypes
import select

import pytest

from pricefeed._wait import _uring_linux

pytestmark = pytest.mark.skipif(not _uring_linux.usable(), reason="no io_uring futex waits here (Linux 6.7+ on x86-64)")


class Word:
    def __init__(self, value: ctypes.c_uint32) -> None:
        self.address = ctypes.addressof(value)


def test_completions_beyond_the_rings_room_are_all_given_once() -> None:
    """300 waits that complete at once on a ring with room for 8 completions: the rest wait in
    the kernel's overflow list, and done() brings every one of them back, once."""
    values = [ctypes.c_uint32(1) for _ in range(300)]
    ring = _uring_linux.FutexRing(entries=4, completions=8)
    try:
        for token, value in enumerate(values, 1):
            ring.arm([Word(value)], [0], token)  # the word holds 1, not 0
        assert select.select([ring.fileno()], [], [], 5.0)[0], "the ring's descriptor never became readable"
        assert sorted(ring.done()) == list(range(1, 301))
        assert ring.done() == []
    finally:
        ring.close()


def test_a_wait_left_armed_completes_at_the_next_change_and_is_dropped() -> None:
    """A wait whose caller went away stays armed until its word changes; then it completes
    once, and nothing else is left in the ring."""
    value = ctypes.c_uint32(7)
    ring = _uring_linux.FutexRing(entries=4, completions=8)
    try:
        ring.arm([Word(value)], [7], 1)
        assert not select.select([ring.fileno()], [], [], 0.05)[0]
        value.value = 8
        libc = ctypes.CDLL(None)
        libc.syscall(202, ctypes.c_void_p(ctypes.addressof(value)), 1, 0x7FFFFFFF, None, None, 0)  # FUTEX_WAKE
        assert select.select([ring.fileno()], [], [], 5.0)[0]
        assert ring.done() == [1] and ring.done() == []
    finally:
        ring.close()
