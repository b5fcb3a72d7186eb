"""The subscriber: maps a feed read-only, reads consistent values, and follows its changes.

How ``updates()`` keeps its promise (each change at most once, in feed order, none lost
silently): it holds a cursor, the sequence of the last change it has dealt with, and reads the
ring records after it one by one. Each record carries its own sequence, so one that was
overwritten is noticed (``reader.lapped``) instead of being delivered as the wrong change. When
that happens the subscriber jumps to the head: it reports a Gap with the number of changes it
will never deliver, then the latest value of each symbol that changed in the skipped range,
once each and in feed order, read from the slot table. A symbol whose slot has moved past the
head it jumped to is left for the ring, where that newer change is still ahead of the cursor:
so no value is delivered stale and none twice.

It composes three things: the protocol's follow loop (``_protocol.follow.Follow``, of the
implementation chosen when it attached), which gives each change or a code for what needs a
decision here; a ``Listener``, the wake words it sleeps on through the wait backend; and a
``Watch``, which it asks every WATCH_SLICE seconds that pass with nothing new about what no
wake-up tells: whether a publisher still holds the feed (PublisherGone) or a new one took it
over after a crash (PublisherRestarted), and whether the feed's name still leads to this
segment (a re-created feed: re-attach, Reset). ``status()`` tells how the feed stands.
"""

from __future__ import annotations

import time
import warnings
from typing import (
    Any,
    AsyncIterator,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Set,
    Tuple,
    Union,
    overload,
)

from .._errors import (
    BadSegment,
    FeedNotFound,
    FeedReset,
    InvalidField,
    InvalidInput,
    PricefeedError,
    SymbolNotFound,
    Timeout,
)
from .._protocol import Implementation, implementation
from .._protocol import follow as F
from .._protocol import layout as L
from .._protocol.liveness import closed_cleanly
from .._protocol.reader import FeedReader, Reading, symbols_of
from .._registry import layout as RL
from .._registry import registry
from .._registry.registry import Registration, Unavailable, check_label
from .._registry.types import IDLE, ReaderInfo, Readers
from .._segment import Segment
from .._segment.attach import attach
from .._segment.common import Owner, user_name
from .._values import (
    Fields,
    Gap,
    PublisherGone,
    PublisherRestarted,
    Quote,
    Reset,
    check_symbol,
    quote_type,
    short_repr,
)
from .._wait import select
from .listen import Listener
from .watch import RECREATED, Watch

__all__ = ["Subscriber", "FeedStatus", "Event"]

Event = Union[Quote, Gap, PublisherGone, PublisherRestarted, Reset]

#: A slot whose lock stays odd this long is checked again for a dead writer.
STUCK_CHECK_SECONDS = 0.5
#: Longest single wait: how soon a dead publisher or a re-created feed is noticed.
WATCH_SLICE = 0.25
#: The longest spin-before-sleep a subscriber accepts, in seconds: polling longer than this is
#: a busy loop, not a way to save a wake-up.
MAX_SPIN = 0.01
#: A registered subscriber stores its progress in the registry at least every this many quotes
#: while quotes keep coming, and at each wait.
REGISTRY_EVERY = 32
#: How often a subscriber told to wait for a feed looks for it.
APPEAR_POLL = 0.02


_ENDED = object()


#: aupdates() lets the event loop run its other tasks at least once every this many items, even
#: while the feed gives changes faster than they are taken; and a conflating subscription gives
#: an item at least once every this many changes, even while the feed never goes quiet.
YIELD_EVERY = 256


class Sleep(NamedTuple):
    """What ``aupdates`` asks its driver: sleep until the head may have passed ``cursor``, on
    ``words`` (None: the header's word), for at most ``seconds``."""

    cursor: int
    seconds: float
    words: Optional[Tuple[int, ...]]


class FeedStatus(NamedTuple):
    name: str
    head_seq: int
    symbols: int
    capacity: int
    ring_size: int
    publisher_pid: Optional[int]
    publisher_alive: bool
    last_change_ns: Optional[int]
    ended: bool
    incarnation: int
    created_ns: int
    size: int
    publisher_epoch: int
    #: Who owns the segment (a user name, else the uid as text) and its permission bits; both
    #: None where the platform does not say (Windows).
    owner: Optional[str]
    mode: Optional[int]
    #: With no publisher holding the feed: True if the last one closed it cleanly, False if it
    #: did not (it died, or was a writer that does not say). None while a publisher holds it,
    #: or if none ever did.
    publisher_clean: Optional[bool] = None
    #: The feed's schema: (name, type) per field, type 1 for f64 and 2 for i64.
    fields: Fields = L.DEFAULT_FIELDS


def _owner_name(uid: Optional[int]) -> Optional[str]:
    if uid is None:
        return None
    name = user_name(uid)  # "alice (uid 1000)" or "uid 1234"
    return name.split(" ", 1)[0] if "(" in name else str(uid)


class Subscriber:
    """A read-only view of a feed: ``get``, ``snapshot`` and ``updates``.

    The mapping is read-only, so nothing a subscriber does can damage the feed. Close it (or
    use ``with``) to release the mapping and its descriptor; iterators from ``updates()`` must
    not be used after that. A Subscriber is for one thread at a time: give each thread its own.
    """

    def __init__(
        self,
        name: str,
        backend: Optional[str] = None,
        wait: Union[bool, float] = False,
        owner: Owner = None,
        allow_world_writable: bool = False,
        register: bool = True,
        label: Optional[str] = None,
    ) -> None:
        """Open feed ``name`` read-only. ``wait``: if the feed does not exist yet, wait for it
        (True: as long as it takes; a number: that many seconds) instead of raising
        FeedNotFound at once. A subscriber that had to wait for the feed to appear gets, from
        its first ``updates()``, every change since the feed was created: all of them happened
        after it started waiting, however long attaching took.

        ``owner`` (a user name or uid): accept only that user's segment under the name, here
        and when the feed is re-created (FeedNotTrusted otherwise). A segment every user may
        write is refused unless ``allow_world_writable``: anyone could change its prices.

        ``register``: enter this subscriber in the feed's registry (docs/observability.md), where
        ``pricefeed status``, ``top`` and ``metrics`` show it with its lag, under ``label`` if
        given; a subscriber that cannot (no registry, no write access, registry full) works
        the same, unregistered (``registered`` says which)."""
        self._waiter = select(backend)  # before anything is opened: the one step that can refuse
        self.name = name
        self._label = check_label(label)
        self._register = bool(register)
        self._reg: Optional[Registration] = None
        #: Why this subscriber is not in the feed's registry (None while it is, or before it tried).
        self.registry_reason: Optional[str] = None if register else "registration turned off"
        self._owner = owner
        self._allow_world_writable = allow_world_writable
        self._r: Optional[FeedReader] = None
        self._from_start = False
        deadline = None if wait is True else time.monotonic() + (0.0 if wait is False else float(wait))
        while True:
            try:
                self._attach()
                return
            except FeedNotFound:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                self._from_start = True
            time.sleep(APPEAR_POLL)

    @classmethod
    async def aopen(
        cls,
        name: str,
        backend: Optional[str] = None,
        wait: Union[bool, float] = False,
        owner: Owner = None,
        allow_world_writable: bool = False,
        register: bool = True,
        label: Optional[str] = None,
    ) -> Subscriber:
        """``Subscriber(...)`` for asyncio: the same arguments, but waiting for the feed to
        appear (``wait``) awaits instead of sleeping, so the loop runs meanwhile."""
        import asyncio

        deadline = None if wait is True else time.monotonic() + (0.0 if wait is False else float(wait))
        waited = False
        while True:
            try:
                sub = cls(name, backend, False, owner, allow_world_writable, register, label)
            except FeedNotFound:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                waited = True
            else:
                sub._from_start = waited  # as the blocking wait does: every change since creation
                return sub
            await asyncio.sleep(APPEAR_POLL)

    def _attach(self) -> None:
        seg, geometry = attach(self.name, False, self._owner, self._allow_world_writable)
        if self._owner is None:
            # A feed re-created under the name is followed only if it has the owner of the one
            # first attached to: anyone may create a name that is free, and would otherwise be
            # followed as if the feed were the same (guarantees.md, "Other users").
            self._owner = seg.uid
        self._seg: Segment = seg
        self.geometry = geometry
        self._impl: Implementation = implementation()
        self._quote = quote_type(geometry.fields)
        self._r = self._impl.Reader(seg.view, geometry, seg.address)
        self._index: Dict[str, int] = {}
        self._names: List[str] = []
        try:
            self._watch = Watch(seg, self._r)  # what is true when we attach is not news
            self._listener = Listener(self._waiter, seg, self._r)
        except BaseException:
            self._r.release()
            seg.close()
            raise
        if self._register:
            self._enter_registry()

    def _enter_registry(self) -> None:
        """Take an entry in the feed's registry; any reason not to leaves this subscriber
        working as before, unregistered, with the reason in ``registry_reason``."""
        try:
            self._reg = Registration.claim(
                self.name, self.geometry.incarnation, self._seg.uid, self._seg.mode, self._label
            )
            self.registry_reason = None
        except Unavailable as exc:
            self.registry_reason = str(exc)
        except (OSError, ValueError) as exc:  # mapping it failed (no memory, ...): still unregistered
            self.registry_reason = f"cannot use the registry: {exc}"

    def still_linked(self) -> bool:
        """Whether the feed's name still leads to the segment this subscriber has open (False
        once the feed was removed, or removed and created anew). ``updates()`` asks this
        itself; a tool that only looks asks here."""
        return bool(self._seg.still_linked())

    @property
    def registered(self) -> bool:
        """Whether this subscriber has an entry in the feed's registry (see ``readers()``)."""
        return self._reg is not None

    @property
    def wakeups(self) -> int:
        """How many of this subscriber's waits ended because a word it slept on changed or was
        woken (not by a timeout): a measure of how often it was disturbed."""
        return self._listener.woken + self._r.woken if self._r is not None else 0

    def readers(self) -> Readers:
        """The feed's registered subscribers, each with its lag: how many changes it has yet
        to deal with, and how long the oldest of them has waited (``Readers``, ``ReaderInfo``).
        The registry is read as untrusted input: entries that fail a check are counted in
        ``invalid``, those of processes that are gone in ``dead``; neither is shown."""
        r = self._reader()
        try:
            found, head = registry.read(self.name, self.geometry.incarnation, self._seg.uid, r.head)
        except Unavailable as exc:
            return Readers(False, str(exc), [], 0, 0, 0)
        now = time.time_ns()
        ring = self.geometry.ring_size
        infos = []
        for e in found.entries:
            lag: Optional[int] = None
            lag_seconds: Optional[float] = None
            lower = False
            if e.state != "idle":
                lag = 0 if e.state == "waiting" and e.flags & RL.FLAG_FILTERED else head - e.seq
                if lag == 0:
                    lag_seconds = 0.0
                else:
                    # The oldest change it has yet to deal with, or the oldest the ring still
                    # holds if that one has gone (then a lower bound: it will see a Gap).
                    first = max(e.seq + 1, head - ring + 1)
                    for seq in range(first, min(first + 3, head + 1)):
                        rec = r.read_record(seq)
                        if rec is not None:
                            lag_seconds = max(0.0, (now - rec[2]) / 1e9)
                            lower = seq != e.seq + 1
                            break
            infos.append(ReaderInfo(
                e.slot, e.pid, e.label, e.uid, e.state, e.seq, e.delivered, e.gaps, e.missed, e.registered_ns,
                e.state_ns, bool(e.flags & RL.FLAG_CONFLATE), bool(e.flags & RL.FLAG_FILTERED),
                bool(e.flags & RL.FLAG_ASYNC), lag, lag_seconds, lower,
            ))  # fmt: skip
        return Readers(True, None, infos, found.capacity, found.dead, found.invalid)

    def _detach(self) -> None:
        if self._r is None:
            return
        if self._reg is not None:
            self._reg.close()
            self._reg = None
        self._r.release()
        self._r = None
        self._listener.close()
        self._seg.close()

    # -- symbols ---------------------------------------------------------------------------------
    def _reader(self) -> FeedReader:
        if self._r is None:
            raise PricefeedError(f"subscriber of feed {self.name!r} is closed")
        return self._r

    def _refresh(self) -> None:
        """Learn the symbols of slots added since we last looked."""
        r = self._reader()
        n = r.slot_count()
        known = len(self._names)
        if n > known:
            found = symbols_of(r, known, n)
            repeated = found.keys() & self._index.keys()
            if repeated:
                raise BadSegment(f"damaged slot table: symbols {sorted(repeated)} appear in two slots")
            self._index.update(found)
            self._names.extend(found)

    def _refresh_for(self, index: int, seq: int) -> int:
        """Learn new symbols because change ``seq`` names slot ``index``; returns how many are
        known. A slot the publisher has not counted yet means a damaged ring (Rule 5)."""
        self._refresh()
        if index >= len(self._names):
            raise BadSegment(
                f"feed {self.name!r}: change {seq} names slot {index}, but only {len(self._names)} slots hold a symbol"
            )
        return len(self._names)

    def _slot(self, symbol: str) -> Optional[int]:
        index = self._index.get(symbol)
        if index is None:
            self._refresh()
            index = self._index.get(symbol)
        return index

    def symbols(self) -> List[str]:
        """Every symbol the feed has published, in the order they first appeared."""
        self._refresh()
        return list(self._names)

    # -- reads -----------------------------------------------------------------------------------
    @property
    def fields(self) -> Fields:
        """The feed's schema: (name, type) per field, type 1 for f64 and 2 for i64."""
        return self.geometry.fields

    def _read_slot(self, index: int) -> Reading:
        got = self._reader().read_slot(index)
        return got if got is not None else self._read_stuck_slot(index)

    @overload
    def _read_stuck_slot(self, index: int) -> Reading: ...

    @overload
    def _read_stuck_slot(self, index: int, give_up: bool) -> Optional[Reading]: ...

    def _read_stuck_slot(self, index: int, give_up: bool = False) -> Optional[Reading]:
        """A slot whose lock stayed odd (or kept moving) through SPIN_TRIES copies: read it
        patiently (see ``_stuck``), sleeping between tries."""
        steps = self._stuck(index, give_up)
        try:
            while True:
                time.sleep(next(steps))
        except StopIteration as done:
            got: Optional[Reading] = done.value
            return got

    async def _aread_stuck_slot(self, index: int) -> Reading:
        """``_read_stuck_slot`` for asyncio: the loop runs while it waits."""
        import asyncio

        steps = self._stuck(index, False)
        try:
            while True:
                await asyncio.sleep(next(steps))
        except StopIteration as done:
            got: Reading = done.value
            return got

    def _stuck(self, index: int, give_up: bool) -> Generator[float, None, Optional[Reading]]:
        """Reading a slot whose lock stayed odd: yields how long to sleep before the next try,
        and returns the reading. Either the publisher is writing it (a Python publisher may be
        descheduled mid-write: sleep and retry, never spin), or the publisher died mid-write
        and nobody will finish: then the value to give is the slot's last announced one, which
        the ring still holds (the search covers every record the ring can hold, newest first,
        and never one above the head). If it does not: BadSegment, or None with ``give_up``."""
        r = self._reader()  # raises if closed
        check_at = 0.0
        pause = 1e-5
        while True:
            if time.monotonic() >= check_at:
                if not self._seg.held():
                    got = r.read_slot(index)  # a publisher may have finished or repaired it
                    if got is not None:
                        return got
                    rec = r.newest_records(r.head(), only=index).get(index)
                    if rec is None:
                        if give_up:
                            return None
                        raise BadSegment(
                            f"feed {self.name!r}: slot {index} ({self._names[index]!r}) was left mid-write by a "
                            "publisher that is gone, and the ring no longer holds its last value; the next "
                            "publisher to take the feed over repairs it"
                        )
                    seq, values, time_ns, changed = rec
                    return values, time_ns, seq, changed
                check_at = time.monotonic() + STUCK_CHECK_SECONDS
            yield pause
            pause = min(pause * 2, 1e-3)
            got = r.read_slot(index)
            if got is not None:
                return got

    def get(self, symbol: str) -> Optional[Quote]:
        """The symbol's current value, or None if the feed has never published it."""
        try:
            index = self._index.get(symbol)
        except TypeError:  # unhashable
            index = None
        if index is None:  # not known yet: check the name, then look for it in new slots
            index = self._locate(symbol)
            if index is None:
                return None
        r = self._r
        quote = r.read_quote(index, symbol, self._quote) if r is not None else None
        if quote is None:
            quote = self._quote._build(symbol, *self._read_stuck_slot(index))  # also raises if closed
        return quote

    async def aget(self, symbol: str) -> Optional[Quote]:
        """``get()`` for asyncio: the same value, awaiting instead of sleeping where ``get()``
        would sleep (a slot the publisher is writing while it is descheduled)."""
        index = self._locate(symbol)
        if index is None:
            return None
        quote: Optional[Quote] = self._reader().read_quote(index, symbol, self._quote)
        if quote is None:
            quote = self._quote._build(symbol, *await self._aread_stuck_slot(index))
        return quote

    def _locate(self, symbol: str) -> Optional[int]:
        """The slot of ``symbol`` (a valid symbol, else InvalidSymbol), or None if it has none."""
        check_symbol(symbol)
        return self._slot(symbol)

    def __getitem__(self, symbol: str) -> Quote:
        quote = self.get(symbol)
        if quote is None:
            raise SymbolNotFound(f"feed {self.name!r} has no symbol {symbol!r}")
        return quote

    def snapshot(self) -> Dict[str, Quote]:
        """Every symbol's current value. Each value is consistent (read inside its seqlock);
        the set is not one instant of the feed if the publisher writes meanwhile."""
        self._refresh()
        names = self._names
        quotes = self._reader().read_slots(len(names), names, self._quote)
        build = self._quote._build
        for index, quote in enumerate(quotes):
            if quote is None:  # raced a write: read it again, patiently
                quotes[index] = build(names[index], *self._read_slot(index))
        return dict(zip(names, quotes))

    async def asnapshot(self) -> Dict[str, Quote]:
        """``snapshot()`` for asyncio: the same values, awaiting where ``snapshot()`` would sleep."""
        self._refresh()
        names = self._names
        quotes = self._reader().read_slots(len(names), names, self._quote)
        build = self._quote._build
        for index, quote in enumerate(quotes):
            if quote is None:
                quotes[index] = build(names[index], *await self._aread_stuck_slot(index))
        return dict(zip(names, quotes))

    @property
    def head(self) -> int:
        """Sequence number of the newest change (0 before the first)."""
        return self._reader().head()

    @property
    def ended(self) -> bool:
        return self._reader().closed()

    def status(self) -> FeedStatus:
        r = self._reader()
        self._refresh()
        head = r.head()
        last = None
        if head:
            rec = r.read_record(head)
            times = [rec[2]] if rec is not None else [self._read_slot(i)[1] for i in range(len(self._names))]
            last = max(times, default=None)
        holder = self._seg.holder_pid()
        epoch, state = r.publisher_view()  # after the lock: see Watch.look()
        g = self.geometry
        return FeedStatus(
            self.name, head, len(self._names), g.capacity, g.ring_size,
            holder or r.publisher_pid() or None, holder is not None,
            last, r.closed(), g.incarnation, g.created_ns, g.size, epoch,
            _owner_name(self._seg.uid), self._seg.mode,
            None if holder is not None or epoch == 0 else closed_cleanly(epoch, state), g.fields,
        )  # fmt: skip

    # -- following changes -----------------------------------------------------------------------
    def updates(
        self,
        symbols: Optional[Iterable[str]] = None,
        timeout: Optional[float] = None,
        conflate: bool = False,
        snapshot: bool = False,
        reattach: bool = True,
        spin: float = 0.0,
        on: Optional[Iterable[str]] = None,
        after: Optional[int] = None,
    ) -> Iterator[Event]:
        """Yield each change from now on, exactly once and in feed order, as a Quote, with
        events among them: Gap, PublisherGone, PublisherRestarted, Reset (see each class).

        ``symbols``: only these symbols (they need not exist yet). ``timeout``: seconds to wait
        for the next Quote before raising Timeout (None or inf: forever). ``snapshot``: first
        yield the current value of every (chosen) symbol. ``conflate``: yield only the newest
        value of each symbol that changed since the last item was taken: a consumer that is
        slow gets fewer, fresher items and never a Gap, and still never the same change twice
        (an item comes at least every 256 changes, even while the feed never goes quiet).
        ``reattach``: when the feed is removed and created anew, follow the new one (after a
        Reset event); False raises FeedReset instead. ``spin``: seconds to keep polling the
        head before sleeping in the kernel (say 50e-6): a change that comes within it is seen
        without a wake-up, at the cost of that much CPU each time the feed goes quiet.
        ``on``: only changes that changed one of these fields (names of the feed's schema),
        still exactly once and in order; the others are passed over like changes of symbols not
        asked for. After a Gap the catch-up gives every chosen symbol that changed in the range,
        whichever fields it changed: the lost changes may have changed one of them.
        ``after``: start after this sequence number instead of at the head (a cursor saved
        by an earlier run on the same feed, whose ``status().incarnation`` it must check): the
        changes since then that the ring still holds come first, and older ones are a Gap
        followed by the catch-up, as for a reader that fell behind.

        After a Gap come the latest values of the symbols changed meanwhile. The iteration ends
        when the publisher ends the feed and every change has been yielded.
        """
        return self._start(symbols, timeout, conflate, snapshot, reattach, spin, on, after, False)

    def aupdates(
        self,
        symbols: Optional[Iterable[str]] = None,
        timeout: Optional[float] = None,
        conflate: bool = False,
        snapshot: bool = False,
        reattach: bool = True,
        spin: float = 0.0,
        on: Optional[Iterable[str]] = None,
        after: Optional[int] = None,
    ) -> AsyncIterator[Event]:
        """``updates()`` for asyncio: ``async for q in sub.aupdates(...)`` with the same
        arguments and the same promises (each change exactly once, in feed order, gaps
        counted, the same events), without blocking the event loop while it waits.

        All the async subscriptions of one event loop share one waiter: an io_uring the loop
        watches, with no thread (Linux 6.7 and later), else one thread of pricefeed's for the
        whole loop (Linux 5.16 and later), else a thread per sleeping subscription (docs/
        protocol.md, "Following from asyncio"); none uses CPU while nothing changes. Arguments
        are checked at the call, as ``updates()`` checks them. Cancelling the task that
        iterates, closing the iterator, or ending the loop releases the waiter when it was the
        last subscription using it. ``spin`` polls for up to that long before sleeping,
        blocking the loop meanwhile. While changes keep coming faster than they are taken, it
        still lets the loop run its other tasks every 256 changes."""
        return self._sleepless(self._start(symbols, timeout, conflate, snapshot, reattach, spin, on, after, True))

    async def _sleepless(self, changes: Generator[Any, Any, None]) -> AsyncIterator[Event]:
        """Run the follow generator of ``aupdates``: items go to the caller, and each ``Sleep``
        it yields is awaited on the loop's waiter, which tells it whether a word woke it."""
        import asyncio

        from . import loopwait

        waiter = loopwait.acquire(asyncio.get_running_loop(), self._waiter)
        try:
            reply: Optional[bool] = None
            run = 0  # items given since the loop last ran other tasks
            while True:
                try:
                    item = changes.send(reply)
                except StopIteration:
                    return
                if type(item) is Sleep:
                    run = 0
                    reply = await waiter.sleep(self._listener, item.cursor, item.seconds, item.words)
                else:
                    reply = None
                    run += 1
                    if run >= YIELD_EVERY:
                        # A feed that never lets this subscription sleep must not starve the
                        # loop's other tasks (a consumer's own sender, its network client).
                        run = 0
                        await asyncio.sleep(0)
                    yield item
        finally:
            changes.close()
            waiter.release()

    def _start(
        self, symbols: Optional[Iterable[str]], timeout: Optional[float], conflate: bool, snapshot: bool,
        reattach: bool, spin: float, on: Optional[Iterable[str]], after: Optional[int], sleepless: bool,
    ) -> Generator[Any, Any, None]:  # fmt: skip
        """Check the arguments of ``updates()``/``aupdates()`` and take the starting point now."""
        wanted: Optional[Set[str]] = None
        if symbols is not None:
            wanted = set()
            for s in [symbols] if isinstance(symbols, str) else symbols:
                check_symbol(s)
                wanted.add(s)
        if timeout is not None and timeout == float("inf"):
            timeout = None
        if timeout is not None and not timeout >= 0:
            raise InvalidInput(f"timeout must be a number of seconds >= 0 or None: timeout={timeout!r}")
        if not 0 <= spin <= MAX_SPIN:
            raise InvalidInput(f"spin must be from 0 to {MAX_SPIN} seconds: spin={spin!r}")
        if on is not None:
            on = [on] if isinstance(on, str) else list(on)
            self.field_mask(on)  # a bad name is refused at the call, not at the first next()
        # The start is taken now, not at the first next(): changes published between this call
        # and the first next() are delivered.
        self._refresh()
        head = self._reader().head()
        if after is not None:
            if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= head:
                raise InvalidInput(
                    f"after must be a sequence number from 0 to the feed's head ({head}): after={short_repr(after)}"
                )
            start = after
        else:
            start = 0 if self._from_start else head
        self._from_start = False
        return self._follow(wanted, timeout, conflate, snapshot, reattach, start, spin, on, sleepless)

    def act(self, handler: Any, symbols: Optional[Iterable[str]] = None, **options: Any) -> Any:
        """Call ``handler(quote)`` once per change, changes of different symbols in parallel
        and those of one symbol one at a time in feed order, until the feed ends; blocks
        meanwhile. The options (``jobs``, ``queue``, ``conflate``, ``on_error``, ``timeout``,
        ``state``, ``grace``, ``idle``, ``on``, ``snapshot``, ``count``, ``report``,
        ``on_event``) and what they promise are those of ``pricefeed.act``
        (docs/actions.md). Returns an ActResult."""
        from .._act import act

        return act(self, handler, symbols, **options)

    async def aact(self, handler: Any, symbols: Optional[Iterable[str]] = None, **options: Any) -> Any:
        """``act()`` for asyncio, on the running loop (``pricefeed.aact``): cancelling the task
        that awaits it stops gracefully."""
        from .._act import aact

        return await aact(self, handler, symbols, **options)

    def field_mask(self, names: Iterable[str]) -> int:
        """The mask (bit i for field i) of these field names; InvalidField naming one the
        feed's schema lacks, or for no name at all."""
        if isinstance(names, str):
            names = [names]
        position = {name: k for k, (name, _) in enumerate(self.geometry.fields)}
        mask = 0
        for name in names:
            k = position.get(name) if isinstance(name, str) else None
            if k is None:
                raise InvalidField(
                    f"feed {self.name!r} has no field {short_repr(name)}; its fields are {', '.join(position)}"
                )
            mask |= 1 << k
        if not mask:
            raise InvalidField(f"on= names no field; feed {self.name!r} has {', '.join(position)}")
        return mask

    def _follow(
        self, wanted: Optional[Set[str]], timeout: Optional[float], conflate: bool, snapshot: bool,
        reattach: bool, cursor: int, spin: float = 0.0, on: Optional[Iterable[str]] = None, sleepless: bool = False,
    ) -> Generator[Any, Any, None]:  # fmt: skip
        try:
            yield from self._follow_feeds(wanted, timeout, conflate, snapshot, reattach, cursor, spin, on, sleepless)
        finally:
            if self._reg is not None:
                self._reg.enter(IDLE)  # no longer following (finished, or the iterator closed)

    def _follow_feeds(
        self, wanted: Optional[Set[str]], timeout: Optional[float], conflate: bool, snapshot: bool,
        reattach: bool, cursor: int, spin: float, on: Optional[Iterable[str]], sleepless: bool,
    ) -> Generator[Any, Any, None]:  # fmt: skip
        while True:
            # The mask is worked out for each feed followed: a re-created feed may have
            # another schema (InvalidField if it lacks one of the fields).
            mask = self.field_mask(on) if on is not None else 0
            outcome = yield from self._changes(wanted, timeout, conflate, snapshot, cursor, spin, mask, sleepless)
            if outcome is not RECREATED:
                return
            old = self.geometry.incarnation
            if not reattach:
                raise FeedReset(
                    f"feed {self.name!r} was removed and created anew (incarnation {old:#x}); "
                    "not following the new one, as asked"
                )
            self._detach()
            self._attach()
            yield Reset(self.geometry.incarnation, self._reader().head())
            snapshot, cursor = True, 0  # the new feed's current values, then its changes

    def _changes(
        self, wanted: Optional[Set[str]], timeout: Optional[float], conflate: bool, snapshot: bool, cursor: int,
        spin: float, on: int = 0, sleepless: bool = False,
    ) -> Generator[Any, Any, object]:  # fmt: skip
        """Follow the feed with the protocol's follow loop (``follow.Follow``, of the
        implementation this subscriber opened the feed with): each change comes back as a
        Quote, everything else as a code that is handled here, once for both implementations.
        With ``conflate``, quotes wait in ``pending`` (the newest per symbol, oldest first)
        while more are at hand, and one is yielded whenever the loop finds nothing new; a
        quote that replaces a pending one names the fields either changed.

        ``sleepless`` (for ``aupdates``): the loop never sleeps itself; when there is nothing
        to give, this yields a ``Sleep`` and is sent back whether a word woke it (True) or
        the time asked passed (False), so that the caller can sleep without blocking."""
        r = self._reader()
        # This subscriber's registry entry, if any, is told what is given and when it waits.
        # Quotes in a run are counted here and stored every REGISTRY_EVERY, and at each wait
        # (so that an idle subscriber's entry is exact): a store per quote would cost more
        # than a third of a quote's delivery.
        reg = self._reg
        given = 0
        working = False
        # Where the wake words are kernel futexes, the C implementation's reader sleeps on them
        # itself, as its follow loop does: through the wait backend, from Python, a wake-up
        # costs about 2 µs more.
        sleep = r.wait_head if r.wait_head is not None and self._waiter.futex_words else self._listener.wait
        if reg is not None:
            reg.follow_flags(
                (RL.FLAG_CONFLATE if conflate else 0) | (RL.FLAG_FILTERED if wanted is not None else 0)
                | (RL.FLAG_ASYNC if sleepless else 0)
            )  # fmt: skip
        pending: Dict[str, Quote] = {}
        #: After a lap with ``on``: symbol -> seq of its change still ahead in the ring, which
        #: is given whatever it changed (see the LAPPED branch).
        owed: Dict[str, int] = {}

        def hold(q: Quote) -> None:
            old = pending.pop(q.symbol, None)
            pending[q.symbol] = q if old is None else q._with_changed(q.changed_mask | old.changed_mask)

        if snapshot:
            for q in self._catch_up(wanted, 0, cursor):
                if conflate:
                    pending[q.symbol] = q
                else:
                    if reg is not None:
                        reg.give(q.seq, 1)
                    yield q
        qt = self._quote
        follow = self._impl.Follow(
            r, self._names, 0, None, qt, None, cursor, self._watch.seen.epoch, WATCH_SLICE, spin,
            -1.0 if timeout is None else time.monotonic() + timeout, self._listener.wait, self._waiter.futex_words,
            on,
        )  # fmt: skip
        self._retarget(follow, wanted)
        held = 0  # changes held since one was given: a feed that never goes idle still gives
        try:
            while True:
                # A registered subscriber sleeps here, not inside the loop, to tell the registry first.
                follow.block = not (pending or sleepless or reg is not None)
                item = next(follow)
                if type(item) is qt:
                    if owed:
                        if owed.pop(item.symbol, None) is None and not item.changed_mask & on:
                            item = None
                        if not owed or follow.cursor >= max(owed.values()):
                            owed.clear()
                            follow.on = on
                        if item is None:
                            continue
                    if conflate:
                        hold(item)
                        held += 1
                        if held < YIELD_EVERY:
                            continue
                        item = pending.pop(next(iter(pending)))  # the oldest, as when idle
                    held = 0
                    if reg is not None:
                        given += 1
                        if given >= REGISTRY_EVERY or not working:
                            reg.give(item.seq, given)
                            given = 0
                            working = True
                    yield item
                elif item == F.IDLE:
                    if pending:  # give the oldest
                        held = 0
                        item = pending.pop(next(iter(pending)))
                        if reg is not None:
                            reg.give(item.seq, given + 1)
                            given = 0
                            working = True
                        yield item
                    else:  # sleepless (the caller sleeps for the loop), or registered
                        limit = WATCH_SLICE
                        if follow.deadline >= 0:
                            limit = min(limit, follow.deadline - time.monotonic())
                        if limit > 0:
                            if spin and r.spin(follow.cursor, spin):
                                continue
                            if reg is not None:
                                reg.waiting(follow.cursor, given)
                                given = 0
                                working = False
                            if sleepless:
                                if (yield Sleep(follow.cursor, limit, follow.words)):
                                    continue
                            elif sleep(follow.cursor, limit, follow.words):
                                continue  # woken, or the feed ended: the loop says which
                        if (yield from self._look(follow, timeout)):
                            return RECREATED
                        continue
                elif item == F.TIMEOUT:
                    if (yield from self._look(follow, timeout)):
                        return RECREATED
                    continue
                elif item == F.ENDED:
                    for q in list(pending.values()):
                        if reg is not None:
                            reg.give(q.seq, 1)
                        yield q
                    if reg is not None:
                        reg.waiting(follow.cursor, given)  # every change dealt with
                        given = 0
                    return _ENDED
                elif item == F.EPOCH:
                    restarted = self._watch.restarted()
                    if restarted is not None:
                        yield restarted
                    continue
                elif item == F.LAPPED:  # jump to the head (see the module docstring)
                    cursor = follow.cursor
                    head = r.head()
                    values = self._catch_up(wanted, cursor, head, owed if on else None)
                    if owed:
                        # Left for the ring, these symbols may have changed an ``on`` field in the
                        # changes jumped over: their next change is given whichever fields it
                        # changed, so the loop lets every change through until it is past them.
                        follow.on = 0
                    follow.cursor = head
                    self._retarget(follow, wanted)
                    missed = F.missed(cursor, head, values)
                    if conflate:
                        for q in values:
                            hold(q)
                        continue
                    if missed:
                        if reg is not None:
                            reg.gap(missed)
                        yield Gap(missed, cursor + 1, head)
                    for value in values:
                        if reg is not None:
                            reg.give(value.seq, 1)
                        yield value
                        if timeout is not None:
                            follow.deadline = time.monotonic() + timeout
                elif item == F.NEWSLOT:  # a slot beyond what the loop was told of: learn it
                    seq = follow.cursor + 1
                    rec = r.read_record(seq)
                    if rec is not None:
                        self._refresh_for(rec[0], seq)  # raises BadSegment for a slot nobody counted
                    self._retarget(follow, wanted)
                    continue
                elif item == F.VOID:
                    if not conflate:
                        if reg is not None:
                            reg.gap(1)
                        yield Gap(1, follow.cursor, follow.cursor)
                    continue
                elif item == F.BEHIND:
                    F.check_head(follow.head, follow.cursor, self.name)
                    continue
                # A quote was given: the timeout counts from here.
                if timeout is not None:
                    follow.deadline = time.monotonic() + timeout
        finally:
            if reg is not None and given:
                reg.count(given)  # a run cut short (the iterator closed): still counted

    def _look(self, follow: Any, timeout: Optional[float]) -> Generator[Event, None, bool]:
        """A wait slice passed with nothing new: raise Timeout past the deadline, and ask the
        Watch what no wake-up tells (PublisherGone, PublisherRestarted, a re-created feed:
        returns True)."""
        self._check_deadline(None if timeout is None else follow.deadline, timeout)
        event = self._watch.look()
        if event is RECREATED:
            return True
        if event is not None:
            yield event  # type: ignore[misc]
        return False

    def _retarget(self, follow: Any, wanted: Optional[Set[str]]) -> None:
        """Tell the follow loop the symbols known now: which slots are wanted, what to sleep on."""
        interest, words = self._targets(wanted)
        if interest is None:
            follow.interest = None
        else:
            follow.interest = bytearray(self.geometry.capacity)
            for i in interest:
                follow.interest[i] = 1
        follow.words = words
        follow.known = len(self._names)

    def _targets(self, wanted: Optional[Set[str]]) -> Tuple[Optional[Set[int]], Optional[Tuple[int, ...]]]:
        """The slot indices of the wanted symbols known so far (None: all), and the words of
        the wake table to sleep on for them (None: the header's word, woken by every change).
        One that follows everything, or a symbol the feed does not have yet (any change may be
        its first), sleeps on the header's word."""
        if wanted is None:
            return None, None
        interest = {i for i, s in enumerate(self._names) if s in wanted}
        if len(interest) < len(wanted):
            return interest, None
        return interest, self._listener.words_for(interest)

    def _catch_up(
        self, wanted: Optional[Set[str]], after: int, upto: int, later: Optional[Dict[str, int]] = None
    ) -> List[Quote]:
        """The current value of every wanted slot whose change falls in (after, upto]. The slot
        count is loaded again first, after ``upto`` was (the caller's head): a symbol added in
        the skipped range is in the table by then, since a new slot is counted before the head
        covers its first change. ``later`` gets symbol -> seq of the wanted slots left out
        because they changed again after ``upto`` (their change is still ahead in the ring)."""
        self._refresh()
        names = self._names
        slots = [i for i in range(len(names)) if wanted is None or names[i] in wanted]
        values = [(i, self._read_caught_up(i)) for i in slots]
        if later is not None:
            later.update((names[i], got[2]) for i, got in values if got is not None and got[2] > upto)
        build = self._quote._build
        return [
            build(names[c.slot], c.values, c.time_ns, c.seq, c.changed) for c in F.latest_since(values, after, upto)
        ]

    def _read_caught_up(self, index: int) -> Optional[Reading]:
        """A slot for the catch-up: as get() reads it (patiently while a publisher writes it;
        a dead writer's slot from the ring), but None instead of an error when a dead writer
        left it mid-write and the ring no longer holds its last value: the catch-up then leaves
        it out, counted in the Gap's ``missed``, and the next publisher's repair announces it."""
        got = self._reader().read_slot(index)
        return got if got is not None else self._read_stuck_slot(index, give_up=True)

    def _check_deadline(self, deadline: Optional[float], timeout: Optional[float]) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise Timeout(f"no change on feed {self.name!r} within the timeout of {timeout:g} s")

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        self._detach()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A dropped subscriber must not keep its descriptor and mapping for the process's life.
        if getattr(self, "_r", None) is not None:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2)
            self.close()

    def __repr__(self) -> str:
        return f"<Subscriber {self.name!r}{' closed' if self._r is None else ''}>"
