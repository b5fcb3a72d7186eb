"""Change rates of a feed and of each of its symbols, from the ring, at a bounded cost.

The head sequence says how many changes the feed made between two looks (its rate is exact),
but not which symbols made them: the ring does, one record per change naming its slot. Reading
every record since the last look would make the cost of watching grow with the publisher's
rate, so a look reads at most ``budget`` records, the newest ones, and the ring itself holds
only the last ``ring_size``. When a look read fewer records than the feed made, each symbol's
count is scaled up by the ratio and the rates are marked estimated: the newest changes stand
for all of them, which is right for a feed whose mix of symbols does not change quickly, and
said, so that nobody takes the figure for a count.

The rate shown is over a sliding window (``window`` seconds, the looks that ended inside it):
a steady rate reads steady whatever the refresh interval, and a symbol that stops changing
drops to 0 one window later, which a smoothed average would take much longer to show.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Dict, NamedTuple, Optional, Tuple

from .._protocol import layout as L

#: Most ring records one look reads. A C reader copies one in about 0.1 µs and the pure-Python
#: one in about 0.4 µs, so a look costs a few milliseconds at most, whatever the feed's rate.
DEFAULT_BUDGET = 16384
#: Seconds of history a rate is taken over.
DEFAULT_WINDOW = 2.0

#: What ``read_record(seq)`` of a FeedReader gives: (slot, values, time_ns, changed), or None
#: when the ring no longer holds that change.
ReadRecord = Callable[[int], Optional[Tuple[int, Any, int, int]]]


class _Look(NamedTuple):
    start: float
    end: float
    #: Changes the feed made during the look (the head's advance): exact.
    changes: int
    #: Slot -> changes counted (scaled up when ``estimated``).
    counts: Dict[int, float]
    estimated: bool


class Rates:
    """Feed-wide and per-slot change rates over the last ``window`` seconds.

    Call ``look(head, now, read_record)`` once per refresh, with the head sequence, a monotonic
    time in seconds and the reader's ``read_record``; then ``total()``, ``of(slot)`` and
    ``estimated`` say what the window holds. The first look only sets the starting point."""

    def __init__(self, ring_size: int, budget: int = DEFAULT_BUDGET, window: float = DEFAULT_WINDOW) -> None:
        if budget < 1 or window <= 0:
            raise ValueError(f"budget must be >= 1 and window > 0: got {budget}, {window}")
        self.ring_size = ring_size
        self.budget = budget
        self.window = window
        self._cursor: Optional[int] = None
        self._at = 0.0
        self._looks: Deque[_Look] = deque()
        self._sums: Dict[int, float] = {}
        self._changes = 0
        self._estimated = 0
        #: Records read by the last look (what it cost).
        self.last_read = 0

    def reset(self) -> None:
        """Forget everything: the next look starts afresh (a feed re-created under the name)."""
        self._cursor = None
        self._looks.clear()
        self._sums.clear()
        self._changes = 0
        self._estimated = 0

    def look(self, head: int, now: float, read_record: ReadRecord) -> None:
        """Count the changes made since the last look, reading at most ``budget`` records."""
        cursor = self._cursor
        self.last_read = 0
        if cursor is None or head < cursor:
            # The first look, or a head that went back (only a new segment does that): a
            # starting point, nothing to count.
            self.reset()
            self._cursor, self._at = head, now
            return
        if now <= self._at:
            return  # no time has passed: the changes are counted by the next look
        made = head - cursor
        readable = min(made, self.budget, self.ring_size)
        counts: Dict[int, float] = {}
        read = 0
        for seq in range(head - readable + 1, head + 1):
            rec = read_record(seq)
            if rec is None:
                continue  # overwritten since the head was read: the publisher is a ring ahead
            read += 1
            slot = rec[0]
            if slot != L.SLOT_VOID:  # a record that names no symbol (a repair's) counts for the feed only
                counts[slot] = counts.get(slot, 0.0) + 1.0
        self.last_read = readable
        estimated = read < made
        if estimated and read:
            scale = made / read
            counts = {slot: n * scale for slot, n in counts.items()}
        self._add(_Look(self._at, now, made, counts, estimated))
        self._cursor, self._at = head, now
        self._expire(now)

    def _add(self, look: _Look) -> None:
        self._looks.append(look)
        self._changes += look.changes
        self._estimated += look.estimated
        sums = self._sums
        for slot, n in look.counts.items():
            sums[slot] = sums.get(slot, 0.0) + n

    def _expire(self, now: float) -> None:
        """Drop the looks that ended more than a window ago (keeping the newest, always)."""
        looks, sums = self._looks, self._sums
        while len(looks) > 1 and looks[0].end <= now - self.window:
            old = looks.popleft()
            self._changes -= old.changes
            self._estimated -= old.estimated
            for slot, n in old.counts.items():
                left = sums[slot] - n
                if left > 1e-9:
                    sums[slot] = left
                else:
                    del sums[slot]

    @property
    def span(self) -> float:
        """Seconds the window covers (0 before the second look)."""
        looks = self._looks
        return looks[-1].end - looks[0].start if looks else 0.0

    @property
    def ready(self) -> bool:
        """Whether there is a rate to show: two looks at least."""
        return bool(self._looks)

    @property
    def estimated(self) -> bool:
        """Whether some look in the window read fewer records than the feed made."""
        return self._estimated > 0

    def total(self) -> float:
        """The feed's changes per second over the window: exact (from the head)."""
        span = self.span
        return self._changes / span if span > 0 else 0.0

    def of(self, slot: int) -> float:
        """The changes per second of the symbol in ``slot`` over the window."""
        span = self.span
        return self._sums.get(slot, 0.0) / span if span > 0 else 0.0

    def slots(self) -> Dict[int, float]:
        """Slot -> changes per second, for the slots that changed within the window."""
        span = self.span
        if span <= 0:
            return {}
        return {slot: n / span for slot, n in self._sums.items()}
