"""The seqlock and ring protocol over any buffer: no I/O, no system calls, no clocks.

``FeedWriter`` and ``FeedReader`` take any writable or readable buffer of the right size: a
``bytearray`` in unit tests, the shared-memory mapping in real use. Offsets come from
``_layout`` only; ordering from ``_ordering`` only. docs/protocol.md states these rules in prose.

Rule 1 (slot seqlock). The writer makes ``lock`` odd, writes price, time and seq, then makes
        ``lock`` even again (+2 in all). A reader's copy is consistent when it read the same even
        ``lock`` before and after copying the fields.
Rule 2 (ring record). The writer stores 0 in the record's ``seq``, writes the fields, then
        stores the change's sequence. A reader that wants change ``s`` copies the fields
        between two loads of ``seq``; unless both equal ``s`` the record was overwritten: the
        reader was lapped (``lapped()``).
Rule 3 (order of a change). Slot first, ring record second, ``head_seq`` third, then the
        slot's word in the wake table and the header's wake word, and the wake-up last (the
        caller's). So a change whose sequence is <= head has its record and its slot written,
        and a reader that loads a wake word before ``head_seq`` cannot miss a wake-up.
Rule 4 (new symbols). The symbol's bytes and its first value go into the slot before
        ``slot_count`` covers it, so a reader never sees a half-made slot.
Rule 5 (trust nothing). The reader checks every index and count it loads from the segment
        against the geometry it validated at open, and raises BadSegment instead of reading
        out of range.
Rule 6 (who publishes). A publisher that takes the feed stores ``publisher_state`` (its new
        epoch, "holds", the count of clean handovers) before ``publisher_epoch``; one that
        closes cleanly stores ``publisher_state`` ("closed") after its last change. A reader
        loads ``publisher_epoch`` before ``publisher_state``, so the state it finds is never
        older than the epoch it found (``publisher_view``), and decides with the pure
        functions at the end of this module what a change of them means.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from .._errors import BadSegment, LayoutVersionMismatch
from . import layout as L
from .accel import fast_feed
from .ordering import FENCES, fence_acquire, fence_release

#: How many times a reader retries a slot whose lock is odd or moved before it gives the
#: caller the chance to sleep and to check that the publisher is alive (see Subscriber).
SPIN_TRIES = 200

_Q = 8  # bytes per "Q" item
_I = 4  # bytes per "I" item

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
_HANDOVERS_MASK = (1 << L.HANDOVERS_BITS) - 1
#: How many times publisher_view() loads the two words again when it finds a takeover halfway
#: through (its state stored, its epoch not yet): the gap is two stores wide, unless the
#: publisher died between them.
SETTLE_TRIES = 100
_S_LOCK = L.SLOT_LOCK // _Q
_S_PRICE = L.SLOT_PRICE // _Q
_S_TIME = L.SLOT_TIME // _Q
_S_SEQ = L.SLOT_SEQ // _Q
_R_SEQ = L.REC_SEQ // _Q
_R_SLOT = L.REC_SLOT // _I
_R_PRICE = L.REC_PRICE // _Q
_R_TIME = L.REC_TIME // _Q
_SLOT_WORDS = L.SLOT_SIZE // _Q
_SLOTS = L.SLOTS_OFFSET // _Q  # first word of the slot table
_SLOT_FIELDS = struct.Struct("<dQQ")  # price, time_ns, seq: read in one call inside the seqlock
_RECORD_FIELDS = struct.Struct("<IIdQ")  # slot, flags, price, time_ns
# The hot paths lean on these facts of the layout; a layout change that breaks one stops here.
assert _S_LOCK == 0 and _R_SEQ == 0, "the lock and the record's seq open their slot and record"
assert (L.SLOT_PRICE, L.SLOT_TIME, L.SLOT_SEQ) == (8, 16, 24), "_SLOT_FIELDS reads price, time, seq"
assert (L.REC_SLOT, L.REC_FLAGS, L.REC_PRICE, L.REC_TIME) == (8, 12, 16, 24), "_RECORD_FIELDS"
_LOCK_MASK = (1 << 63) - 1  # keeps lock + 2 inside a u64 whatever the word held
_REC_WORDS = L.RECORD_SIZE // _Q


class Geometry(NamedTuple):
    capacity: int
    ring_size: int
    incarnation: int
    created_ns: int
    size: int


class Initialising(BadSegment):
    """Layout version 0: the creator has not finished writing the header (yet)."""


def lapped(found_seq: int, wanted_seq: int) -> bool:
    """True when a ring record no longer holds (or does not yet hold) the wanted change."""
    return found_seq != wanted_seq


def initialise(buf: memoryview, capacity: int, ring_size: int, incarnation: int, created_ns: int) -> None:
    """Lay out an empty feed in a zero-filled buffer; ``version`` is written last."""
    L.check_geometry(capacity, ring_size)
    q = buf.cast("Q")
    i = buf.cast("I")
    try:
        q[L.OFF_MAGIC // _Q] = L.MAGIC
        i[L.OFF_HEADER_SIZE // _I] = L.HEADER_SIZE
        q[L.OFF_INCARNATION // _Q] = incarnation
        i[L.OFF_CAPACITY // _I] = capacity
        i[L.OFF_RING_SIZE // _I] = ring_size
        i[L.OFF_SLOT_SIZE // _I] = L.SLOT_SIZE
        i[L.OFF_RECORD_SIZE // _I] = L.RECORD_SIZE
        q[L.OFF_CREATED_NS // _Q] = created_ns
        q[L.OFF_SLOTS_OFFSET // _Q] = L.SLOTS_OFFSET
        q[L.OFF_RING_OFFSET // _Q] = L.ring_offset(capacity)
        i[L.OFF_WAKE_WORDS // _I] = L.WAKE_WORDS
        fence_release()  # pairs with the acquire in read_geometry() after loading version
        i[L.OFF_VERSION // _I] = L.LAYOUT_VERSION
    finally:
        q.release()
        i.release()


def read_geometry(buf: memoryview) -> Geometry:
    """Validate the header of a segment-shaped buffer; raise BadSegment saying what is wrong."""
    size = len(buf)
    if size < L.HEADER_SIZE:
        raise BadSegment(
            f"segment is {size} bytes, smaller than a pricefeed header ({L.HEADER_SIZE} bytes): not a pricefeed feed"
        )
    version = int.from_bytes(buf[L.OFF_VERSION : L.OFF_VERSION + 4], "little")
    fence_acquire()  # pairs with the release in initialise() before storing version
    head = bytes(buf[: L.HEADER_SIZE])

    def u32(off: int) -> int:
        return int.from_bytes(head[off : off + 4], "little")

    def u64(off: int) -> int:
        return int.from_bytes(head[off : off + 8], "little")

    magic = head[L.OFF_MAGIC : L.OFF_MAGIC + 8]
    if magic == bytes(8) and version == 0:
        raise Initialising("segment is still being created (its header is all zeros)")
    if magic == bytes(8):
        # The creator stores magic before version (with a release fence between), and the
        # acquire above means a version we see comes with the magic stored before it.
        raise BadSegment(
            f"damaged header: magic is 0 but version is {version}; a creator stores magic before version, "
            "so this is damage, not a segment still being created"
        )
    if magic != L.MAGIC_BYTES:
        raise BadSegment(f"not a pricefeed segment: its first 8 bytes are {magic!r}, expected {L.MAGIC_BYTES!r}")
    if version == 0:
        raise Initialising(
            "segment is still being initialised (layout version 0): its creator has not finished, or died before it did"
        )
    if version != L.LAYOUT_VERSION:
        raise LayoutVersionMismatch(
            f"segment has layout version {version}; this pricefeed reads version {L.LAYOUT_VERSION}"
        )
    expected = {
        "header_size": (u32(L.OFF_HEADER_SIZE), L.HEADER_SIZE),
        "wake_words": (u32(L.OFF_WAKE_WORDS), L.WAKE_WORDS),
        "slot_size": (u32(L.OFF_SLOT_SIZE), L.SLOT_SIZE),
        "record_size": (u32(L.OFF_RECORD_SIZE), L.RECORD_SIZE),
        "slots_offset": (u64(L.OFF_SLOTS_OFFSET), L.SLOTS_OFFSET),
    }
    for name, (found, want) in expected.items():
        if found != want:
            raise BadSegment(f"damaged header: {name} is {found}, expected {want}")
    capacity = u32(L.OFF_CAPACITY)
    ring_size = u32(L.OFF_RING_SIZE)
    try:
        L.check_geometry(capacity, ring_size)
    except ValueError as exc:
        raise BadSegment(f"damaged header: {exc}") from None
    ring_off = u64(L.OFF_RING_OFFSET)
    if ring_off != L.ring_offset(capacity):
        raise BadSegment(
            f"damaged header: ring_offset is {ring_off}, expected {L.ring_offset(capacity)} for capacity {capacity}"
        )
    need = L.segment_size(capacity, ring_size)
    if size < need:
        raise BadSegment(
            f"segment is truncated: {size} bytes, expected at least {need} for capacity "
            f"{capacity} and ring size {ring_size}"
        )
    incarnation = u64(L.OFF_INCARNATION)
    if incarnation == 0:
        raise BadSegment("damaged header: incarnation is 0, expected a non-zero random id")
    return Geometry(capacity, ring_size, incarnation, u64(L.OFF_CREATED_NS), need)


class _Views:
    """Typed views of one feed buffer. ``release()`` before the buffer's owner closes it.

    Given the buffer's ``address``, the C accelerator (where built: see _accel) takes over the
    hot methods of this instance; they behave the same, step for step."""

    def __init__(self, buf: memoryview, geometry: Geometry, address: Optional[int] = None, wake: bool = False) -> None:
        self.geometry = geometry
        # Only the bytes the geometry covers: a longer segment is accepted, and its tail (of
        # any length, even one a "Q" cast would refuse) is never looked at.
        buf = buf[: geometry.size]
        self._buf = buf
        self._q = buf.cast("Q")
        self._i = buf.cast("I")
        self._d = buf.cast("d")
        self._capacity = geometry.capacity
        self._mask = geometry.ring_size - 1
        self._ring = L.ring_offset(geometry.capacity) // _Q
        #: True when commit() and commit_many() also wake the words they bump.
        self.wakes = False
        self._fast = None
        if address is not None:
            self._fast = fast_feed(address, geometry.capacity, geometry.ring_size, SPIN_TRIES, wake)
            if self._fast is not None:
                self._accelerate(self._fast, wake)

    def _accelerate(self, fast: Any, wake: bool) -> None:
        self.spin = fast.spin  # type: ignore[method-assign]

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
        if self._fast is not None:
            self._fast.close()  # before the mapping goes: it holds a bare pointer
        for view in (self._q, self._i, self._d, self._buf):
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
        start = L.slot_offset(index) + L.SLOT_SYMBOL
        raw = bytes(self._buf[start : start + L.SYMBOL_FIELD])
        name = raw.split(b"\0", 1)[0]
        if not name or not _printable(name) or len(name) > L.SYMBOL_MAX:
            raise BadSegment(f"damaged slot {index}: its symbol field {raw!r} is not a valid symbol")
        return name.decode("ascii")


def _printable(name: bytes) -> bool:
    return all(0x21 <= b <= 0x7E for b in name)


class FeedReader(_Views):
    """Consistent copies out of a feed buffer (Rules 1, 2 and 5). Never writes."""

    #: The C accelerator's futex wait on the header's word (None without it): see Subscriber.
    wait_head: Any = None

    def _accelerate(self, fast: Any, wake: bool) -> None:
        super()._accelerate(fast, wake)
        self.wait_head = fast.wait_head
        self.read_slot = fast.read_slot  # type: ignore[method-assign]
        self.read_slots = fast.read_slots  # type: ignore[method-assign]
        self.read_record = fast.read_record  # type: ignore[method-assign]

    def read_slot(self, index: int) -> Optional[Tuple[float, int, int]]:
        """(price, time_ns, seq) of slot ``index``, or None when SPIN_TRIES copies all raced
        a write (the caller sleeps and checks that the writer is alive before trying again).

        The three fields are copied with one ``unpack_from``: its copy is not atomic field by
        field, and need not be, since any write that overlaps it moves the lock (Rule 1)."""
        q = self._q
        b = _SLOTS + index * _SLOT_WORDS
        offset = (b + _S_PRICE) * _Q
        for _ in range(SPIN_TRIES):
            lock = q[b]
            if lock & 1:
                continue
            if FENCES:
                fence_acquire()  # pairs with the release before the even store in commit()
            got = _SLOT_FIELDS.unpack_from(self._buf, offset)
            if FENCES:
                fence_acquire()  # pairs with the release after the odd store in commit()
            if q[b] == lock:
                price = got[0]
                if price - price:  # NaN or infinite: never written by a publisher (Rule 5)
                    raise BadSegment(f"damaged slot {index}: its price is {price}")
                return got
        return None

    def read_slots(self, count: int) -> List[Optional[Tuple[float, int, int]]]:
        """read_slot() of slots [0, count), in one call (a snapshot's path): None where a slot
        raced a write on the first try; the caller reads those again with read_slot()."""
        q = self._q
        buf = self._buf
        unpack = _SLOT_FIELDS.unpack_from
        out: List[Optional[Tuple[float, int, int]]] = []
        append = out.append
        for b in range(_SLOTS, _SLOTS + count * _SLOT_WORDS, _SLOT_WORDS):
            lock = q[b]
            if FENCES:
                fence_acquire()  # as in read_slot()
            got = unpack(buf, (b + _S_PRICE) * _Q)
            if FENCES:
                fence_acquire()
            if lock & 1 or q[b] != lock:
                append(None)
            elif got[0] - got[0]:
                raise BadSegment(f"damaged slot {(b - _SLOTS) // _SLOT_WORDS}: its price is {got[0]}")
            else:
                append(got)
        return out

    def read_record(self, seq: int) -> Optional[Tuple[int, float, int]]:
        """(slot, price, time_ns) of change ``seq``, or None when the reader was lapped."""
        q = self._q
        r = self._ring + (seq & self._mask) * _REC_WORDS
        if lapped(q[r], seq):
            return None
        if FENCES:
            fence_acquire()  # pairs with the release before the seq store in write_change()
        slot, _, price, time_ns = _RECORD_FIELDS.unpack_from(self._buf, (r + 1) * _Q)
        if FENCES:
            fence_acquire()  # pairs with the release after the 0 store in write_change()
        if lapped(q[r], seq):
            return None
        if (slot >= self._capacity and slot != L.SLOT_VOID) or price - price:
            raise BadSegment(
                f"damaged ring record for change {seq}: slot {slot} (table of {self._capacity}), price {price}"
            )
        return slot, price, time_ns

    def newest_records(self, head: int, only: Optional[int] = None) -> Dict[int, Tuple[int, float, int]]:
        """slot -> (seq, price, time_ns) of its newest change still in the ring, up to head
        (of slot ``only`` alone, if given). What a slot held when its last change was
        announced: the fallback for a slot a dead publisher left mid-write, and what the
        takeover's repair compares a broken slot with.

        It reads the records of head, head - 1, ..., head - ring_size + 1: every record the ring
        can hold, never one above the head (it may be half-written, or a change nobody
        announced). Each with read_record()'s two sequence checks: a reader's fallback runs
        with no lock held, and a new publisher may start overwriting the oldest records
        meanwhile (the repair holds the lock and could do with one check; one path serves
        both)."""
        found: Dict[int, Tuple[int, float, int]] = {}
        for seq in range(head, max(0, head - self.geometry.ring_size), -1):
            rec = self.read_record(seq)
            if rec is None or rec[0] in found or (only is not None and rec[0] != only):
                continue
            found[rec[0]] = (seq, rec[1], rec[2])
            if only is not None:
                break
        return found


class FeedWriter(FeedReader):
    """The single writer's side: Rules 1 to 4. The caller holds the publisher lock."""

    def _accelerate(self, fast: Any, wake: bool) -> None:
        super()._accelerate(fast, wake)
        self.commit = fast.commit  # type: ignore[method-assign]
        self.commit_many = fast.commit_many  # type: ignore[method-assign]
        self.wakes = wake

    def write_symbol(self, index: int, symbol: bytes) -> None:
        """Name a slot that ``slot_count`` does not yet cover (Rule 4)."""
        start = L.slot_offset(index)
        # No reader looks at a slot slot_count does not cover, so it may be reset wholesale,
        # odd lock and all (a publisher may have died while adding it).
        self._buf[start : start + L.SLOT_SIZE] = bytes(L.SLOT_SYMBOL) + symbol.ljust(L.SYMBOL_FIELD, b"\0")

    def set_slot_count(self, n: int) -> None:
        if FENCES:
            fence_release()  # pairs with the acquire in slot_count()
        self._i[_SLOT_COUNT] = n

    def commit(self, index: int, price: float, time_ns: int, seq: int) -> None:
        """One change, whole: slot and ring record, head, wake words (Rules 1 to 3). The
        caller wakes the words (Announcer.change), unless the C accelerator, which does all of
        this in one call, already has (``wakes``)."""
        self.write_change(index, price, time_ns, seq)
        self.set_head(seq)
        self.announce(index)

    def commit_many(
        self, changes: List[Tuple[int, float]], time_ns: int, first_seq: int, slot_count: int = -1
    ) -> Set[int]:
        """A batch, whole: each (slot, price) as write_change() with consecutive sequences
        from ``first_seq``; then ``slot_count``, if >= 0 (the batch named new slots; Rule 4:
        after their first values, before the head); then the head once and each wake word
        concerned once (Rule 3). Returns the wake-table words to wake."""
        words: Set[int] = set()
        seq = first_seq - 1
        for index, price in changes:
            seq += 1
            self.write_change(index, price, time_ns, seq)
            words.add(index & _WAKE_MASK)
        if slot_count >= 0:
            self.set_slot_count(slot_count)
        if changes:
            self.set_head(seq)
            self.announce_words(words)
        return words

    def write_change(self, index: int, price: float, time_ns: int, seq: int) -> None:
        """Write one change into its slot and its ring record (Rules 1 and 2)."""
        self._write_slot(index, price, time_ns, seq)
        q = self._q
        r = self._ring + (seq & self._mask) * _REC_WORDS
        q[r + _R_SEQ] = 0
        if FENCES:
            fence_release()  # pairs with the second acquire in read_record()
        self._i[2 * r + _R_SLOT] = index
        self._d[r + _R_PRICE] = price
        q[r + _R_TIME] = time_ns
        if FENCES:
            fence_release()  # pairs with the first acquire in read_record()
        q[r + _R_SEQ] = seq

    def _write_slot(self, index: int, price: float, time_ns: int, seq: int) -> None:
        q = self._q
        b = _SLOTS + index * _SLOT_WORDS
        lock = q[b + _S_LOCK] & _LOCK_MASK  # the mask only matters for a damaged lock word
        q[b + _S_LOCK] = lock + 1
        if FENCES:
            fence_release()  # pairs with the second acquire in read_slot()
        self._d[b + _S_PRICE] = price
        q[b + _S_TIME] = time_ns
        q[b + _S_SEQ] = seq
        if FENCES:
            fence_release()  # pairs with the first acquire in read_slot()
        q[b + _S_LOCK] = lock + 2

    # -- repair after a publisher died mid-change (the caller holds the publisher lock) ------
    def slot_raw(self, index: int) -> Tuple[int, float, int, int]:
        """(lock, price, time_ns, seq) as they are, with no seqlock: only for the lock holder."""
        b = _SLOTS + index * _SLOT_WORDS
        return self._q[b + _S_LOCK], self._d[b + _S_PRICE], self._q[b + _S_TIME], self._q[b + _S_SEQ]

    def restore_slot(self, index: int, price: float, time_ns: int, seq: int) -> None:
        """Make a slot's lock even again and give it these values, without a ring record."""
        b = _SLOTS + index * _SLOT_WORDS
        lock = self._q[b + _S_LOCK] & _LOCK_MASK
        if lock & 1:
            self._q[b + _S_LOCK] = lock + 1  # forward, never back to a value readers saw
        self._write_slot(index, price, time_ns, seq)

    def set_head(self, seq: int) -> None:
        if FENCES:
            fence_release()  # Rule 3: the record is complete before head covers it
        self._q[_HEAD] = seq

    def announce(self, index: int) -> None:
        """Bump the wake words a change of slot ``index`` concerns: its word in the wake
        table, then the header's (Rule 3); the caller wakes both."""
        i = self._i
        w = _WAKE + (index & _WAKE_MASK)
        if FENCES:
            fence_release()  # the head is visible before the words that announce it
        i[w] = (i[w] + 1) & 0xFFFFFFFF
        i[_FUTEX] = (i[_FUTEX] + 1) & _FUTEX_MASK

    def announce_words(self, words: Iterable[int]) -> None:
        """Bump these words of the wake table, then the header's (a batch: Rule 3)."""
        i = self._i
        if FENCES:
            fence_release()  # the head is visible before the words that announce it
        for w in words:
            i[_WAKE + w] = (i[_WAKE + w] + 1) & 0xFFFFFFFF
        i[_FUTEX] = (i[_FUTEX] + 1) & _FUTEX_MASK

    def bump_all(self) -> None:
        """Bump every wake word (for what concerns every subscriber: the end, a takeover)."""
        i = self._i
        if FENCES:
            fence_release()
        for w in range(_WAKE, _WAKE + L.WAKE_WORDS):
            i[w] = (i[w] + 1) & 0xFFFFFFFF
        i[_FUTEX] = (i[_FUTEX] + 1) & _FUTEX_MASK

    def set_closed(self) -> None:
        if FENCES:
            fence_release()  # pairs with the acquire in closed(): the last head comes first
        self._i[_CLOSED] = 1
        self.bump_all()

    def intact(self) -> bool:
        """No slot in use is odd or ahead of the head: nothing for a takeover to repair."""
        head = self.head()
        q = self._q
        for b in range(_SLOTS, _SLOTS + self.slot_count() * _SLOT_WORDS, _SLOT_WORDS):
            if q[b + _S_LOCK] & 1 or q[b + _S_SEQ] > head:
                return False
        return True

    def take_over(self, pid: int, intact: bool) -> int:
        """Record a new publisher (Rule 6); returns its epoch (how many have taken the feed).

        The handover counts as clean when the word describes the previous epoch and says it
        closed cleanly, and the feed is ``intact`` (a clean close is checked, not trusted): a
        word of an older epoch means the previous publisher did not write it (an older writer),
        and a first publisher takes nothing over."""
        epoch = self.publisher_epoch()
        before = L.unpack_publisher_state(self._q[_PSTATE])
        clean = intact and epoch != 0 and before.epoch == epoch and before.state == L.PUBLISHER_CLOSED
        new = (epoch + 1) & _EPOCH_MASK
        self._q[_PSTATE] = L.pack_publisher_state(new, L.PUBLISHER_HOLDS, before.handovers + clean)
        if FENCES:
            fence_release()  # pairs with the acquire in publisher_view(): the state, then the epoch
        self._i[_EPOCH] = new
        self._i[_PID] = pid & 0xFFFFFFFF
        return new

    def close_cleanly(self, epoch: int) -> None:
        """Say that the publisher of ``epoch`` gave the feed up with every change complete."""
        handovers = L.unpack_publisher_state(self._q[_PSTATE]).handovers
        if FENCES:
            # Its changes are complete before the word says so. Pairs with the reader's probe of
            # the lock: the caller gives the lock up after this store, and a reader loads the
            # word only once its flock finds the lock free (two system calls on one lock,
            # which the kernel orders).
            fence_release()
        self._q[_PSTATE] = L.pack_publisher_state(epoch, L.PUBLISHER_CLOSED, handovers)


def symbols_of(reader: _Views, start: int, stop: int) -> Dict[str, int]:
    """Map symbol -> slot index for slots [start, stop); raises BadSegment on a bad or
    repeated name (a repeat would shift every later slot's name)."""
    found: Dict[str, int] = {}
    for i in range(start, stop):
        name = reader.symbol_at(i)
        if name in found:
            raise BadSegment(f"damaged slot table: symbol {name!r} is in slots {found[name]} and {i}")
        found[name] = i
    return found


def latest_since(
    read_slot: Callable[[int], Optional[Tuple[float, int, int]]], slots: List[int], after: int, upto: int
) -> List[Tuple[int, int, float, int]]:
    """The current (seq, slot, price, time_ns) of every listed slot whose change falls in
    (after, upto], in feed order. A slot changed again after ``upto`` is left out: that newer
    change is still ahead of the reader in the ring, so giving the older value now would hand
    the caller a price that is already stale (and the symbol twice). ``read_slot`` returns None
    for a slot that is being written right now: its sequence will be > upto, so it is left out
    too."""
    out = []
    for index in slots:
        got = read_slot(index)
        if got is None:
            continue
        price, time_ns, seq = got
        if after < seq <= upto:
            out.append((seq, index, price, time_ns))
    out.sort()
    return out


# -- what a reader makes of the publisher words (Rule 6): pure functions, no I/O -------------------
class Seen(NamedTuple):
    """What a reader last took in of the publishers: the epoch, and the clean handovers."""

    epoch: int
    handovers: int


def takeover_news(seen: Seen, epoch: int, state: L.PublisherState, final: bool) -> Optional[Tuple[int, Seen]]:
    """None when nothing changed since ``seen`` (or nothing can be said yet); else how many of
    the takeovers since then followed a publisher that did not close cleanly (each of those
    may have repaired what it found), and what the reader has seen now.

    A state one takeover ahead of the epoch belongs to a takeover still being recorded: with
    ``final`` False the answer waits for it; with ``final`` True (no process holds the lock,
    so that publisher died between its two stores) the handover it may have counted is not
    believed, so the answer errs towards reporting a restart, never towards hiding one.
    Takeovers by writers that do not keep the word are never counted clean: reported, as
    readers that do not know the word report every takeover."""
    if epoch == seen.epoch:
        return None
    ahead = state.epoch == (epoch + 1) & _EPOCH_MASK
    if ahead and not final:
        return None
    takeovers = (epoch - seen.epoch) & _EPOCH_MASK
    if seen.epoch == 0:
        takeovers -= 1  # the feed's first publisher took nothing over
    clean = (state.handovers - seen.handovers) & _HANDOVERS_MASK
    if ahead:
        clean = max(0, clean - 1)
    return max(0, takeovers - clean), Seen(epoch, state.handovers)


def closed_cleanly(epoch: int, state: L.PublisherState) -> bool:
    """Whether the publisher of ``epoch`` (no process holds the lock now) closed cleanly."""
    return epoch != 0 and state.epoch == epoch and state.state == L.PUBLISHER_CLOSED


def check_head(head: int, cursor: int, feed: str) -> None:
    """A head below the reader's cursor: sequences only grow for a segment's life, and a
    feed that is removed and created anew is a different segment, never this mapping; so
    this one was damaged, or rewritten in place by something that is not a conforming writer,
    and nothing validated at open can be trusted any longer."""
    if head < cursor:
        raise BadSegment(
            f"feed {feed!r}: head_seq went back from {cursor} to {head}; sequences only grow for a segment's "
            "life, so the segment was damaged or rewritten in place"
        )
