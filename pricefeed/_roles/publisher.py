"""The publisher: the one process that writes a feed.

It composes a Segment (the mapping and the single-publisher lock), a FeedWriter (the seqlock and
ring protocol) and a wake word (the wait backend). It keeps in its own memory what it alone
writes: the head sequence, the symbol index and each symbol's last values, so the publish path
reads nothing back from shared memory.

A publish sets any subset of a symbol's fields; the others keep their values. It is one change
(one seqlock write, one sequence number, one ring record, one wake-up) when at least one field
differs from its current value, and the change records which fields did (a bit per field). A
symbol's first publish changes every field: there was no value before (a field it does not
give starts at 0).
"""

from __future__ import annotations

import operator
import os
import secrets
import time
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .._errors import (
    BadSegment,
    FeedEnded,
    FeedExists,
    FeedFull,
    FeedNotFound,
    InvalidField,
    InvalidGeometry,
    InvalidInput,
    PricefeedError,
)
from .._protocol import implementation
from .._protocol import layout as L
from .._protocol.header import Geometry, initialise, read_geometry
from .._protocol.reader import symbols_of
from .._protocol.writer import FeedWriter
from .._registry import registry
from .._segment import Segment
from .._segment.attach import attach
from .._segment.common import Owner
from .._values import Fields, check_symbol, check_value, parse_fields, short_repr
from .._wait import waker
from .announce import Announcer

__all__ = ["Publisher"]

Value = Union[float, int, Mapping[str, Any]]
Items = Union[Mapping[str, Value], Iterable[Tuple[str, Value]]]
FieldSpec = Union[str, Sequence[Any], None]

#: No positional value was given to publish().
_NOTHING: Any = object()
#: How publish_many() holds a checked item (see there).
_SINGLE, _FIELDS = range(2)


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
    """Writes the latest values of each symbol into a feed and wakes its subscribers.

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
        self._kinds = tuple(kind for _, kind in geometry.fields)
        self._names = tuple(name for name, _ in geometry.fields)
        self._position = {name: k for k, name in enumerate(self._names)}
        #: name -> position for a f64 field, ~position for an i64 one (the fast path's test).
        self._spec = {name: k if kind == L.TYPE_F64 else ~k for k, (name, kind) in enumerate(geometry.fields)}
        self._all = (1 << len(self._kinds)) - 1
        self._zero = tuple(0.0 if kind == L.TYPE_F64 else 0 for kind in self._kinds)
        self.pid = os.getpid()
        w = self._writer_unchecked()
        try:
            self._wake = Announcer(waiter, segment, geometry.incarnation)
            self._ended = w.closed()
            if not self._ended:
                # Announce the takeover before repairing, so that a subscriber sees the
                # PublisherRestarted event before any change the repair publishes.
                # A feed made without a registry (or with one of an earlier feed of the name)
                # gets one now; one that is in place is kept, with its subscribers.
                registry.ensure(
                    self.name, geometry.incarnation, segment.mode if segment.mode is not None else 0o600, segment.uid
                )
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
        self._last: List[Tuple[Any, ...]] = [w.slot_raw(i)[1] for i in range(self._count)]

    #: Slots the last takeover (or resync) found half-written and repaired.
    repaired = 0
    #: True once this publisher recorded itself in the feed (not for a feed found ended).
    _took_over = False

    def _repair(self) -> None:
        """Finish what a publisher that died in the middle of a change left behind.

        A dead publisher can leave a slot with an odd lock (it died inside the slot's write),
        or a slot whose sequence is past the head (the slot was written, the head never
        moved: a change nobody was told of, whose number we are about to hand out again).
        For each such slot: if its values are the ones of its newest published change, that
        change is put back (no event); otherwise the values it holds, each whole since every
        field is a single store, are published now as a new change (of every field: which ones
        the dead publisher changed is not known), so subscribers get the symbol's final state
        and no sequence number is ever used twice. (A slot may then hold fields of two
        publishes: the one that died half-way was never announced, and its record says so.)
        """
        w = self._writer_unchecked()
        head = self._head
        broken = []
        for i in range(self._count):
            lock, _, _, seq, _ = w.slot_raw(i)
            if lock & 1 or seq > head:
                broken.append(i)
        self.repaired = len(broken)
        if not broken:
            return
        newest = w.newest_records(head)
        now = time.time_ns()
        floats = [k for k, kind in enumerate(self._kinds) if kind == L.TYPE_F64]
        for i in broken:
            values = w.slot_raw(i)[1]
            whole = not any(values[k] - values[k] for k in floats)  # every float finite
            known = newest.get(i)
            if known is not None and (known[1] == values or not whole):
                seq, old, t, changed = known
                w.restore_slot(i, old, changed, t, seq)
            elif not whole:  # a float not finite, and nothing to restore it from
                raise BadSegment(f"feed {self.name!r}: slot {i} holds no valid values and none is left in the ring")
            else:
                w.restore_slot(i, values, self._all, now, head)  # made consistent; the change below re-sets it
                head += 1
                w.write_change(i, values, self._all, now, head)
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
        fields: FieldSpec = None,
    ) -> Publisher:
        """Create a new feed (FeedExists if the name is taken) and become its publisher.

        ``mode``: who else may read (0o644, 0o640) or also write (0o660, a group of publishers)
        the feed; a mode that lets every user write is refused unless ``allow_world_writable``.
        ``fields``: the feed's schema, fixed for its life: "bid:f64,ask:f64,bid_size:i64", or
        a list of names (f64) and (name, "f64" or "i64") pairs; None: one f64 named price."""
        try:
            L.check_geometry(capacity, ring_size)
        except ValueError as exc:
            raise InvalidGeometry(str(exc)) from None
        schema = parse_fields(fields)
        _check_mode(mode, allow_world_writable)
        size = L.segment_size(capacity, ring_size, len(schema))
        seg = Segment.create(name, size, mode)
        incarnation = secrets.randbits(63) | 1
        try:
            seg.lock_publisher()
            # The registry first: a subscriber can attach once the header is written, and
            # then finds its registry there.
            registry.ensure(name, incarnation, mode, seg.uid)
            initialise(seg.view, capacity, ring_size, incarnation, time.time_ns(), schema)
            return cls(seg, read_geometry(seg.view), backend)
        except BaseException:
            seg.close()
            seg.unlink()
            registry.remove(name, incarnation)
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
        fields: FieldSpec = None,
    ) -> Publisher:
        """Open ``name`` if it exists (capacity, ring size, mode and fields are then ignored),
        else create it. ``owner`` and ``allow_world_writable`` are as for ``open`` and ``create``."""
        for _ in range(3):  # another process may create or remove it between our two calls
            try:
                return cls.open(name, backend, owner, allow_world_writable)
            except FeedNotFound:
                pass
            try:
                return cls.create(name, capacity, ring_size, mode, backend, allow_world_writable, fields)
            except FeedExists:
                pass
        return cls.open(name, backend, owner, allow_world_writable)

    # -- publishing ------------------------------------------------------------------------------
    @property
    def fields(self) -> Fields:
        """The feed's schema: (name, type) per field, type 1 for f64 and 2 for i64."""
        return self.geometry.fields

    def publish(self, symbol: str, value: Any = _NOTHING, /, time_ns: Optional[int] = None, **fields: Any) -> bool:
        """Set fields of ``symbol``: ``publish("AAPL", 187.25)`` on a feed of one field,
        ``publish("ES", bid=5201.25, ask=5201.5)`` on any (``symbol`` and ``value`` are
        positional, so a field may be called anything the schema allows, ``value`` included).
        Fields not given keep their values; a symbol's first publish starts them at 0. All the
        fields given change as one change, with one sequence number. Returns False, with no
        event and no wake-up, when no field differs from its current value (0.0 and -0.0 are
        equal). Raises InvalidField (InvalidPrice for a float field), InvalidSymbol or
        FeedFull, having written nothing."""
        w = self._w
        if w is None or self._ended:
            w = self._writer()  # raises the right error
        if fields and value is _NOTHING:
            # A record's common case first, in one call to the writer: named fields of a known
            # symbol, each value of its field's own type. Anything else takes the full path below.
            try:
                index = self._index.get(symbol)
            except TypeError:  # unhashable
                index = None
            if index is not None:
                t = _time_ns() if time_ns is None else _check_time(time_ns)
                current = self._last[index]
                seq = self._head + 1
                try:
                    made = w.commit_merge(index, current, fields, self._spec, t, seq)
                    if made is current:
                        return False
                    if made is not None:
                        self._last[index] = made
                        self._head = seq
                        if not w.wakes:  # the C accelerator woke them already
                            self._wake.change(index)
                        return True
                except BaseException:
                    self._resync()
                    raise
        # The common case of a one-field feed, in line: one finite float, the time now, a known symbol.
        # p - p is 0.0 for a finite p and NaN (truthy) for NaN and the infinities.
        if not fields and len(self._kinds) == 1 and value is not _NOTHING:
            kind = self._kinds[0]
            p = (
                value
                if type(value) is float and kind == L.TYPE_F64 and not value - value
                else check_value(kind, value, self._names[0], symbol)
            )
            update: Optional[Tuple[Any, ...]] = (p,)
        else:
            update = None
        t = _time_ns() if time_ns is None else _check_time(time_ns)
        try:
            index = self._index.get(symbol)
        except TypeError:  # unhashable
            index = None
        if index is None:
            raw = check_symbol(symbol)
            values = update if update is not None else self._merge(self._zero, self._checked(symbol, value, fields))[0]
            if self._count >= self._capacity:
                raise FeedFull(self._full_message(1))
            index = self._count
            changed = self._all  # a first value changes every field
        elif update is not None:
            if self._last[index] == update:
                return False
            values, changed = update, 1
        else:  # what the two cases above could not take: converted, or refused, in full
            values, changed = self._merge(self._last[index], self._checked(symbol, value, fields))
            if not changed:
                return False
        # Past this point only an asynchronous exception (Ctrl-C) can interrupt, and then the
        # local state is rebuilt from the segment, repairing what was left half-written.
        try:
            seq = self._head + 1
            if index == self._count:
                w.write_symbol(index, raw)
                w.write_change(index, values, changed, t, seq)
                w.set_slot_count(index + 1)  # Rule 4: the slot is complete before it is counted
                self._index[symbol] = index
                self._last.append(values)
                self._count = index + 1
                w.set_head(seq)
                w.announce(index)
                self._head = seq
                self._wake.change(index)  # always wake: Rule 3 of _protocol
            else:
                w.commit(index, values, changed, t, seq)  # slot, record, head, wake words (Rules 1 to 3)
                self._last[index] = values
                self._head = seq
                if not w.wakes:  # the C accelerator woke them already
                    self._wake.change(index)
        except BaseException:
            self._resync()
            raise
        return True

    def _checked(self, symbol: object, value: Any, fields: Mapping[str, Any]) -> Dict[str, Any]:
        """What a publish gives, field name -> value converted to its field's type (a float for
        f64, an int for i64): what the writer's merge() takes without a second look.
        InvalidField naming an unknown field, a value given twice or none at all."""
        if value is not _NOTHING:
            if len(self._kinds) != 1:
                raise InvalidField(
                    f"feed {self.name!r} has fields {', '.join(self._names)}: name the ones to set, as "
                    f"publish({symbol!r}, {self._names[0]}=...); got the value {value!r} without a name"
                )
            if fields:
                raise InvalidField(f"field {self._names[0]!r} is given twice: as a value and by name")
            return {self._names[0]: check_value(self._kinds[0], value, self._names[0], symbol)}
        if not fields:
            raise InvalidField(f"publish of {symbol!r} sets no field; feed {self.name!r} has {', '.join(self._names)}")
        out: Dict[str, Any] = {}
        position = self._position
        for name, v in fields.items():
            k = position.get(name)
            if k is None:
                raise InvalidField(
                    f"feed {self.name!r} has no field {short_repr(name)}; its fields are {', '.join(self._names)}"
                )
            out[name] = check_value(self._kinds[k], v, name, symbol)
        return out

    def _merge(self, current: Tuple[Any, ...], checked: Dict[str, Any]) -> Tuple[Tuple[Any, ...], int]:
        """The writer's merge() of values _checked() made (or that merge() already took once):
        each of its field's own type, so merge() always has the answer."""
        merged = self._writer_unchecked().merge(current, checked, self._spec)
        assert merged is not None, "merge() refused values of their fields' own types"
        return merged

    def publish_many(self, items: Items, time_ns: Optional[int] = None) -> int:
        """Publish a batch with one wake-up; returns how many were changes. Items are (symbol,
        value) pairs or a mapping of symbol to value, where a value is a number (a feed of one
        field) or a mapping of field names to values (any feed). Every item is checked first:
        if one is invalid, or the new symbols do not fit, nothing is written."""
        w = self._writer()
        pairs = items.items() if isinstance(items, Mapping) else items
        # Each item checked, as (symbol, how, what): a one-field value (SINGLE), or a mapping of
        # fields whose every value is of its field's type (FIELDS: as given when merge() takes
        # it, else as _checked() converts it).
        plan: List[Tuple[str, int, Any]] = []
        new: Dict[str, bytes] = {}
        single = len(self._kinds) == 1
        simple = single and self._kinds[0] == L.TYPE_F64  # a finite float is the value as it is
        spec, zero, merge = self._spec, self._zero, w.merge
        for pair in pairs:
            try:
                symbol, value = pair
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"publish_many takes (symbol, value) pairs or a mapping: got item {pair!r}"
                ) from None
            if simple and type(value) is float and not value - value:  # the common case first
                plan.append((symbol, _SINGLE, value))
            elif isinstance(value, Mapping):
                fine = type(value) is dict and value and merge(zero, value, spec) is not None
                plan.append((symbol, _FIELDS, value if fine else self._checked(symbol, _NOTHING, value)))
            elif single:
                plan.append((symbol, _SINGLE, check_value(self._kinds[0], value, self._names[0], symbol)))
            else:
                self._checked(symbol, value, {})  # raises: a value without a name
            try:
                known = symbol in self._index or symbol in new
            except TypeError:  # unhashable
                known = False
            if not known:
                new[symbol] = check_symbol(symbol)
        if self._count + len(new) > self._capacity:
            raise FeedFull(self._full_message(len(new)))
        t = _time_ns() if time_ns is None else _check_time(time_ns)
        try:
            last = self._last
            first = len(last)
            for symbol, raw in new.items():
                w.write_symbol(len(last), raw)
                self._index[symbol] = len(last)
                last.append(zero)
            # Which items are changes: compared with the values before, within the batch too.
            index_of = self._index
            changes: List[Tuple[int, Tuple[Any, ...], int]] = []
            fresh = set(range(first, len(last)))
            for symbol, how, what in plan:
                index = index_of[symbol]
                if how == _SINGLE:
                    if last[index][0] == what and not fresh:  # the common case of a repeat
                        continue
                    values, changed = (what,), 1 if last[index][0] != what else 0
                else:
                    values, changed = self._merge(last[index], what)
                if fresh and index in fresh:  # a first value changes every field
                    fresh.discard(index)
                    changed = self._all
                if changed:
                    last[index] = values
                    changes.append((index, values, changed))
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
        registry.remove(self.name, self.geometry.incarnation)

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
