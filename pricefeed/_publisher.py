"""The publisher: the one process that writes a feed.

It composes a Segment (the mapping and the single-publisher lock), a FeedWriter (the seqlock and
ring protocol) and a wake word (the wait backend). It keeps in its own memory what it alone
writes: the head sequence, the symbol index and each symbol's last price, so the publish path
reads nothing back from shared memory.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import _layout as L
from ._attach import attach
from ._errors import FeedEnded, FeedExists, FeedFull, FeedNotFound, InvalidGeometry, InvalidInput, PricefeedError
from ._feed import FeedWriter, Geometry, initialise, read_geometry, symbols_of
from ._segment import Segment
from ._values import check_price, check_symbol
from ._wait import WakeWord, select

__all__ = ["Publisher"]

Items = Union[Mapping[str, float], Iterable[Tuple[str, float]]]


def _check_mode(mode: int) -> int:
    if not isinstance(mode, int) or mode & ~0o777 or mode & 0o600 != 0o600:
        raise InvalidGeometry(
            f"mode must be a permission from 0o600 to 0o777 that lets the owner read and write: "
            f"mode={oct(mode) if isinstance(mode, int) else repr(mode)}"
        )
    return mode


def _check_time(time_ns: Optional[int]) -> int:
    if time_ns is None:
        return time.time_ns()
    if not isinstance(time_ns, int) or isinstance(time_ns, bool) or not 0 <= time_ns < 1 << 64:
        raise InvalidGeometry(f"time_ns must be a whole number of ns from 0 to 2**64-1: time_ns={time_ns!r}")
    return time_ns


class Publisher:
    """Writes the latest price of each symbol into a feed and wakes its subscribers.

    Use ``Publisher.create(name)`` for a new feed, ``Publisher.open(name)`` to take over an
    existing one (its sequence continues), or ``Publisher.open_or_create(name)``. One publisher
    per feed at a time: the others get FeedBusy naming the holder's pid.
    """

    def __init__(self, segment: Segment, geometry: Geometry, backend: Optional[str] = None) -> None:
        waiter = select(backend)
        self._seg = segment
        self.name = segment.feed
        self.geometry = geometry
        self._w: Optional[FeedWriter] = FeedWriter(segment.view, geometry)
        self._futex_view = segment.view[L.OFF_FUTEX : L.OFF_FUTEX + 4].cast("I")
        self._word: WakeWord = waiter.word(segment.address + L.OFF_FUTEX, self._futex_view)
        try:
            w = self._w
            self._capacity = geometry.capacity
            self._head = w.head()
            self._count = w.slot_count()
            self._index: Dict[str, int] = symbols_of(w, 0, self._count)
            self._last: List[float] = []
            for i in range(self._count):
                got = w.read_slot(i)
                # A slot left odd by a publisher that died mid-write reads as "no price": the
                # next publish of that symbol is then always a change.
                self._last.append(got[0] if got is not None else math.nan)
            self._ended = w.closed()
        except BaseException:
            self._release()
            raise
        self.pid = os.getpid()
        self.epoch = w.set_publisher(self.pid) if not self._ended else w.publisher_epoch()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        capacity: int = L.DEFAULT_CAPACITY,
        ring_size: int = L.DEFAULT_RING,
        mode: int = 0o600,
        backend: Optional[str] = None,
    ) -> Publisher:
        """Create a new feed (FeedExists if the name is taken) and become its publisher."""
        try:
            L.check_geometry(capacity, ring_size)
        except ValueError as exc:
            raise InvalidGeometry(str(exc)) from None
        _check_mode(mode)
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
    def open(cls, name: str, backend: Optional[str] = None) -> Publisher:
        """Take over an existing feed. Its values stay, and its sequence continues."""
        seg, geometry = attach(name, writable=True)
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
    ) -> Publisher:
        """Open ``name`` if it exists (capacity, ring size and mode are then ignored), else create it."""
        for _ in range(3):  # another process may create or remove it between our two calls
            try:
                return cls.open(name, backend)
            except FeedNotFound:
                pass
            try:
                return cls.create(name, capacity, ring_size, mode, backend)
            except FeedExists:
                pass
        return cls.open(name, backend)

    # -- publishing ------------------------------------------------------------------------------
    def publish(self, symbol: str, price: float, time_ns: Optional[int] = None) -> bool:
        """Set ``symbol`` to ``price``. Returns False, with no event and no wake-up, when the
        price equals the current one (0.0 and -0.0 are equal). Raises InvalidPrice,
        InvalidSymbol or FeedFull, having written nothing."""
        w = self._writer()
        p = check_price(price, symbol)
        t = _check_time(time_ns)
        index = self._index.get(symbol)
        if index is None:
            index = self._new_slot(symbol)
            grown = True
        elif self._last[index] == p:
            return False
        else:
            grown = False
        seq = self._head + 1
        w.write_change(index, p, t, seq)
        self._last[index] = p
        if grown:
            self._count += 1
            w.set_slot_count(self._count)
        w.set_head(seq)
        self._head = seq
        w.bump_futex()  # Rule 3 of _feed: store the word, then always wake
        self._word.wake()
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
            if symbol not in self._index and symbol not in new:
                new[symbol] = check_symbol(symbol)
            plan.append((symbol, p))
        if self._count + len(new) > self._capacity:
            raise FeedFull(self._full_message(len(new)))
        t = _check_time(time_ns)
        for symbol, raw in new.items():
            index = len(self._last)
            w.write_symbol(index, raw)
            self._index[symbol] = index
            self._last.append(math.nan)  # unequal to every price: the first publish is a change
        seq = self._head
        last = self._last
        for symbol, p in plan:
            index = self._index[symbol]
            if last[index] == p:
                continue
            seq += 1
            w.write_change(index, p, t, seq)
            last[index] = p
        if new:
            self._count += len(new)
            w.set_slot_count(self._count)
        changed = seq - self._head
        if changed:
            w.set_head(seq)
            self._head = seq
            w.bump_futex()
            self._word.wake()
        return changed

    def _new_slot(self, symbol: str) -> int:
        raw = check_symbol(symbol)
        if self._count >= self._capacity:
            raise FeedFull(self._full_message(1))
        index = self._count
        self._writer().write_symbol(index, raw)
        self._index[symbol] = index
        self._last.append(math.nan)
        return index

    def _full_message(self, wanted: int) -> str:
        return (
            f"feed {self.name!r} is full: {self._count} of {self._capacity} slots hold a symbol and "
            f"{wanted} more were asked for (create the feed with a larger --capacity)"
        )

    def _writer(self) -> FeedWriter:
        if self._w is None:
            raise PricefeedError(f"publisher of feed {self.name!r} is closed")
        if self._ended:
            raise FeedEnded(f"feed {self.name!r} was ended for good; no more changes can be published")
        return self._w

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
        self._word.wake()
        self._ended = True

    def unlink(self) -> None:
        """Remove the feed's name from the system. Processes that have it open keep their
        mapping; new ones get FeedNotFound (or a new feed, if one is created under the name)."""
        self._seg.unlink()

    def close(self) -> None:
        """Give up the publisher role. The values stay, and another publisher may take over."""
        if self._w is None:
            return
        self._release()
        self._seg.close()

    def _release(self) -> None:
        if self._w is not None:
            self._w.release()
            self._w = None
        self._futex_view.release()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._w is None else f"head={self._head}, symbols={self._count}"
        return f"<Publisher {self.name!r} {state}>"
