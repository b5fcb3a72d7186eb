"""The reader's side of the protocol (Rules 1, 2, 3 and 5 of the package), over any buffer.

``FeedReader`` takes a readable buffer of a feed's size: a ``bytearray`` in unit tests, the
read-only mapping in real use. It never writes. Each shared word is loaded with one aligned
load through a ``memoryview`` cast (see ``ordering``); each copy that must be consistent is
made between two loads of the word that guards it, and every index or count loaded from the
segment is checked against the geometry validated at open (Rule 5): a damaged segment raises
BadSegment, it is never read out of range.

This is the reference implementation; ``accel`` binds the same methods to the C core.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Dict, List, Optional, Tuple

from .._errors import BadSegment
from . import layout as L
from .header import Geometry
from .ordering import FENCES, fence_acquire

#: How many times a reader retries a slot whose lock is odd or moved before it gives the
#: caller the chance to sleep and to check that the publisher is alive (see Subscriber).
SPIN_TRIES = 200
#: How many times publisher_view() loads the two words again when it finds a takeover halfway
#: through (its state stored, its epoch not yet): the gap is two stores wide, unless the
#: publisher died between them.
SETTLE_TRIES = 100

# Word indices into the "Q" (8-byte) and "I" (4-byte) casts of the buffer, from the layout.
_Q = 8
_I = 4
_HEAD = L.OFF_HEAD_SEQ // _Q
_FUTEX = L.OFF_FUTEX // _I
_WAKE = L.WAKE_OFFSET // _I
_WAKE_MASK = L.WAKE_WORDS - 1
_FUTEX_MASK = 0x7FFFFFFF  # the header's word stays below 2**31 (see FUTEX_WAKE_OP in _wait)
_CLOSED = L.OFF_CLOSED // _I
_SLOT_COUNT = L.OFF_SLOT_COUNT // _I
_EPOCH = L.OFF_PUBLISHER_EPOCH // _I
_PID = L.OFF_PUBLISHER_PID // _I
_PSTATE = L.OFF_PUBLISHER_STATE // _Q
_EPOCH_MASK = (1 << L.STATE_EPOCH_BITS) - 1
_S_LOCK = L.SLOT_LOCK // _Q
_S_SEQ = L.SLOT_SEQ // _Q
_S_TIME = L.SLOT_TIME // _Q
_S_CHANGED = L.SLOT_CHANGED // _I
_S_VALUES = L.SLOT_VALUES // _Q
_R_SEQ = L.REC_SEQ // _Q
_R_SLOT = L.REC_SLOT // _I
_R_CHANGED = L.REC_CHANGED // _I
_R_TIME = L.REC_TIME // _Q
_R_VALUES = L.REC_VALUES // _Q
# The hot paths lean on these facts of the layout; a layout change that breaks one stops here.
assert _S_LOCK == 0 and _R_SEQ == 0, "the lock and the record's seq open their slot and record"
assert (L.SLOT_SEQ, L.SLOT_TIME, L.SLOT_CHANGED, L.SLOT_VALUES) == (8, 16, 24, 32), "Layout.slot reads these"
assert (L.REC_SLOT, L.REC_CHANGED, L.REC_TIME, L.REC_VALUES) == (8, 12, 16, 24), "Layout.record reads these"

#: A Reading: what a slot holds, copied inside its seqlock: (values, time_ns, seq, changed),
#: ``values`` a tuple with one float (f64) or int (i64) per field of the schema.
Reading = Tuple[Tuple[Any, ...], int, int, int]
#: A Record: what a ring record holds: (slot, values, time_ns, changed).
Record = Tuple[int, Tuple[Any, ...], int, int]

_CODES = {L.TYPE_F64: "d", L.TYPE_I64: "q"}


class Shape:
    """What a geometry means for the words of a slot and a record: where each is, and the
    struct that copies the fields of one in one call."""

    def __init__(self, geometry: Geometry) -> None:
        codes = "".join(_CODES[kind] for _, kind in geometry.fields)
        self.slots = geometry.slots_offset // _Q  # first word of the slot table
        self.slot_words = geometry.slot_size // _Q
        self.ring = geometry.ring_offset // _Q
        self.record_words = geometry.record_size // _Q
        #: seq, time_ns, changed, then the values: a slot's fields after its lock.
        self.slot = struct.Struct("<QQI4x" + codes)
        #: slot, changed, time_ns, then the values: a record's fields after its seq.
        self.record = struct.Struct("<IIQ" + codes)
        #: Positions of the f64 fields among the values: a reader checks they are finite.
        self.floats = tuple(k for k, (_, kind) in enumerate(geometry.fields) if kind == L.TYPE_F64)


def lapped(found_seq: int, wanted_seq: int) -> bool:
    """True when a ring record no longer holds (or does not yet hold) the wanted change: the
    one predicate of lapping (Rule 2)."""
    return found_seq != wanted_seq


class FeedReader:
    """Consistent copies out of a feed buffer (Rules 1, 2 and 5). Never writes.
    ``release()`` before the buffer's owner closes it."""

    #: True when commit() and commit_many() also make the wake-up system calls (a writer of
    #: the C implementation over futexes); this one never does.
    wakes = False

    #: A sleep on the feed's futex words made by the implementation itself, ``wait_head(cursor,
    #: seconds, words)`` -> 1 (the head moved), 2 (ended), 0 (time passed); None here: the
    #: caller sleeps through its wait backend.
    wait_head: Optional[Any] = None

    def __init__(self, buf: memoryview, geometry: Geometry, address: Optional[int] = None) -> None:
        """``address`` (where ``buf`` is mapped) is for implementations that need it; this
        one does not."""
        self.geometry = geometry
        # Only the bytes the geometry covers: a longer segment is accepted, and its tail (of
        # any length, even one a "Q" cast would refuse) is never looked at.
        buf = buf[: geometry.size]
        self._buf = buf
        self._q = buf.cast("Q")
        self._i = buf.cast("I")
        self._d = buf.cast("d")
        self._s = buf.cast("q")
        self._capacity = geometry.capacity
        self._mask = geometry.ring_size - 1
        self.shape = shape = Shape(geometry)
        self._ring = shape.ring
        self._slots = shape.slots
        self._slot_words = shape.slot_words
        self._rec_words = shape.record_words
        self._floats = shape.floats
        self._slot_struct = shape.slot
        self._record_struct = shape.record

    @property
    def woken(self) -> int:
        """Waits inside this reader that a wake-up ended (it has none: the caller waits)."""
        return 0

    def spin(self, cursor: int, seconds: float) -> bool:
        """Poll the head for up to ``seconds``; True once it passes ``cursor``."""
        head = self.head
        clock = time.perf_counter
        end = clock() + seconds
        while clock() < end:
            if head() != cursor:
                return True
        return False

    def release(self) -> None:
        for view in (self._q, self._i, self._d, self._s, self._buf):
            view.release()

    # -- words anyone may read --------------------------------------------------------------
    def head(self) -> int:
        head = self._q[_HEAD]
        if FENCES:
            fence_acquire()  # pairs with the release in FeedWriter.set_head()
        if head >> 63:  # 2**63 changes would take centuries: only damage gets here
            raise BadSegment(f"damaged header: head_seq is {head}, beyond any real sequence")
        return head

    def futex_value(self) -> int:
        value = self._i[_FUTEX]
        if FENCES:
            fence_acquire()  # the head is loaded after the wake word (see _subscriber)
        return value

    def wake_values(self, words: List[int]) -> List[int]:
        """The current values of these words of the wake table."""
        i = self._i
        values = [i[_WAKE + w] for w in words]
        if FENCES:
            fence_acquire()  # the head is loaded after the wake words (see _subscriber)
        return values

    def closed(self) -> bool:
        closed = self._i[_CLOSED] != 0
        if FENCES:
            fence_acquire()  # pairs with the release in FeedWriter.set_closed()
        return closed

    def publisher_pid(self) -> int:
        return self._i[_PID]

    def publisher_epoch(self) -> int:
        return self._i[_EPOCH]

    def publisher_view(self) -> Tuple[int, L.PublisherState]:
        """``publisher_epoch`` and the ``publisher_state`` loaded after it (Rule 6): a state
        at least as new as the epoch. One that is exactly one takeover ahead (that takeover
        stored its state, not yet its epoch) is loaded again, a few times."""
        i, q = self._i, self._q
        for _ in range(SETTLE_TRIES):
            epoch = i[_EPOCH]
            fence_acquire()  # pairs with the release between the two stores in take_over()
            state = L.unpack_publisher_state(q[_PSTATE])
            if state.epoch != (epoch + 1) & _EPOCH_MASK:
                break
        return epoch, state

    def slot_count(self) -> int:
        n = self._i[_SLOT_COUNT]
        fence_acquire()  # pairs with the release in FeedWriter.set_slot_count()
        if n > self._capacity:
            raise BadSegment(f"damaged header: slot_count is {n}, more than the capacity {self._capacity}")
        return n

    def symbol_at(self, index: int) -> str:
        start = L.symbol_offset(index)
        raw = bytes(self._buf[start : start + L.SYMBOL_FIELD])
        name = raw.split(b"\0", 1)[0]
        if not name or not _printable(name) or len(name) > L.SYMBOL_MAX:
            raise BadSegment(f"damaged slot {index}: its symbol field {raw!r} is not a valid symbol")
        return name.decode("ascii")

    def _finite(self, values: Tuple[Any, ...]) -> bool:
        for k in self._floats:
            v = values[k]
            if v - v:  # NaN or infinite: never written by a publisher (Rule 5)
                return False
        return True

    def read_slot(self, index: int) -> Optional[Reading]:
        """(values, time_ns, seq, changed) of slot ``index``, or None when SPIN_TRIES copies all
        raced a write (the caller sleeps and checks that the writer is alive before trying again).

        The fields are copied with one ``unpack_from``: its copy is not atomic field by field,
        and need not be, since any write that overlaps it moves the lock (Rule 1)."""
        q = self._q
        b = self._slots + index * self._slot_words
        offset = (b + 1) * _Q
        unpack = self._slot_struct.unpack_from
        for _ in range(SPIN_TRIES):
            lock = q[b]
            if lock & 1:
                continue
            if FENCES:
                fence_acquire()  # pairs with the release before the even store in commit()
            got = unpack(self._buf, offset)
            if FENCES:
                fence_acquire()  # pairs with the release after the odd store in commit()
            if q[b] == lock:
                return self._reading(index, got)
        return None

    def read_quote(self, index: int, symbol: str, quote: Any) -> Any:
        """read_slot() as a quote of class ``quote`` (the feed's Quote class: it has
        ``_build``), or None as read_slot() gives it: get()'s path in one call."""
        got = self.read_slot(index)
        return None if got is None else quote._build(symbol, *got)

    def _reading(self, index: int, got: Tuple[Any, ...]) -> Reading:
        values = got[3:]
        if not self._finite(values):
            raise BadSegment(f"damaged slot {index}: a float field is {values}, not finite")
        return values, got[1], got[0], got[2]

    def read_slots(self, count: int, names: Optional[List[str]] = None, quote: Any = None) -> List[Any]:
        """read_slot() of slots [0, count), in one call (a snapshot's path): None where a slot
        raced a write on the first try; the caller reads those again with read_slot(). With
        ``names`` and ``quote`` (the feed's Quote class), each as read_quote() gives it."""
        q = self._q
        buf = self._buf
        unpack = self._slot_struct.unpack_from
        out: List[Optional[Reading]] = []
        append = out.append
        step = self._slot_words
        for index, b in enumerate(range(self._slots, self._slots + count * step, step)):
            lock = q[b]
            if FENCES:
                fence_acquire()  # as in read_slot()
            got = unpack(buf, (b + 1) * _Q)
            if FENCES:
                fence_acquire()
            if lock & 1 or q[b] != lock:
                append(None)
            else:
                append(self._reading(index, got))
        if quote is not None and names is not None:
            build = quote._build
            return [None if got is None else build(names[i], *got) for i, got in enumerate(out)]
        return out

    def read_record(self, seq: int) -> Optional[Record]:
        """(slot, values, time_ns, changed) of change ``seq``, or None when the reader was
        lapped."""
        q = self._q
        r = self._ring + (seq & self._mask) * self._rec_words
        if lapped(q[r], seq):
            return None
        if FENCES:
            fence_acquire()  # pairs with the release before the seq store in write_change()
        got = self._record_struct.unpack_from(self._buf, (r + 1) * _Q)
        if FENCES:
            fence_acquire()  # pairs with the release after the 0 store in write_change()
        if lapped(q[r], seq):
            return None
        slot = got[0]
        values = got[3:]
        if (slot >= self._capacity and slot != L.SLOT_VOID) or not self._finite(values):
            raise BadSegment(
                f"damaged ring record for change {seq}: slot {slot} (table of {self._capacity}), values {values}"
            )
        return slot, values, got[2], got[1]

    def newest_records(self, head: int, only: Optional[int] = None) -> Dict[int, Tuple[int, Tuple[Any, ...], int, int]]:
        """slot -> (seq, values, time_ns, changed) of its newest change still in the ring, up
        to head (of slot ``only`` alone, if given). What a slot held when its last change was
        announced: the fallback for a slot a dead publisher left mid-write, and what the
        takeover's repair compares a broken slot with.

        It reads the records of head, head - 1, ..., head - ring_size + 1: every record the ring
        can hold, never one above the head (it may be half-written, or a change nobody
        announced). Each with read_record()'s two sequence checks: a reader's fallback runs
        with no lock held, and a new publisher may start overwriting the oldest records
        meanwhile (the repair holds the lock and could do with one check; one path serves
        both)."""
        found: Dict[int, Tuple[int, Tuple[Any, ...], int, int]] = {}
        for seq in range(head, max(0, head - self.geometry.ring_size), -1):
            rec = self.read_record(seq)
            if rec is None or rec[0] in found or (only is not None and rec[0] != only):
                continue
            found[rec[0]] = (seq, rec[1], rec[2], rec[3])
            if only is not None:
                break
        return found


def _printable(name: bytes) -> bool:
    return all(0x21 <= b <= 0x7E for b in name)


def symbols_of(reader: FeedReader, start: int, stop: int) -> Dict[str, int]:
    """Map symbol -> slot index for slots [start, stop); raises BadSegment on a bad or
    repeated name (a repeat would shift every later slot's name)."""
    found: Dict[str, int] = {}
    for i in range(start, stop):
        name = reader.symbol_at(i)
        if name in found:
            raise BadSegment(f"damaged slot table: symbol {name!r} is in slots {found[name]} and {i}")
        found[name] = i
    return found
