"""The reader's side of a feed's wake words: what a subscriber sleeps on, through the wait contract.

The header's word is woken by every change; word ``i`` of the wake table by the changes of the
slots whose index & (WAKE_WORDS - 1) == i (``announce`` is the writer's side). A subscriber of
a few symbols sleeps on their words of the table at once, in one multi-wait, so that changes of
other symbols do not wake it; any other sleeps on the header's word.

To sleep, ``wait()`` loads the words *before* it checks the head one last time, and sleeps only
while the words still hold those values: a change published in between bumps a word, and the
wait returns at once (Rule 3 of ``_protocol``).
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Set, Tuple, Union

from .._protocol import layout as L
from .._protocol.reader import FeedReader
from .._segment import Segment
from .._wait import Backend, MultiWait, WakeWord
from .announce import HEADER_INDEX, wake_key


class Armed(NamedTuple):
    """What a subscriber is about to sleep on: the words, a view of each one's value, and the
    values they held when the head was last checked."""

    words: List[WakeWord]
    views: List[memoryview]
    expected: List[int]
    #: What tells the words from others: their addresses, where the backend's words know them.
    where: Tuple[int, ...]


class Listener:
    """A subscriber's wake words, made on demand and kept until ``close()``."""

    def __init__(self, backend: Backend, segment: Segment, reader: FeedReader) -> None:
        self.backend = backend
        self._seg = segment
        self._reader = reader
        self._space = (segment.feed, reader.geometry.incarnation)
        self._views: List[memoryview] = []
        self._table: Dict[int, WakeWord] = {}
        self._multis: Dict[Tuple[int, ...], MultiWait] = {}  # wake-table words -> their multi-wait
        self._view_of: Dict[int, memoryview] = {}  # id of a word -> the view of its value
        #: words (None: the header's) -> (the words, their views, their identities), for arm()
        self._armed: Dict[Optional[Tuple[int, ...]], Tuple[List[WakeWord], List[memoryview], Tuple[int, ...]]] = {}
        self._header = self._word(L.OFF_FUTEX, HEADER_INDEX)
        #: How many waits ended because a word changed or was woken (not by a timeout).
        self.woken = 0

    def _word(self, offset: int, index: int) -> WakeWord:
        view = self._seg.view[offset : offset + 4].cast("I")
        self._views.append(view)
        key = wake_key(self._space[0], self._space[1], index)
        word = self.backend.word(self._seg.address + offset, view, key)
        self._view_of[id(word)] = view
        return word

    def words_for(self, slots: Set[int]) -> Optional[Tuple[int, ...]]:
        """The words of the wake table to sleep on for changes of these slots, or None for the
        header's word: where no kernel waits on several words, or one wait would need more
        words than it takes."""
        if not self.backend.can_wait_many():
            return None
        words = tuple(sorted({L.wake_word_of(i) for i in slots}))
        if len(words) >= L.WAKE_WORDS:
            return None
        if words not in self._multis:  # one per set of words: no new registration per retarget
            for w in words:
                if w not in self._table:
                    self._table[w] = self._word(L.wake_offset(w), w)
            self._multis[words] = self.backend.multi([self._table[w] for w in words])
        return words

    def arm(self, cursor: int, words: Optional[Tuple[int, ...]]) -> Union[int, Armed]:
        """The first half of ``wait()``, for a caller that sleeps by other means: load the
        words' values, then check the head one last time. Returns 1 (the head passed
        ``cursor``) or 2 (the feed ended with nothing new) when there is no need to sleep, else
        what to sleep on: the words, each one's view and identity, and the value each must
        still hold (a change published after this bumps one of them)."""
        r = self._reader
        found = self._armed.get(words)
        if found is None:
            chosen = [self._header] if words is None else [self._table[w] for w in words]
            where = tuple(int(getattr(w, "address", id(w))) for w in chosen)
            found = self._armed[words] = (chosen, [self._view_of[id(w)] for w in chosen], where)
        expected = [r.futex_value()] if words is None else r.wake_values(list(words))
        if r.head() != cursor:
            return 1
        if r.closed():
            return 1 if r.head() != cursor else 2
        return Armed(found[0], found[1], expected, found[2])

    def head(self) -> int:
        return self._reader.head()

    def wait(self, cursor: int, seconds: float, words: Optional[Tuple[int, ...]]) -> int:
        """Sleep until the head may have passed ``cursor`` (1), the feed ended with nothing new
        (2), or ``seconds`` passed (0); on ``words`` (from ``words_for``), or None: the
        header's word. The follow loop's ``wait``."""
        r = self._reader
        if words is None:
            expected = r.futex_value()
        else:
            values = r.wake_values(list(words))
        if r.head() != cursor:
            return 1
        if r.closed():
            return 1 if r.head() != cursor else 2
        if seconds > 0:
            woken = self._header.wait(expected, seconds) if words is None else self._multis[words].wait(values, seconds)
            if woken:
                self.woken += 1
                return 1
        return 1 if r.head() != cursor else 0

    def close(self) -> None:
        for multi in self._multis.values():  # before the words: a live iterator may hold one
            multi.close()
        self._multis.clear()
        self._header.close()
        for word in self._table.values():
            word.close()
        self._table.clear()
        self._view_of.clear()
        self._armed.clear()
        for view in self._views:
            view.release()
        self._views.clear()
