"""Polling backend: works wherever shared memory does, with no kernel wait primitive at all.

The waiter re-reads the word with a sleep between reads that starts at ``FIRST_SLEEP`` and
doubles up to ``MAX_SLEEP``, so an idle subscriber costs about ``1 / MAX_SLEEP`` wake-ups a
second (200 at 5 ms: well under 1% of a core) and a change is seen within ``MAX_SLEEP`` plus
scheduling delay. ``wake()`` does nothing: storing the word is the whole signal.
It is the fallback when no native backend works, and can be chosen on purpose
(``backend="polling"``), for instance on a file system where futexes are refused.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

FIRST_SLEEP = 50e-6
MAX_SLEEP = 5e-3


def _poll(changed: Callable[[], bool], timeout: Optional[float]) -> bool:
    """Sleep-and-look until ``changed()`` or ``timeout`` seconds: the bounded back-off above."""
    if changed():
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = FIRST_SLEEP
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
        else:
            time.sleep(pause)
        if changed():
            return True
        pause = min(pause * 2, MAX_SLEEP)


class PollingWord:
    __slots__ = ("_view",)

    def __init__(self, view: memoryview) -> None:
        self._view = view

    def wake(self) -> None:
        return None

    def close(self) -> None:
        return None

    def wake_with(self, other: PollingWord) -> None:
        return None

    def wait(self, expected: int, timeout: Optional[float]) -> bool:
        view = self._view
        return _poll(lambda: view[0] != expected, timeout)


class PollingMulti:
    __slots__ = ("_views",)

    def __init__(self, words: Sequence[PollingWord]) -> None:
        self._views = [w._view for w in words]

    def close(self) -> None:
        return None

    def wait(self, expected: Sequence[int], timeout: Optional[float]) -> bool:
        views = self._views
        return _poll(lambda: any(v[0] != e for v, e in zip(views, expected)), timeout)


class _Polling:
    name = "polling"
    #: The words are not plain futexes: callers go through word() and multi() (the contract).
    futex_words = False

    def usable(self) -> bool:
        return True

    def word(self, address: int, view: memoryview, key: Any = None, writer: bool = False) -> PollingWord:
        return PollingWord(view)

    def can_wait_many(self) -> bool:
        return True

    def multi(self, words: Sequence[Any]) -> PollingMulti:
        return PollingMulti(words)

    def ring(self) -> None:
        return None  # no kernel wait that completes into a descriptor: see the contract


BACKEND = _Polling()
