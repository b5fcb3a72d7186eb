"""The follow loop on a plain bytearray, on each implementation (the ``impl`` fixture): every
code it can give, in the order the protocol says, with no process and no wait backend."""

from __future__ import annotations

import ctypes
import time
from typing import Any, List, Optional, Tuple

import pytest

from pricefeed import BadSegment, Quote
from pricefeed import _protocol as protocol
from pricefeed._protocol import follow as F
from pricefeed._protocol import layout as L
from pricefeed._protocol.header import initialise, read_geometry
from pricefeed._values import quote_type

CAPACITY, RING = 4, 8


class Bench:
    """A feed in a bytearray, its writer, and a follow loop over it."""

    def __init__(self, impl: protocol.Implementation, fields: Tuple[Tuple[str, int], ...] = L.DEFAULT_FIELDS) -> None:
        self.buf = bytearray(L.segment_size(CAPACITY, RING, len(fields)))
        initialise(memoryview(self.buf), CAPACITY, RING, 5, 0, fields)
        g = read_geometry(memoryview(self.buf))
        self.quote = quote_type(fields)
        address = ctypes.addressof((ctypes.c_char * len(self.buf)).from_buffer(self.buf))
        self.w = impl.Writer(memoryview(self.buf), g, address)
        self.r = impl.Reader(memoryview(self.buf), g, address)
        self.impl = impl
        self.names: List[str] = []
        self.head = 0
        self.waits: List[Tuple[int, float, Optional[Tuple[int, ...]]]] = []

    def publish(self, symbol: str, *values: Any, changed: int = 1) -> None:
        if symbol not in self.names:
            index = len(self.names)
            self.w.write_symbol(index, symbol.encode())
            self.w.write_change(index, values, changed, 7, self.head + 1)
            self.w.set_slot_count(index + 1)
            self.w.set_head(self.head + 1)
            self.names.append(symbol)
        else:
            self.w.commit(self.names.index(symbol), values, changed, 7, self.head + 1)
        self.head += 1

    def wait(self, cursor: int, seconds: float, words: Optional[Tuple[int, ...]]) -> int:
        self.waits.append((cursor, seconds, words))
        return 0

    def follow(self, cursor: int = 0, known: Optional[int] = None, deadline: float = -1.0, on: int = 0) -> Any:
        names = list(self.names)
        f = self.impl.Follow(
            self.r, names, len(names) if known is None else known, None, self.quote, None, cursor,
            self.r.publisher_epoch(), 0.05, 0.0, deadline, self.wait, False, on,
        )  # fmt: skip
        f.block = False
        return f


@pytest.fixture
def bench(impl: protocol.Implementation) -> Bench:
    return Bench(impl)


def test_the_codes_are_the_c_cores() -> None:
    """The C loop and the reference speak the same numbers."""
    speedups = getattr(protocol.accel, "_speedups", None)
    if speedups is None:
        pytest.skip("the C implementation is not built here, or PRICEFEED_PURE is set")
    for name in ("TIMEOUT", "IDLE", "ENDED", "LAPPED", "NEWSLOT", "VOID", "EPOCH", "BEHIND"):
        assert getattr(speedups, f"F_{name}") == getattr(F, name), name


def test_changes_in_order_then_idle(bench: Bench) -> None:
    for i in range(5):
        bench.publish("AB"[i % 2], float(i))
    f = bench.follow()
    got = [next(f) for _ in range(5)]
    assert got == [Quote("AB"[i % 2], float(i), 7, i + 1) for i in range(5)]
    assert next(f) == F.IDLE and f.cursor == 5 and bench.waits == []


def test_unwanted_slots_are_skipped(bench: Bench) -> None:
    for i in range(6):
        bench.publish("ABC"[i % 3], float(i))
    f = bench.follow()
    f.interest = bytearray([0, 1, 0, 0])
    assert [next(f) for _ in range(2)] == [Quote("B", 1.0, 7, 2), Quote("B", 4.0, 7, 5)]
    assert next(f) == F.IDLE and f.cursor == 6


def test_a_slot_beyond_known_stops_the_loop_until_learnt(bench: Bench) -> None:
    bench.publish("A", 1.0)
    bench.publish("B", 2.0)
    f = bench.follow(known=1)
    assert next(f) == Quote("A", 1.0, 7, 1)
    assert next(f) == F.NEWSLOT and f.cursor == 1
    f.known = 2
    assert next(f) == Quote("B", 2.0, 7, 2)


def test_a_lapped_reader_is_told_and_not_given_a_wrong_change(bench: Bench) -> None:
    bench.publish("A", 0.5)
    f = bench.follow()
    for i in range(RING + 1):
        bench.publish("A", float(i))
    assert next(f) == F.LAPPED and f.cursor == 0 and f.head == RING + 2
    f.cursor = f.head  # as the caller does after its catch-up
    assert next(f) == F.IDLE


def test_a_lost_change_is_void_and_passed(bench: Bench) -> None:
    bench.publish("A", 1.0)
    bench.publish("A", 2.0)
    at = L.ring_offset(CAPACITY) + (2 % RING) * L.record_size(1) + L.REC_SLOT
    bench.buf[at : at + 4] = L.SLOT_VOID.to_bytes(4, "little")
    f = bench.follow()
    assert next(f) == Quote("A", 1.0, 7, 1)
    assert next(f) == F.VOID and f.cursor == 2


def test_a_takeover_is_told_before_its_changes(bench: Bench) -> None:
    bench.publish("A", 1.0)
    f = bench.follow()
    epoch = bench.w.take_over(1234, True)
    bench.publish("A", 2.0)
    assert next(f) == F.EPOCH and f.epoch == epoch
    assert [next(f), next(f)] == [Quote("A", 1.0, 7, 1), Quote("A", 2.0, 7, 2)]


def test_a_head_below_the_cursor_is_damage(bench: Bench) -> None:
    bench.publish("A", 1.0)
    f = bench.follow(cursor=3)
    assert next(f) == F.BEHIND and f.head == 1
    with pytest.raises(BadSegment, match="went back from 3 to 1"):
        F.check_head(f.head, f.cursor, "feed")


def test_an_ended_feed_is_drained_first(bench: Bench) -> None:
    bench.publish("A", 1.0)
    bench.w.set_closed()
    f = bench.follow()
    assert next(f) == Quote("A", 1.0, 7, 1)
    assert next(f) == F.ENDED
    assert next(f) == F.ENDED


def test_a_blocking_loop_sleeps_through_its_wait_and_honours_the_deadline(bench: Bench) -> None:
    bench.publish("A", 1.0)
    f = bench.follow(cursor=1)
    f.block = True
    f.words = (3,)
    assert next(f) == F.TIMEOUT  # the wait said 0: time passed
    assert len(bench.waits) == 1 and bench.waits[0][0] == 1 and bench.waits[0][2] == (3,)
    assert 0 < bench.waits[0][1] <= 0.05  # one slice at most
    f.deadline = time.monotonic() - 1
    assert next(f) == F.TIMEOUT and len(bench.waits) == 1  # past the deadline: no wait at all


def test_step_is_a_pure_function_of_state_and_memory() -> None:
    """The reference step on its own: the state in, what happened and the state after out."""
    b = Bench(protocol.PYTHON)
    b.publish("A", 1.0)
    state = F.FollowState(cursor=0, known=1, epoch=0)
    got, after = F.step(b.r, state)
    assert got == F.Change(1, 0, (1.0,), 7, 1) and after == F.FollowState(1, 1, 0, 1)
    assert F.step(b.r, after) == (F.IDLE, after)
    assert F.step(b.r, state) == (got, after), "the same state and memory give the same answer"


def test_on_passes_over_changes_of_other_fields_and_quotes_say_what_changed(impl: protocol.Implementation) -> None:
    """A mask of fields: only changes that changed one of them come out, each with its record
    whole and its changed mask; the others are passed over like unwanted symbols."""
    b = Bench(impl, (("bid", L.TYPE_F64), ("ask", L.TYPE_F64), ("size", L.TYPE_I64)))
    b.publish("A", 1.0, 2.0, 3, changed=0b111)
    b.publish("A", 1.0, 2.5, 3, changed=0b010)
    b.publish("B", 9.0, 9.5, -(2**63), changed=0b111)
    b.publish("A", 1.5, 2.5, 4, changed=0b101)
    f = b.follow(on=0b001)
    got = [next(f), next(f), next(f)]
    assert [(q.symbol, q.seq, q.bid, q.ask, q.size, q.changed) for q in got] == [
        ("A", 1, 1.0, 2.0, 3, ("bid", "ask", "size")),
        ("B", 3, 9.0, 9.5, -(2**63), ("bid", "ask", "size")),
        ("A", 4, 1.5, 2.5, 4, ("bid", "size")),
    ]
    assert all(type(q) is b.quote for q in got) and got[2] == b.quote("A", 1.5, 2.5, 4, 7, 4, changed=0b101)
    assert next(f) == F.IDLE
    f = b.follow(on=0b010)
    assert [next(f).seq, next(f).seq, next(f).seq, next(f)] == [1, 2, 3, F.IDLE]
