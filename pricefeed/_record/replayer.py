"""The replayer: publishes a recording's changes into a feed again (docs/recording.md).

The file is read twice: once to check all of it (so a damaged file changes no feed, and to
learn how many symbols it has), then to publish, up to where the first reading ended (a file
still being recorded is replayed as it was then). Each change is published as a whole record:
every field's value, so the replayed feed holds exactly the recorded values whatever it held
before; the fields a replayed change marks as changed are those that differ from the feed's
values before it, which are the recorded ones when a complete recording is replayed into a new
feed. Changes recorded with the same time stamp (a publish_many batch) are published as one
batch, with one wake-up.

Timing: change i is published at start + (time_ns[i] - time_ns[0]) / speed, on the monotonic
clock, sleeping in between; a time stamp that goes back is published at once. As fast as
possible (``speed=None``) publishes batches of up to BATCH changes back to back.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from .._errors import FeedFull, FeedNotFound, InvalidInput
from .._protocol import layout as L
from .._roles.publisher import Publisher
from .._roles.subscriber import Subscriber
from .._values import Quote, format_fields
from . import format as F

__all__ = ["ReplayResult", "replay", "BATCH", "check_speed"]

#: As fast as possible: at most this many changes per publish_many.
BATCH = 1024
#: The fastest and slowest speed factors accepted.
MIN_SPEED, MAX_SPEED = 1e-6, 1e6

Report = Callable[[str], None]


class ReplayResult(NamedTuple):
    """What a replay did: the recording's changes it went through, how many of them were
    changes of the feed (a value equal to the feed's is none), the seconds it took, and the
    bytes of torn tail it left out."""

    changes: int
    published: int
    seconds: float
    torn: int


def check_speed(speed: Optional[float]) -> Optional[float]:
    """A speed factor (None: as fast as possible), or InvalidInput."""
    if speed is None:
        return None
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidInput(f"speed is a factor from {MIN_SPEED:g} to {MAX_SPEED:g}: got {speed!r}")
    return float(speed)


def _noop(line: str) -> None:
    pass


def replay(
    path: str,
    feed: str,
    *,
    speed: Optional[float] = 1.0,
    original_time: bool = False,
    end: bool = False,
    capacity: Optional[int] = None,
    ring_size: int = L.DEFAULT_RING,
    mode: int = 0o600,
    owner: Any = None,
    allow_world_writable: bool = False,
    report: Optional[Report] = None,
) -> ReplayResult:
    """Publish the changes recorded in ``path`` into ``feed``, creating it with the recording's
    fields (``capacity``: by default the recording's number of symbols, at least 1024), or
    opening it if it has the same fields (InvalidGeometry if it has others: nothing is
    published). ``speed``: the recorded spacing divided by this factor; None: as fast as
    possible. ``original_time``: publish with the recorded time stamps instead of now.
    ``end``: end the feed for good once done."""
    speed = check_speed(speed)
    say = report or _noop
    started = time.monotonic()
    with F.Recording(path) as rec:
        summary = rec.scan()
        fields = rec.fields
        if summary.torn:
            say(f"left out a torn tail of {summary.torn} bytes at byte {summary.end} (a write cut short)")
        _check_feed_schema(feed, fields, owner, allow_world_writable)
        if capacity is None:
            capacity = min(L.MAX_CAPACITY, max(L.DEFAULT_CAPACITY, summary.symbols))
        with Publisher.open_or_create(
            feed,
            capacity,
            ring_size,
            mode,
            owner=owner,
            allow_world_writable=allow_world_writable,
            fields=format_fields(fields),
        ) as pub:
            if pub.fields != fields:  # created anew meanwhile, with other fields
                raise F.schema_mismatch(feed, pub.fields, fields)
            lacking = len(summary.names.difference(pub.symbols))
            room = pub.geometry.capacity - len(pub)
            if lacking > room:
                raise FeedFull(
                    f"feed {feed!r} has room for {room} more symbols, and the recording has {lacking} it lacks; "
                    "nothing was published (replay into a feed created with a larger --capacity)"
                )
            changes = rec.changes(summary.end)
            if speed is None:
                published = _as_fast_as_possible(pub, changes, original_time)
            else:
                published = _timed(pub, changes, speed, original_time)
            if end:
                pub.end()
    return ReplayResult(summary.changes, published, time.monotonic() - started, summary.torn)


def _check_feed_schema(feed: str, fields: Any, owner: Any, allow_world_writable: bool) -> None:
    """A feed that exists must have the recording's fields: checked before taking the
    publisher role, so a refused replay leaves the feed as it was."""
    try:
        with Subscriber(feed, owner=owner, allow_world_writable=allow_world_writable, register=False) as sub:
            has = sub.fields
    except FeedNotFound:
        return
    if has != fields:
        raise F.schema_mismatch(feed, has, fields)


def _item_maker(fields: Any) -> Callable[[Quote], Tuple[str, Any]]:
    """A change as publish_many takes it: (symbol, value) on a feed of one field, else
    (symbol, {name: value, ...}) with every field."""
    names = tuple(name for name, _ in fields)
    if len(names) == 1:
        return lambda q: (q[0], q[1])
    return lambda q: (q[0], dict(zip(names, q[1:-3])))


def _as_fast_as_possible(pub: Publisher, changes: Any, original_time: bool) -> int:
    item = _item_maker(pub.fields)
    published = 0
    batch: List[Tuple[str, Any]] = []
    stamp: Optional[int] = None
    for q in changes:
        t = q[-3]
        if batch and (len(batch) >= BATCH or (original_time and t != stamp)):
            published += pub.publish_many(batch, time_ns=stamp if original_time else None)
            batch = []
        stamp = t
        batch.append(item(q))
    if batch:
        published += pub.publish_many(batch, time_ns=stamp if original_time else None)
    return published


def _timed(pub: Publisher, changes: Any, speed: float, original_time: bool) -> int:
    item = _item_maker(pub.fields)
    published = 0
    batch: List[Tuple[str, Any]] = []
    stamp = 0
    first: Optional[int] = None
    start = 0.0
    for q in changes:
        t = q[-3]
        if batch and t != stamp:
            published += pub.publish_many(batch, time_ns=stamp if original_time else None)
            batch = []
        if first is None:
            first, start = t, time.monotonic()
        if not batch:
            _sleep_until(start + (t - first) / 1e9 / speed)
        stamp = t
        batch.append(item(q))
    if batch:
        published += pub.publish_many(batch, time_ns=stamp if original_time else None)
    return published


def _sleep_until(when: float) -> None:
    while True:
        left = when - time.monotonic()
        if left <= 0:
            return
        time.sleep(left)
