"""The writer's side of a feed's wake words: who is woken for what.

Every change wakes two words in one system call (``WakeWord.wake_with``): the word of the
changed slot in the wake table, which the subscribers that follow a few symbols sleep on,
and the header's word, which everyone else sleeps on. What concerns every subscriber (the feed
ending, a new publisher taking over) wakes every word. The caller bumps the words first
(``FeedWriter.announce`` / ``bump_all``), as Rule 3 of ``_protocol`` requires.
"""

from __future__ import annotations

from typing import Iterable, List

from .._protocol import layout as L
from .._segment import Segment
from .._wait import Backend, WakeWord, WordKey

_MASK = L.WAKE_WORDS - 1
#: The header's wake word as a wait backend names it (``WordKey.number``): after the table's.
HEADER_INDEX = L.WAKE_WORDS


def wake_key(feed: str, incarnation: int, index: int) -> WordKey:
    """How every process names wake word ``index`` (``HEADER_INDEX``: the header's) of
    this incarnation of the feed: a re-created feed gets new names."""
    return WordKey(f"{feed}-{incarnation:016x}", index)


class Announcer:
    def __init__(self, backend: Backend, segment: Segment, incarnation: int) -> None:
        self._views: List[memoryview] = []
        self._built: List[WakeWord] = []
        self._incarnation = incarnation
        try:
            self.header = self._word(backend, segment, L.OFF_FUTEX, HEADER_INDEX)
            self.table = [self._word(backend, segment, L.wake_offset(w), w) for w in range(L.WAKE_WORDS)]
        except BaseException:
            self._undo()
            raise
        self._wake_with = [word.wake_with for word in self.table]  # bound once: the publish path

    def _word(self, backend: Backend, segment: Segment, offset: int, index: int) -> WakeWord:
        view = segment.view[offset : offset + 4].cast("I")
        self._views.append(view)
        key = wake_key(segment.feed, self._incarnation, index)
        word = backend.word(segment.address + offset, view, key, writer=True)
        self._built.append(word)
        return word

    def _undo(self) -> None:
        for word in self._built:
            word.close()
        for view in self._views:
            view.release()
        self._built.clear()
        self._views.clear()

    def change(self, slot: int) -> None:
        """Wake whoever waits for a change of ``slot``: one system call."""
        self._wake_with[slot & _MASK](self.header)

    def changes(self, words: Iterable[int]) -> None:
        """Wake whoever waits for changes of slots with these wake-table words."""
        first = True
        for w in words:
            if first:
                self.table[w].wake_with(self.header)
                first = False
            else:
                self.table[w].wake()

    def everyone(self) -> None:
        self.header.wake()
        for word in self.table:
            word.wake()

    def release(self) -> None:
        self.header.close()
        for word in self.table:
            word.close()
        for view in self._views:
            view.release()
        self._views.clear()
