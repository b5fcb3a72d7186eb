"""Following a feed's changes: a pure step, and the loop a subscriber runs over it.

``step(reader, state)`` is the whole algorithm of following, one move at a time: it loads the
head, compares it with the reader's cursor, and reads the next ring record. It takes the state
(``FollowState``: the cursor, how many slots the caller knows, the publisher epoch last seen)
and the memory (a ``FeedReader``), and gives back what happened (a ``Change``, or one of the
codes below) with the state that follows. It does no I/O of its own and never waits, so it
tests on a ``bytearray``.

``Follow`` is the loop around it that ``Subscriber.updates()`` consumes: it skips the changes
the caller did not ask for, spins, and sleeps when there is nothing new, through the ``wait``
callable the caller gives it (the caller's wait backend). Everything that needs the caller
comes back from ``next()`` as a code, and the caller sets ``cursor``, ``known``, ``interest``
and ``words`` again before it goes on. The C implementation (``accel``) has the same loop over
the same step, in the C core; which one runs is chosen in this package's ``__init__``.

The codes (the C core's ``pf_core_follow_step`` returns the same numbers as ``PF_F_*``; a unit test
holds them equal):

    TIMEOUT  a wait slice, or the deadline, passed with nothing wanted
    IDLE     nothing new and the feed not ended (only when ``block`` is False)
    ENDED    the feed was ended and every change read
    LAPPED   the record of cursor + 1 was overwritten (Rule 2): the caller catches up from
             the slot table and sets ``cursor`` to the head it caught up to
    NEWSLOT  the record names a slot at or beyond ``known``: the caller learns the new symbols
    VOID     the record stands for a change whose details were lost (cursor is past it)
    EPOCH    a new publisher took the feed (Rule 6): the caller asks ``liveness`` what it means
    BEHIND   head_seq is below the cursor: damage (``check_head`` says so)
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Sized, Tuple, Union

from .._errors import BadSegment
from . import layout as L
from .reader import FeedReader, Reading

TIMEOUT, IDLE, ENDED, LAPPED, NEWSLOT, VOID, EPOCH, BEHIND = range(8)
#: How many unwanted changes ``Follow`` skips in a row before it looks at the deadline: a feed
#: kept just ahead of a filtered subscriber must not keep it from timing out.
SKIP_CHECK = 4096

#: ``wait(cursor, seconds, words)``: sleep until the head may have passed ``cursor`` (1), the
#: feed ended (2), or ``seconds`` passed (0). ``words`` is None (the header's wake word) or
#: the wake-table words to sleep on.
Wait = Callable[[int, float, Optional[Tuple[int, ...]]], int]


class FollowState(NamedTuple):
    cursor: int  # sequence of the last change dealt with
    known: int  # how many slots' symbols the caller knows
    epoch: int  # publisher_epoch when last looked at
    head: int = 0  # head_seq as last loaded


class Change(NamedTuple):
    seq: int
    slot: int
    values: Tuple[Any, ...]
    time_ns: int
    changed: int  # bit i: field i changed


def step(reader: FeedReader, state: FollowState) -> Tuple[Union[int, Change], FollowState]:
    """One move of following (Rules 2, 3, 5 and 6): the next change after ``state.cursor``,
    or the code for what stands in its way, and the state after it."""
    while True:
        head = reader.head()
        if head < state.cursor:  # never waited on: it would spin
            return BEHIND, state._replace(head=head)
        # The epoch after the head: a new publisher bumps it before any change it makes, so
        # its takeover is reported before its first change (repairs included).
        epoch = reader.publisher_epoch()
        if epoch != state.epoch:
            return EPOCH, state._replace(epoch=epoch, head=head)
        if head == state.cursor:
            if not reader.closed():
                return IDLE, state._replace(head=head)
            if reader.head() != state.cursor:  # a last change came before the end: read it
                continue
            return ENDED, state._replace(head=head)
        seq = state.cursor + 1
        rec = reader.read_record(seq) if head - state.cursor <= reader.geometry.ring_size else None
        if rec is None:
            return LAPPED, state._replace(head=head)
        slot, values, time_ns, changed = rec
        if slot == L.SLOT_VOID:
            return VOID, state._replace(cursor=seq, head=head)
        if slot >= state.known:
            return NEWSLOT, state._replace(head=head)
        return Change(seq, slot, values, time_ns, changed), state._replace(cursor=seq, head=head)


class Follow:
    """The loop over ``step()`` that ``Subscriber.updates()`` consumes. Each ``next()`` gives
    the next wanted change as a ``quote`` (the feed's Quote class, made with its ``_build``),
    or a code (see the module docstring). ``names`` is the caller's list of symbols (slot
    order), of which ``known`` are covered by ``interest`` (None: every slot; else a bytearray
    with a non-zero byte per wanted slot) and ``words``. ``on``: a mask of fields, of which a
    change must have changed one to be wanted (0: any change). ``deadline`` is
    ``time.monotonic()`` seconds, < 0 for none.

    This implementation always waits through ``wait``; ``futex`` (the wake words are kernel
    futex words here, so a C loop may wait on them itself) is accepted and not needed."""

    def __init__(
        self, reader: FeedReader, names: List[str], known: int, interest: Optional[bytearray], quote: Any,
        words: Optional[Tuple[int, ...]], cursor: int, epoch: int, slice: float, spin: float, deadline: float,
        wait: Wait, futex: bool = False, on: int = 0,
    ) -> None:  # fmt: skip
        self._reader = reader
        self.on = on
        self._state = FollowState(cursor, known, epoch)
        self.names = names
        self.interest = interest
        self.quote = quote
        self._build = quote._build
        self.words = words
        self.slice = slice
        self.spin = spin
        self.deadline = deadline
        self.block = True
        self._wait = wait

    @property
    def cursor(self) -> int:
        return self._state.cursor

    @cursor.setter
    def cursor(self, value: int) -> None:
        self._state = self._state._replace(cursor=value)

    @property
    def known(self) -> int:
        return self._state.known

    @known.setter
    def known(self, value: int) -> None:
        self._state = self._state._replace(known=value)

    @property
    def epoch(self) -> int:
        return self._state.epoch

    @property
    def head(self) -> int:
        return self._state.head

    def __iter__(self) -> Follow:
        return self

    def __next__(self) -> Any:
        reader = self._reader
        skipped = 0
        while True:
            got, self._state = step(reader, self._state)
            if type(got) is Change:
                interest = self.interest
                if (interest is not None and not (got.slot < len(interest) and interest[got.slot])) or (
                    self.on and not got.changed & self.on
                ):
                    skipped += 1
                    if skipped % SKIP_CHECK == 0 and 0 <= self.deadline <= time.monotonic():
                        return TIMEOUT
                    continue
                return self._build(self.names[got.slot], got.values, got.time_ns, got.seq, got.changed)
            if got != IDLE:
                return got
            if not self.block:
                return IDLE
            limit = self.slice
            if self.deadline >= 0:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    return TIMEOUT
                limit = min(limit, left)
            cursor = self._state.cursor
            if self.spin and reader.spin(cursor, self.spin):
                continue
            if self._wait(cursor, limit, self.words) == 0:
                return TIMEOUT


def latest_since(values: Iterable[Tuple[int, Optional[Reading]]], after: int, upto: int) -> List[Change]:
    """The catch-up after a lap: of these (slot, reading or None) read from the
    slot table, the ones whose change falls in (after, upto], in feed order. A slot changed
    again after ``upto`` is left out: that newer change is still ahead of the reader in the
    ring, so giving the older value now would hand the caller a record that is already stale
    (and the symbol twice). None stands for a slot that could not be read (being written right
    now, its sequence will be > upto; or left mid-write by a dead writer): left out too."""
    out = [Change(seq, slot, v, t, c) for slot, got in values if got is not None for v, t, seq, c in [got]]
    return sorted(c for c in out if after < c.seq <= upto)


def missed(after: int, upto: int, caught_up: Sized) -> int:
    """How many changes in (after, upto] a lapped reader will never deliver: every change in
    the range but the ones the catch-up gives."""
    return upto - after - len(caught_up)


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
