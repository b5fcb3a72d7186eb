"""The seqlock slot table and the change ring on a plain bytearray, against a dict-and-list
model (hypothesis state machine). No shared memory, no processes: the protocol core alone."""

from __future__ import annotations

import ctypes
import types
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pricefeed import _protocol as protocol
from pricefeed._protocol import layout as L
from pricefeed._protocol.follow import latest_since
from pricefeed._protocol.header import initialise, read_geometry
from pricefeed._protocol.reader import symbols_of

SYMBOLS = st.sampled_from(["A", "B", "C", "D", "E", "F", "G", "H"])
PRICES = st.floats(allow_nan=False, allow_infinity=False, width=64)
INTS = st.integers(-(2**63), 2**63 - 1)
TIMES = st.integers(0, 2**64 - 1)
#: Schemas: mostly a few fields of either type, sometimes the largest.
KINDS = st.one_of(
    st.lists(st.sampled_from([L.TYPE_F64, L.TYPE_I64]), min_size=1, max_size=5),
    st.just([L.TYPE_I64, L.TYPE_F64] * (L.MAX_FIELDS // 2)),
)
MASKS = st.integers(0, 2**L.MAX_FIELDS - 1)


def _address(buf: bytearray) -> int:
    """The address of a bytearray's storage, for the C implementation (pins the buffer)."""
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


class FeedModel(RuleBasedStateMachine):
    impl = protocol.PYTHON  # the subclass below runs the same model against the C implementation

    @initialize(capacity=st.integers(1, 6), ring_log2=st.integers(1, 4), kinds=KINDS)
    def make(self, capacity: int, ring_log2: int, kinds: List[int]) -> None:
        ring = 1 << ring_log2
        fields = tuple((f"f{k}", kind) for k, kind in enumerate(kinds))
        self.buf = bytearray(L.segment_size(capacity, ring, len(fields)))
        initialise(memoryview(self.buf), capacity, ring, 99, 0, fields)
        g = read_geometry(memoryview(self.buf))
        assert g.fields == fields
        self.record = st.tuples(*(PRICES if kind == L.TYPE_F64 else INTS for kind in kinds))
        self.mask = (1 << len(kinds)) - 1
        address = _address(self.buf)
        self.w = self.impl.Writer(memoryview(self.buf), g, address)
        self.r = self.impl.Reader(memoryview(self.buf), g, address)
        # The C implementation's reads run in C (builtin methods), the reference's in Python.
        in_c = isinstance(self.r.read_record, types.BuiltinMethodType)
        assert in_c == (self.impl.name == "c") == isinstance(self.w.commit, types.BuiltinMethodType)
        self.capacity, self.ring = capacity, ring
        self.slots: Dict[str, int] = {}  # model: symbol -> slot
        self.values: Dict[int, Tuple[Tuple[Any, ...], int, int, int]] = {}  # slot -> (values, time, seq, changed)
        self.changes: List[Tuple[int, Tuple[Any, ...], int, int]] = []  # [seq-1] = (slot, values, time, changed)
        self.publisher = L.PublisherState(0, 0, 0)  # model: the last publisher_state written
        self.epoch = 0

    @precondition(lambda self: hasattr(self, "w"))
    @rule(symbol=SYMBOLS, data=st.data(), time_ns=TIMES, changed=MASKS)
    def publish(self, symbol: str, data: st.DataObject, time_ns: int, changed: int) -> None:
        price = data.draw(self.record)
        changed &= self.mask
        index = self.slots.get(symbol)
        if index is None:
            if len(self.slots) == self.capacity:
                return
            index = len(self.slots)
            self.w.write_symbol(index, symbol.encode())
        seq = len(self.changes) + 1
        if symbol not in self.slots:
            self.w.write_change(index, price, changed, time_ns, seq)
            self.slots[symbol] = index
            self.w.set_slot_count(len(self.slots))
            self.w.set_head(seq)
        else:
            self.w.commit(index, price, changed, time_ns, seq)
        self.values[index] = (price, time_ns, seq, changed)
        self.changes.append((index, price, time_ns, changed))

    @precondition(lambda self: hasattr(self, "w"))
    @rule()
    def wake(self) -> None:
        before = self.r.futex_value()
        words = list(range(L.WAKE_WORDS))
        table = self.r.wake_values(words)
        self.w.announce(5)
        assert self.r.futex_value() == (before + 1) & 0x7FFFFFFF
        after = self.r.wake_values(words)
        assert [a - b for a, b in zip(after, table)] == [1 if w == 5 else 0 for w in words]

    @invariant()
    def slot_table_matches(self) -> None:
        if not hasattr(self, "r"):
            return
        assert self.r.slot_count() == len(self.slots)
        assert symbols_of(self.r, 0, self.r.slot_count()) == self.slots
        for index, value in self.values.items():
            assert self.r.read_slot(index) == value

    @invariant()
    def ring_matches(self) -> None:
        if not hasattr(self, "r"):
            return
        head = len(self.changes)
        assert self.r.head() == head
        for seq in range(max(1, head - 3 * self.ring), head + self.ring + 1):
            got = self.r.read_record(seq)
            if head - self.ring < seq <= head:
                assert got == self.changes[seq - 1], seq
            else:
                assert got is None, f"change {seq} is lapped or not yet written, but read as {got}"

    @invariant()
    def catch_up_matches(self) -> None:
        if not hasattr(self, "r"):
            return
        head = len(self.changes)
        for after in {0, head // 2, max(0, head - 1), head}:
            want = sorted((v[2], i, v[0], v[1], v[3]) for i, v in self.values.items() if after < v[2] <= head)
            got = latest_since([(i, self.r.read_slot(i)) for i in self.values], after, head)
            assert [tuple(c) for c in got] == want

    @precondition(lambda self: hasattr(self, "w"))
    @rule(intact=st.booleans(), pid=st.integers(0, 2**32 - 1))
    def take_over(self, intact: bool, pid: int) -> None:
        """Rule 6: the handover is clean when the last word is this epoch's clean close and the
        feed is intact; the first publisher's is never counted."""
        before = self.publisher
        clean = intact and self.epoch != 0 and before.epoch == self.epoch and before.state == L.PUBLISHER_CLOSED
        assert self.w.take_over(pid, intact) == self.epoch + 1
        self.epoch += 1
        self.publisher = L.PublisherState(self.epoch, L.PUBLISHER_HOLDS, before.handovers + clean)
        assert self.r.publisher_pid() == pid

    @precondition(lambda self: hasattr(self, "w") and self.epoch > 0)
    @rule()
    def close_cleanly(self) -> None:
        self.w.close_cleanly(self.epoch)
        self.publisher = self.publisher._replace(state=L.PUBLISHER_CLOSED)

    @invariant()
    def publisher_words_match(self) -> None:
        if not hasattr(self, "r"):
            return
        assert self.r.publisher_view() == (self.epoch, self.publisher)

    @precondition(lambda self: hasattr(self, "w"))
    @rule(symbols=st.lists(SYMBOLS, max_size=12), data=st.data(), time_ns=TIMES, changed=MASKS)
    def publish_batch(self, symbols: List[str], data: st.DataObject, time_ns: int, changed: int) -> None:
        """commit_many() of known symbols, as publish_many() does."""
        changed &= self.mask
        known = [(self.slots[s], data.draw(self.record), changed) for s in symbols if s in self.slots]
        first = len(self.changes) + 1
        self.w.commit_many(known, time_ns, first, -1)
        for k, (index, values, _) in enumerate(known):
            self.values[index] = (values, time_ns, first + k, changed)
            self.changes.append((index, values, time_ns, changed))

    @invariant()
    def slot_table_in_one_call(self) -> None:
        if not hasattr(self, "r"):
            return
        got = self.r.read_slots(len(self.slots))
        assert got == [self.values.get(i) for i in range(len(self.slots))]


FeedModel.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestFeedModel = FeedModel.TestCase


class CFeedModel(FeedModel):
    impl = protocol.C or protocol.PYTHON


CFeedModel.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestCFeedModel = pytest.mark.skipif(
    protocol.C is None, reason="the C implementation is not built here, or PRICEFEED_PURE is set"
)(CFeedModel.TestCase)


def test_writer_leaves_a_mid_write_slot_odd(impl: protocol.Implementation) -> None:
    """The lock word is odd between the two halves of a write, and readers refuse it."""
    buf = bytearray(L.segment_size(2, 4))
    initialise(memoryview(buf), 2, 4, 1, 0)
    g = read_geometry(memoryview(buf))
    w, r = impl.Writer(memoryview(buf), g, _address(buf)), impl.Reader(memoryview(buf), g, _address(buf))
    w.write_symbol(0, b"X")
    w.write_change(0, (1.0,), 1, 1, 1)
    lock_at = L.slot_offset(0, 2) + L.SLOT_LOCK
    buf[lock_at : lock_at + 8] = (3).to_bytes(8, "little")  # as a writer stopped halfway
    assert r.read_slot(0) is None
    buf[lock_at : lock_at + 8] = (4).to_bytes(8, "little")
    assert r.read_slot(0) == ((1.0,), 1, 1, 1)
