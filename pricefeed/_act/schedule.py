"""Which change runs next: per-symbol bounded queues, conflation, drops, and the resume point.

Pure bookkeeping, no I/O and no clock, so it is tested on plain quotes. The rules:

Rule 1: a symbol has at most one action running; its other changes wait in its queue, in feed
order. A change of a symbol with nothing running and nothing queued is ready at once.

Rule 2: of the symbols that are ready (nothing running, something queued), the one whose next
change has the lowest sequence goes first. With one worker that is feed order.

Rule 3 (conflation): with ``conflate``, a symbol's queue holds one change, the newest: a newer
change supersedes the queued one (taking over its changed fields), which is counted as
superseded, not as an error.

Rule 4 (overflow): without it, a queue holds at most ``limit`` changes; one more drops the
oldest queued change (the newest are what a trader wants). Drops are added up per symbol (how
many, first and last sequence) until ``take_drops`` hands them over to be reported.

Rule 5 (the resume point): ``low_water()`` is a sequence such that every change at or below it
is finished, superseded, dropped (and so reported) or was not wanted: the smallest sequence
still queued, running, or left unfinished, minus one; with none, the highest sequence read.
A change that is left unfinished (``finish(item, done=False)``: it failed under ``stop``, or
was killed at a stop) holds the resume point below it for good, so a restart runs it again.

Rule 6: ``new_generation()`` (the feed was re-created) starts the sequence space afresh:
changes of the old feed still run, in order, but no longer count for the resume point.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Set, Tuple

from .._values import Quote

__all__ = ["Item", "Dropped", "Schedule"]


@dataclass
class Item:
    """One change to act on, and how many times it was attempted."""

    quote: Quote
    gen: int = 0
    attempt: int = 0

    @property
    def symbol(self) -> str:
        return self.quote.symbol

    @property
    def seq(self) -> int:
        return self.quote.seq


@dataclass
class Dropped:
    """``count`` changes of ``symbol`` dropped by its full queue, sequences ``first`` to ``last``."""

    symbol: str
    count: int
    first: int
    last: int


class Schedule:
    def __init__(self, limit: int, conflate: bool) -> None:
        self.limit = 1 if conflate else limit
        self.conflate = conflate
        self.gen = 0
        self._queues: Dict[str, Deque[Item]] = {}
        self._running: Set[str] = set()
        self._ready: List[Tuple[int, int, str]] = []  # (gen, seq, symbol), checked when popped
        self._ready_symbols: Set[str] = set()  # not running, something queued: what the heap stands for
        self._open: Set[int] = set()  # sequences of this generation not yet finished
        self._open_heap: List[int] = []  # the same, as a heap with stale entries
        self._read = 0  # the highest sequence of this generation read
        self._drops: Dict[str, Dropped] = {}
        self.queued = 0
        self.superseded = 0
        self.dropped = 0

    # -- input -----------------------------------------------------------------------------------
    def note(self, seq: int) -> None:
        """The reader got this far: every change up to ``seq`` was offered or is not wanted."""
        self._read = max(self._read, seq)

    def offer(self, quote: Quote) -> None:
        item = Item(quote, self.gen)
        self.note(item.seq)
        queue = self._queues.get(item.symbol)
        if queue is None:
            queue = self._queues[item.symbol] = deque()
        if self.conflate and queue:
            old = queue.pop()
            self._close(old)
            self.queued -= 1
            self.superseded += 1
            item.quote = quote._with_changed(quote.changed_mask | old.quote.changed_mask)
        elif len(queue) >= self.limit:
            self._drop(queue.popleft())
        self._open_item(item)
        queue.append(item)
        self.queued += 1
        if len(queue) == 1 and item.symbol not in self._running:
            heapq.heappush(self._ready, (item.gen, item.seq, item.symbol))
            self._ready_symbols.add(item.symbol)

    def _drop(self, item: Item) -> None:
        self._close(item)
        self.queued -= 1
        self.dropped += 1
        d = self._drops.get(item.symbol)
        if d is None:
            self._drops[item.symbol] = Dropped(item.symbol, 1, item.seq, item.seq)
        else:
            d.count += 1
            d.last = item.seq
        # A dropped head may have been the symbol's ready entry: the next one takes its place.
        queue = self._queues[item.symbol]
        if queue and item.symbol not in self._running:
            heapq.heappush(self._ready, (queue[0].gen, queue[0].seq, item.symbol))

    # -- dispatch --------------------------------------------------------------------------------
    def has_ready(self) -> bool:
        self._prune()
        return bool(self._ready)

    def ready_count(self) -> int:
        """How many symbols could start an action now."""
        return len(self._ready_symbols)

    def _prune(self) -> None:
        ready = self._ready
        while ready:
            gen, seq, symbol = ready[0]
            queue = self._queues.get(symbol)
            if symbol not in self._running and queue and (queue[0].gen, queue[0].seq) == (gen, seq):
                return
            heapq.heappop(ready)

    def pop(self) -> Optional[Item]:
        """The next change to run (Rule 2), its symbol now running; None if none is ready."""
        self._prune()
        if not self._ready:
            return None
        _, _, symbol = heapq.heappop(self._ready)
        item = self._queues[symbol].popleft()
        self.queued -= 1
        self._running.add(symbol)
        self._ready_symbols.discard(symbol)
        return item

    def waiting(self, symbol: str) -> bool:
        """True if a change of ``symbol`` waits behind the one running."""
        return bool(self._queues.get(symbol))

    def finish(self, item: Item, done: bool = True) -> None:
        """The action of ``item`` is over: its symbol may run its next change. ``done``: it
        will not run again (it completed, was given up on, or was superseded); otherwise it
        holds the resume point below it (Rule 5)."""
        self._running.discard(item.symbol)
        if done:
            self._close(item)
        queue = self._queues.get(item.symbol)
        if queue:
            heapq.heappush(self._ready, (queue[0].gen, queue[0].seq, item.symbol))
            self._ready_symbols.add(item.symbol)
        elif queue is not None:
            del self._queues[item.symbol]

    @property
    def running(self) -> int:
        return len(self._running)

    def pending(self) -> List[Item]:
        """Every change still queued, in no particular order."""
        return [item for queue in self._queues.values() for item in queue]

    # -- reports ---------------------------------------------------------------------------------
    def take_drops(self, symbol: Optional[str] = None) -> List[Dropped]:
        """The drops not yet reported: of ``symbol``, or of every symbol."""
        if symbol is not None:
            d = self._drops.pop(symbol, None)
            return [] if d is None else [d]
        drops = list(self._drops.values())
        self._drops.clear()
        return drops

    # -- the resume point ------------------------------------------------------------------------
    def _open_item(self, item: Item) -> None:
        if item.gen == self.gen:
            self._open.add(item.seq)
            heapq.heappush(self._open_heap, item.seq)

    def _close(self, item: Item) -> None:
        if item.gen == self.gen:
            self._open.discard(item.seq)

    def low_water(self) -> int:
        heap = self._open_heap
        while heap and heap[0] not in self._open:
            heapq.heappop(heap)
        return heap[0] - 1 if heap else self._read

    def new_generation(self) -> None:
        self.gen += 1
        self._open.clear()
        self._open_heap.clear()
        self._read = 0
