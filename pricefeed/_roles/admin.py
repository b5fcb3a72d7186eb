"""Feeds as a whole: listing them and removing them."""

from __future__ import annotations

import os
from typing import List, Optional

from .._errors import BadSegment, FeedBusy, FeedPermissionError
from .._protocol import implementation
from .._protocol import layout as L
from .._protocol.header import read_geometry
from .._registry import registry
from .._segment import Segment, list_feeds
from .._wait import waker
from .announce import Announcer

__all__ = ["feed_names", "remove"]


def feed_names() -> List[str]:
    """The names of every feed on this machine, sorted."""
    return list_feeds()


def remove(name: str, force: bool = False, stale_only: bool = False) -> bool:
    """Remove a feed's segment and end it, so that subscribers still attached finish.

    The publisher lock is taken first and held until the name is gone, so no publisher can
    take over a feed that is being removed. If a live publisher holds it: with ``stale_only``
    nothing happens and False is returned; otherwise FeedBusy is raised, unless ``force``,
    which removes the name anyway without ending the feed (the publisher goes on writing to a
    segment no new subscriber can open). Raises FeedNotFound if there is no such feed.

    Another user's segment is never written, only unlinked where the system allows it (the
    owner, or root: /dev/shm is sticky); its subscribers then notice that the name is gone.
    """
    while True:
        try:
            seg = Segment.open(name, writable=True)
        except FeedPermissionError:
            seg = Segment.open(name, writable=False)  # we may still be allowed to unlink it
        try:
            locked = seg.try_lock()
            if not locked:
                if stale_only:
                    return False
                if not force:
                    pid = seg.holder_pid()
                    raise FeedBusy(
                        f"feed {name!r} has a live publisher (pid {pid}); stop it first, or use "
                        "--force to remove the name anyway",
                        holder_pid=pid or None,
                    )
            elif not seg.still_linked():
                continue  # removed, or removed and re-created, while we took the lock: look again
            incarnation = _incarnation(seg)
            seg.unlink()
            registry.remove(name, incarnation)
            if locked and _ours(seg):
                _end_quietly(seg)
            return True
        finally:
            seg.close()


def _incarnation(seg: Segment) -> Optional[int]:
    """The feed's incarnation as its header says, so that only its own registry goes with it
    (None if it cannot be read: then whatever registry is under the name goes)."""
    try:
        raw = os.pread(seg.fd, 8, L.OFF_INCARNATION)
    except (OSError, AttributeError):  # Windows: no pread (and no registry)
        return None
    return int.from_bytes(raw, "little") if len(raw) == 8 else None


def _ours(seg: Segment) -> bool:
    """Whether the segment belongs to this process's user (Windows: always, see check_trust)."""
    return seg.uid is None or not hasattr(os, "geteuid") or seg.uid == os.geteuid()


def _end_quietly(seg: Segment) -> None:
    """Mark a feed ended and wake its subscribers, so they stop instead of waiting forever
    on a segment that no publisher can reach any more. Skipped for anything not a valid feed."""
    if not seg.writable or seg.size < L.HEADER_SIZE:
        return
    seg.map(seg.size)
    try:
        geometry = read_geometry(seg.view)
    except BadSegment:
        return
    w = implementation().Writer(seg.view, geometry, seg.address)
    try:
        wake = Announcer(waker(), seg, geometry.incarnation)
        try:
            w.set_closed()
            wake.everyone()
        finally:
            wake.release()
    finally:
        w.release()  # whatever happened: the segment cannot close while its views are out
