"""The single writer's side of the protocol (Rules 1 to 4 and 6 of the package), over any buffer.

The caller holds the publisher lock. ``FeedWriter`` never wakes anyone: it bumps the wake words
(Rule 3) and the caller makes the wake-up system calls after it (``Announcer``), except where
an implementation that does both in one call says so (``wakes``).

This is the reference implementation; ``accel`` binds the hot methods to the C core.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from . import layout as L
from .header import Geometry
from .ordering import FENCES, fence_release
from .reader import (  # the word indices are derived once, there
    _CLOSED,
    _EPOCH,
    _EPOCH_MASK,
    _FUTEX,
    _FUTEX_MASK,
    _HEAD,
    _PID,
    _PSTATE,
    _R_CHANGED,
    _R_SEQ,
    _R_SLOT,
    _R_TIME,
    _R_VALUES,
    _S_CHANGED,
    _S_LOCK,
    _S_SEQ,
    _S_TIME,
    _S_VALUES,
    _SLOT_COUNT,
    _WAKE,
    _WAKE_MASK,
    FeedReader,
)

_LOCK_MASK = (1 << 63) - 1  # keeps lock + 2 inside a u64 whatever the word held


class FeedWriter(FeedReader):
    """The single writer's side: Rules 1 to 4 and 6. The caller holds the publisher lock."""

    def __init__(self, buf: memoryview, geometry: Geometry, address: Optional[int] = None, wake: bool = False) -> None:
        """``wake``: let commit() and commit_many() make the wake-up system calls themselves,
        where the implementation can (this one cannot: ``wakes`` stays False)."""
        super().__init__(buf, geometry, address)
        self._value_views = [self._d if kind == L.TYPE_F64 else self._s for _, kind in geometry.fields]

    def write_symbol(self, index: int, symbol: bytes) -> None:
        """Name a slot that ``slot_count`` does not yet cover (Rule 4)."""
        start = L.symbol_offset(index)
        self._buf[start : start + L.SYMBOL_FIELD] = symbol.ljust(L.SYMBOL_FIELD, b"\0")
        # No reader looks at a slot slot_count does not cover, so it may be reset wholesale,
        # odd lock and all (a publisher may have died while adding it).
        start = (self._slots + index * self._slot_words) * 8
        self._buf[start : start + self.geometry.slot_size] = bytes(self.geometry.slot_size)

    def set_slot_count(self, n: int) -> None:
        if FENCES:
            fence_release()  # pairs with the acquire in slot_count()
        self._i[_SLOT_COUNT] = n

    def commit(self, index: int, values: Tuple[Any, ...], changed: int, time_ns: int, seq: int) -> None:
        """One change, whole: slot and ring record, head, wake words (Rules 1 to 3). The
        caller wakes the words (Announcer.change), unless the C accelerator, which does all of
        this in one call, already has (``wakes``)."""
        self.write_change(index, values, changed, time_ns, seq)
        self.set_head(seq)
        self.announce(index)

    def commit_many(
        self, changes: List[Tuple[int, Tuple[Any, ...], int]], time_ns: int, first_seq: int, slot_count: int = -1
    ) -> Set[int]:
        """A batch, whole: each (slot, values, changed) as write_change() with consecutive
        sequences from ``first_seq``; then ``slot_count``, if >= 0 (the batch named new slots;
        Rule 4: after their first values, before the head); then the head once and each wake
        word concerned once (Rule 3). Returns the wake-table words to wake."""
        words: Set[int] = set()
        seq = first_seq - 1
        for index, values, changed in changes:
            seq += 1
            self.write_change(index, values, changed, time_ns, seq)
            words.add(index & _WAKE_MASK)
        if slot_count >= 0:
            self.set_slot_count(slot_count)
        if changes:
            self.set_head(seq)
            self.announce_words(words)
        return words

    def write_change(self, index: int, values: Tuple[Any, ...], changed: int, time_ns: int, seq: int) -> None:
        """Write one change into its slot and its ring record (Rules 1 and 2)."""
        self._write_slot(index, values, changed, time_ns, seq)
        q = self._q
        r = self._ring + (seq & self._mask) * self._rec_words
        q[r + _R_SEQ] = 0
        if FENCES:
            fence_release()  # pairs with the second acquire in read_record()
        self._i[2 * r + _R_SLOT] = index
        self._i[2 * r + _R_CHANGED] = changed
        q[r + _R_TIME] = time_ns
        self._store_values(r + _R_VALUES, values)
        if FENCES:
            fence_release()  # pairs with the first acquire in read_record()
        q[r + _R_SEQ] = seq

    def _write_slot(self, index: int, values: Tuple[Any, ...], changed: int, time_ns: int, seq: int) -> None:
        q = self._q
        b = self._slots + index * self._slot_words
        lock = q[b + _S_LOCK] & _LOCK_MASK  # the mask only matters for a damaged lock word
        q[b + _S_LOCK] = lock + 1
        if FENCES:
            fence_release()  # pairs with the second acquire in read_slot()
        q[b + _S_SEQ] = seq
        q[b + _S_TIME] = time_ns
        self._i[2 * b + _S_CHANGED] = changed
        self._store_values(b + _S_VALUES, values)
        if FENCES:
            fence_release()  # pairs with the first acquire in read_slot()
        q[b + _S_LOCK] = lock + 2

    def _store_values(self, word: int, values: Tuple[Any, ...]) -> None:
        """Each value with one aligned 8-byte store (never struct.pack_into, which zeroes its
        target first): a publisher that dies half-way leaves every field old or new, whole,
        which the takeover's repair relies on."""
        for view, value in zip(self._value_views, values):
            view[word] = value
            word += 1

    @staticmethod
    def merge(
        current: Tuple[Any, ...], fields: Dict[str, Any], spec: Dict[str, int]
    ) -> Optional[Tuple[Tuple[Any, ...], int]]:
        """The record after setting ``fields`` (name -> value) over ``current``, and the mask
        of the fields that differ (a value equal to the current one, as -0.0 to 0.0, leaves
        it as it was): the publisher's common case, in one pass. ``spec`` maps each name to
        its position for a f64 field, to ~position for an i64 one. None for anything but a
        known name with a value of its field's own type as it comes (a finite float; an int
        in the i64 range): the caller then converts, or refuses, with the full checks."""
        merged = list(current)
        changed = 0
        for name, v in fields.items():
            k = spec.get(name)
            if k is None:
                return None
            if k >= 0:  # f64
                if type(v) is not float or v - v:
                    return None
            else:
                k = ~k
                if type(v) is not int or v not in L.I64_RANGE:
                    return None
            if current[k] != v:
                changed |= 1 << k
                merged[k] = v
        return tuple(merged), changed

    def commit_merge(
        self, index: int, current: Tuple[Any, ...], fields: Dict[str, Any], spec: Dict[str, int], time_ns: int, seq: int
    ) -> Optional[Tuple[Any, ...]]:
        """merge(), then commit() of the record it makes when a field differs: the publisher's
        common case in one call. Returns that record (committed), ``current`` itself (nothing
        differs: nothing written), or None (merge() could not say: nothing written)."""
        merged = self.merge(current, fields, spec)
        if merged is None:
            return None
        values, changed = merged
        if not changed:
            return current
        self.commit(index, values, changed, time_ns, seq)
        return values

    # -- repair after a publisher died mid-change (the caller holds the publisher lock) ------
    def slot_raw(self, index: int) -> Tuple[int, Tuple[Any, ...], int, int, int]:
        """(lock, values, time_ns, seq, changed) as they are, with no seqlock: only for the
        lock holder."""
        b = self._slots + index * self._slot_words
        seq, time_ns, changed, *values = self._slot_struct.unpack_from(self._buf, (b + 1) * 8)
        return self._q[b + _S_LOCK], tuple(values), time_ns, seq, changed

    def restore_slot(self, index: int, values: Tuple[Any, ...], changed: int, time_ns: int, seq: int) -> None:
        """Make a slot's lock even again and give it these values, without a ring record."""
        b = self._slots + index * self._slot_words
        lock = self._q[b + _S_LOCK] & _LOCK_MASK
        if lock & 1:
            self._q[b + _S_LOCK] = lock + 1  # forward, never back to a value readers saw
        self._write_slot(index, values, changed, time_ns, seq)

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
        step = self._slot_words
        for b in range(self._slots, self._slots + self.slot_count() * step, step):
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
