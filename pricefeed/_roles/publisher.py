"""The publisher: the one process that writes a feed.

It composes a Segment (the mapping and the single-publisher lock), a FeedWriter (the seqlock and
ring protocol) and a wake word (the wait backend). It keeps in its own memory what it alone
writes: the head sequence, the symbol index and each symbol's last price, so the publish path
reads nothing back from shared memory.
"""

from __future__ import annotations

import math
import operator
import os
import secrets
import time
import warnings
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from .._errors import (
    BadSegment,
    FeedEnded,
    FeedExists,
    FeedFull,
    FeedNotFound,
    InvalidGeometry,
    InvalidInput,
    PricefeedError,
)
from .._protocol import implementation
from .._protocol import layout as L
from .._protocol.header import Geometry, initialise, read_geometry
from .._protocol.reader import symbols_of
from .._protocol.writer import FeedWriter
from .._segment import Segment
from .._segment.attach import attach
from .._segment.common import Owner
from .._values import check_price, check_symbol
from .._wait import waker
from .announce import Announcer

__all__ = ["Publisher"]

Items = Union[Mapping[str, float], Iterable[Tuple[str, float]]]


def _check_mode(mode: int, allow_world_writable: bool) -> int:
    if not isinstance(mode, int) or isinstance(mode, bool) or mode & ~0o777 or mode & 0o600 != 0o600:
        raise InvalidGeometry(
            f"mode must be a permission from 0o600 to 0o777 that lets the owner read and write: "
            f"mode={oct(mode) if isinstance(mode, int) else repr(mode)}"
        )
    if mode & 0o002 and not allow_world_writable:
        raise InvalidGeometry(
            f"mode {mode:04o} lets every user write the feed, and subscribers refuse such a feed; use a mode "
            "such as 0644 or 0664, or pass allow_world_writable=True (--allow-world-writable) to make it anyway: "
            f"mode={mode:04o}"
        )
    return mode


_time_ns = time.time_ns


def _check_time(time_ns: object) -> int:
    """A caller's time stamp (the callers take the time themselves when it is None)."""
    try:
        t = operator.index(time_ns)  # type: ignore[arg-type]  # int, numpy integers; not float, not bool
    except TypeError:
        t = -1
    if isinstance(time_ns, bool) or not 0 <= t < 1 << 64:
        raise InvalidInput(f"time_ns must be a whole number of ns from 0 to 2**64-1: time_ns={time_ns!r}")
    return t


class Publisher:
    """Writes the latest price of each symbol into a feed and wakes its subscribers.

    Use ``Publisher.create(name)`` for a new feed, ``Publisher.open(name)`` to take over an
    existing one (its sequence continues), or ``Publisher.open_or_create(name)``. One publisher
    per feed at a time: the others get FeedBusy naming the holder's pid.
    """

    def __init__(self, segment: Segment, geometry: Geometry, backend: Optional[str] = None) -> None:
        waiter = waker(backend)
        self._seg = segment
        self.name = segment.feed
        self.geometry = geometry
        # Where the wake words are kernel futexes, a writer that can (the C one) makes the
        # wake-up system call inside commit() itself.
        self._w: Optional[FeedWriter] = implementation().Writer(
            segment.view, geometry, segment.address, waiter.futex_words
        )
        self._capacity = geometry.capacity
        self.pid = os.getpid()
        w = self._writer_unchecked()
        try:
            self._wake = Announcer(waiter, segment, geometry.incarnation)
            self._ended = w.closed()
            if not self._ended:
                # Announce the takeover before repairing, so that a subscriber sees the
                # PublisherRestarted event before any change the repair publishes.
                self.epoch = w.take_over(self.pid, w.intact())
                w.bump_all()
                self._wake.everyone()
                self._took_over = True
            else:
                self.epoch = w.publisher_epoch()
            self._load_state()
        except BaseException:
            self._release()
            raise

    def _load_state(self) -> None:
        """(Re)build what this publisher keeps in its own memory from the segment, after
        repairing anything a previous writer left half-done. Used when taking the feed over,
        and after an exception (a KeyboardInterrupt, say) cut a publish short."""
        w = self._writer_unchecked()
        self._head = w.head()
        self._count = w.slot_count()
        self._index: Dict[str, int] = symbols_of(w, 0, self._count)
        self._ended = w.closed()
        if not self._ended:
            self._repair()
        self._last: List[float] = [w.slot_raw(i)[1] for i in range(self._count)]

    #: Slots the last takeover (or resync) found half-written and repaired.
    repaired = 0
    #: True once this publisher recorded itself in the feed (not for a feed found ended).
    _took_over = False

    def _repair(self) -> None:
        """Finish what a publisher that died in the middle of a change left behind.

        A dead publisher can leave a slot with an odd lock (it died inside the slot's write),
        or a slot whose sequence is past the head (the slot was written, the head never
        moved: a change nobody was told of, whose number we are about to hand out again).
        For each such slot: if its price is the one of its newest published change, that
        change is put back (no event); otherwise the price it holds, which is whole since
        every field is a single store, is published now as a new change, so subscribers get
        the symbol's final state and no sequence number is ever used twice.
        """
        w = self._writer_unchecked()
        head = self._head
        broken = []
        for i in range(self._count):
            lock, _, _, seq = w.slot_raw(i)
            if lock & 1 or seq > head:
                broken.append(i)
        self.repaired = len(broken)
        if not broken:
            return
        newest = w.newest_records(head)
        now = time.time_ns()
        for i in broken:
            _, price, _, _ = w.slot_raw(i)
            known = newest.get(i)
            if known is not None and (known[1] == price or price - price):
                w.restore_slot(i, known[1], known[2], known[0])
            elif price - price:  # not finite, and nothing to restore it from
                raise BadSegment(f"feed {self.name!r}: slot {i} holds no valid price and none is left in the ring")
            else:
                w.restore_slot(i, price, now, head)  # made consistent; the change below re-sets it
                head += 1
                w.write_change(i, price, now, head)
        if head != self._head:
            w.set_head(head)
            self._head = head
            w.bump_all()  # a rare path: wake everyone rather than work out who
            self._wake.everyone()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        capacity: int = L.DEFAULT_CAPACITY,
        ring_size: int = L.DEFAULT_RING,
        mode: int = 0o600,
        backend: Optional[str] = None,
        allow_world_writable: bool = False,
    ) -> Publisher:
        """Create a new feed (FeedExists if the name is taken) and become its publisher.

        ``mode``: who else may read (0o644, 0o640) or also write (0o660, a group of publishers)
        the feed; a mode that lets every user write is refused unless ``allow_world_writable``."""
        try:
            L.check_geometry(capacity, ring_size)
        except ValueError as exc:
            raise InvalidGeometry(str(exc)) from None
        _check_mode(mode, allow_world_writable)
        size = L.segment_size(capacity, ring_size)
        seg = Segment.create(name, size, mode)
        try:
            seg.lock_publisher()
            initialise(seg.view, capacity, ring_size, secrets.randbits(63) | 1, time.time_ns())
            return cls(seg, read_geometry(seg.view), backend)
        except BaseException:
            seg.close()
            seg.unlink()
            raise

    @classmethod
    def open(
        cls, name: str, backend: Optional[str] = None, owner: Owner = None, allow_world_writable: bool = False
    ) -> Publisher:
        """Take over an existing feed. Its values stay, and its sequence continues.

        Only a feed of this process's own user is opened, unless ``owner`` (a user name or
        uid) names the user whose feed it must be: another user's segment found under the name
        raises FeedNotTrusted, with nothing written to it. So does a segment every user may
        write, unless ``allow_world_writable``."""
        seg, geometry = attach(name, writable=True, owner=owner, allow_world_writable=allow_world_writable)
        try:
            pub = cls(seg, geometry, backend)
        except BaseException:
            seg.close()
            raise
        if pub._ended:
            pub.close()
            raise FeedEnded(f"feed {name!r} was ended for good; remove it (pricefeed rm {name}) to start anew")
        return pub

    @classmethod
    def open_or_create(
        cls,
        name: str,
        capacity: int = L.DEFAULT_CAPACITY,
        ring_size: int = L.DEFAULT_RING,
        mode: int = 0o600,
        backend: Optional[str] = None,
        owner: Owner = None,
        allow_world_writable: bool = False,
    ) -> Publisher:
        """Open ``name`` if it exists (capacity, ring size and mode are then ignored), else create
        it. ``owner`` and ``allow_world_writable`` are as for ``open`` and ``create``."""
        for _ in range(3):  # another process may create or remove it between our two calls
            try:
                return cls.open(name, backend, owner, allow_world_writable)
            except FeedNotFound:
                pass
            try:
                return cls.create(name, capacity, ring_size, mode, backend, allow_world_writable)
            except FeedExists:
                pass
        return cls.open(name, backend, owner, allow_world_writable)

    # -- publishing ------------------------------------------------------------------------------
    def publish(self, symbol: str, price: float, time_ns: Optional[int] = None) -> bool:
        """Set ``symbol`` to ``price``. Returns False, with no event and no wake-up, when the
        price equals the current one (0.0 and -0.0 are equal). Raises InvalidPrice,
        InvalidSymbol or FeedFull, having written nothing."""
        w = self._w
        if w is None or self._ended:
            w = self._writer()  # raises the right error
        # The common case first, in line: a finite float, the time now, a known symbol.
        # p - p is 0.0 for a finite p and NaN (truthy) for NaN and the infinities.
        p = price if type(price) is float and not price - price else check_price(price, symbol)
        t = _time_ns() if time_ns is None else _check_time(time_ns)
        try:
            index = self._index.get(symbol)
        except TypeError:  # unhashable
            index = None
        if index is None:
            raw = check_symbol(symbol)
            if self._count >= self._capacity:
                raise FeedFull(self._full_message(1))
            index = self._count
        elif self._last[index] == p:
            return False
        # Past this point only an asynchronous exception (Ctrl-C) can interrupt, and then the
        # local state is rebuilt from the segment, repairing what was left half-written.
        try:
            seq = self._head + 1
            if index == self._count:
                w.write_symbol(index, raw)
                w.write_change(index, p, t, seq)
                w.set_slot_count(index + 1)  # Rule 4: the slot is complete before it is counted
                self._index[symbol] = index
                self._last.append(p)
                self._count = index + 1
                w.set_head(seq)
                w.announce(index)
                self._head = seq
                self._wake.change(index)  # always wake: Rule 3 of _protocol
            else:
                w.commit(index, p, t, seq)  # slot, record, head, wake words (Rules 1 to 3)
                self._last[index] = p
                self._head = seq
                if not w.wakes:  # the C accelerator woke them already
                    self._wake.change(index)
        except BaseException:
            self._resync()
            raise
        return True

    def publish_many(self, items: Items, time_ns: Optional[int] = None) -> int:
        """Publish a batch with one wake-up; returns how many were changes. Every item is
        checked first: if one is invalid, or the new symbols do not fit, nothing is written."""
        w = self._writer()
        pairs = items.items() if isinstance(items, Mapping) else items
        plan: List[Tuple[str, float]] = []
        new: Dict[str, bytes] = {}
        for pair in pairs:
            try:
                symbol, price = pair
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"publish_many takes (symbol, price) pairs or a mapping: got item {pair!r}"
                ) from None
            p = check_price(price, symbol)
            try:
                known = symbol in self._index or symbol in new
            except TypeError:  # unhashable
                known = False
            if not known:
                new[symbol] = check_symbol(symbol)
            plan.append((symbol, p))
        if self._count + len(new) > self._capacity:
            raise FeedFull(self._full_message(len(new)))
        t = _time_ns() if time_ns is None else _check_time(time_ns)
        try:
            for symbol, raw in new.items():
                w.write_symbol(len(self._last), raw)
                self._index[symbol] = len(self._last)
                self._last.append(math.nan)  # unequal to every price: the first publish is a change
            # Which items are changes: compared with the price before, within the batch too.
            last = self._last
            index_of = self._index
            changes: List[Tuple[int, float]] = []
            for symbol, p in plan:
                index = index_of[symbol]
                if last[index] != p:
                    last[index] = p
                    changes.append((index, p))
            count = self._count + len(new)
            words = w.commit_many(changes, t, self._head + 1, count if new else -1)
            self._count = count
            self._head += len(changes)
            if changes and not w.wakes:  # else the C accelerator woke them already
                self._wake.changes(words)
        except BaseException:
            self._resync()
            raise
        return len(changes)

    def _resync(self) -> None:
        if self._w is not None:
            self._load_state()

    def _full_message(self, wanted: int) -> str:
        return (
            f"feed {self.name!r} is full: {self._count} of {self._capacity} slots hold a symbol and "
            f"{wanted} more were asked for (create the feed with a larger --capacity)"
        )

    def _writer_unchecked(self) -> FeedWriter:
        if self._w is None:
            raise PricefeedError(f"publisher of feed {self.name!r} is closed")
        return self._w

    def _writer(self) -> FeedWriter:
        w = self._writer_unchecked()
        if self._ended:
            raise FeedEnded(f"feed {self.name!r} was ended for good; no more changes can be published")
        return w

    # -- state -------------------------------------------------------------------------------------
    @property
    def head(self) -> int:
        """Sequence number of the newest change (0 before the first)."""
        return self._head

    @property
    def symbols(self) -> List[str]:
        return list(self._index)

    def __len__(self) -> int:
        return self._count

    # -- ending ------------------------------------------------------------------------------------
    def end(self) -> None:
        """End the feed for good: subscribers finish their iteration once they have read every
        change, and no publisher may take the feed again. The values stay readable."""
        w = self._writer()
        w.set_closed()
        self._wake.everyone()
        self._ended = True

    def unlink(self) -> None:
        """Remove the feed's name from the system. Processes that have it open keep their
        mapping; new ones get FeedNotFound (or a new feed, if one is created under the name)."""
        self._seg.unlink()

    def close(self) -> None:
        """Give up the publisher role. The values stay, and another publisher may take over.

        A clean close: the feed records that this publisher left with every change complete
        (a publish cut short by an exception was put right before that exception left it), so
        subscribers report its departure as clean and the next publisher's takeover as no
        restart. A publisher that dies, or exits without closing, is reported as gone uncleanly,
        and its successor as a restart."""
        w = self._w
        if w is None:
            return
        if self._took_over and self._intact(w):
            w.close_cleanly(self.epoch)  # before the lock goes: nobody else may write by then
        self._release()
        self._seg.close()

    @staticmethod
    def _intact(w: FeedWriter) -> bool:
        """What a clean close promises, checked on the segment itself rather than trusted: no
        slot odd, none ahead of the head (an exception inside the repair of an interrupted
        publish could leave one; the next publisher must then be told to look)."""
        try:
            return w.intact()
        except BadSegment:
            return False  # damaged meanwhile: certainly nothing to vouch for

    def _release(self) -> None:
        if self._w is not None:
            self._w.release()
            self._w = None
        wake = getattr(self, "_wake", None)  # None when __init__ failed building it
        if wake is not None:
            wake.release()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A dropped publisher must not keep the feed's lock (and a descriptor, and a mapping)
        # for the rest of the process's life.
        if getattr(self, "_w", None) is not None:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2)
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._w is None else f"head={self._head}, symbols={self._count}"
        return f"<Publisher {self.name!r} {state}>"
