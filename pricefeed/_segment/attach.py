"""Open a feed segment and validate it: shared by the publisher, the subscriber and the CLI."""

from __future__ import annotations

import time
from typing import Tuple

from .._errors import BadSegment
from .._protocol import layout as L
from .._protocol.header import Geometry, Initialising, read_geometry
from . import Segment
from .common import Owner, check_trust

#: A segment reads layout version 0 while its creator initialises it, which takes
#: microseconds; past this long, the creator died before finishing.
INIT_WAIT_SECONDS = 1.0


def attach(
    feed: str, writable: bool, owner: Owner = None, allow_world_writable: bool = False
) -> Tuple[Segment, Geometry]:
    """Open and map ``feed``; with ``writable``, take the publisher lock first.

    Raises FeedNotFound, FeedPermissionError, FeedNotTrusted (see ``check_trust``: checked
    before anything is locked, read or written), FeedBusy (writable only), or BadSegment /
    LayoutVersionMismatch saying what was found and what was expected."""
    deadline = time.monotonic() + INIT_WAIT_SECONDS
    while True:
        seg = Segment.open(feed, writable)
        try:
            check_trust(seg, feed, writable, owner, allow_world_writable)
            if writable:
                seg.lock_publisher()
                if not seg.still_linked():
                    # Removed (or removed and re-created) while we took the lock: the name
                    # now leads elsewhere, or nowhere. Start again from the name.
                    seg.close()
                    continue
            if seg.size == 0 and time.monotonic() < deadline:
                # Created a moment ago and not sized yet.
                seg.close()
                time.sleep(0.005)
                continue
            if seg.size < L.HEADER_SIZE:
                raise BadSegment(
                    f"feed {feed!r} is not a pricefeed segment: {seg.size} bytes, smaller than "
                    f"the {L.HEADER_SIZE}-byte header"
                )
            seg.map(seg.size)
            try:
                return seg, read_geometry(seg.view)
            except Initialising as exc:
                if time.monotonic() >= deadline:
                    raise BadSegment(f"feed {feed!r}: {exc}") from None
            except BadSegment as exc:
                raise type(exc)(f"feed {feed!r}: {exc}") from None
        except BaseException:
            seg.close()
            raise
        seg.close()
        time.sleep(0.005)
