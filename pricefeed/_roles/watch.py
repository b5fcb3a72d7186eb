"""What an idle subscriber looks at that no wake-up tells it of: whether a publisher still holds
the feed, whether a new one took it over, and whether the feed's name still leads here.

A new publisher is noticed by the epoch it writes into the header; it is reported
(PublisherRestarted) only when the publisher before it did not close cleanly, since only then
may it have repaired anything (Rule 6 of ``_protocol``). What happened before the subscriber
attached is not news: the watch takes in the publisher words and the lock when it is made, and
reports only departures and takeovers after that.
"""

from __future__ import annotations

from typing import Optional

from .._errors import PricefeedError
from .._protocol.liveness import Seen, closed_cleanly, takeover_news
from .._protocol.reader import FeedReader
from .._segment import Segment
from .._values import PublisherGone, PublisherRestarted

#: What ``Watch.look()`` returns when the feed's name leads to a new segment now.
RECREATED = object()


class Watch:
    def __init__(self, segment: Segment, reader: FeedReader) -> None:
        self._seg = segment
        self._reader = reader
        # The publisher words first, then the lock (the other order would miss a publisher that
        # takes over in between, and never report its departure). A publisher already gone
        # left before we came.
        epoch, state = reader.publisher_view()
        self.seen = Seen(epoch, state.handovers)
        self._gone_reported = not segment.held()

    def restarted(self, final: bool = False) -> Optional[PublisherRestarted]:
        """A PublisherRestarted event if, since we last looked, a publisher took over from one
        that did not close cleanly (``liveness.takeover_news``; ``final``: no process holds the
        lock). Any takeover makes the new publisher's departure news again."""
        r = self._reader
        if r.publisher_epoch() == self.seen.epoch:
            return None  # the common case, one load: no takeover
        epoch, state = r.publisher_view()
        news = takeover_news(self.seen, epoch, state, final)
        if news is None:
            return None
        unclean, self.seen = news
        self._gone_reported = False
        if not unclean:
            return None
        return PublisherRestarted(r.publisher_pid() or None, epoch, r.head())

    def look(self) -> object:
        """What an idle slice checks: an event to report, RECREATED, or None."""
        r = self._reader
        if not self._gone_reported or r.publisher_epoch() != self.seen.epoch:
            # The words are loaded after the lock: a publisher that closed cleanly stored its
            # state before it let the lock go, so a free lock shows that state. A takeover not
            # taken in yet comes first (one caught between its two stores is settled here if
            # nobody holds the lock: it died there).
            free = not self._seg.held()
            before = self.seen.epoch
            restarted = self.restarted(final=free)
            if restarted is not None:
                return restarted
            if free and not self._gone_reported and self.seen.epoch == before:
                epoch, state = r.publisher_view()
                self._gone_reported = True
                return PublisherGone(r.publisher_pid() or None, r.head(), closed_cleanly(epoch, state))
            # (A newer publisher than we knew: its departure is for a later slice.)
        if not self._seg.still_linked():
            try:
                Segment.open(self._seg.feed, writable=False).close()
            except PricefeedError:
                return None  # removed, not (yet) re-created: keep following this segment
            return RECREATED
        return None
