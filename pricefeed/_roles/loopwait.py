"""Sleeping inside an event loop: one waiter per loop, shared by all its async subscriptions.

An async subscription that has nothing to deliver must sleep without blocking its loop; a
thread per subscription would cost a thread each, and polling would cost CPU. So each loop
with async subscriptions gets one ``LoopWaiter``, which sleeps for all of them in one of three
ways, the best the wait backend offers (it asks the backend what it can do, never its name):

``ring``
    The backend's ``ring()`` (Linux io_uring futex waits, 6.7 and later): each sleep arms a
    kernel wait on the subscription's words, and the ring's descriptor, which the loop watches
    like a socket, becomes readable when one completes. No thread at all, and the fastest
    wake-up. Sleepers on the same words and values share one wait; a wait nobody sleeps on any
    longer (their slices passed, their tasks were cancelled) is cancelled.
``thread``
    Where there is no ring but the words are kernel futexes that one call waits on many of
    (``futex_words`` and ``can_wait_many``: Linux 5.16 and later, io_uring forbidden, as
    container defaults often have it): one thread sleeps in ``futex_waitv`` on every word any
    subscription of the loop waits on, plus a control word of its own. A subscription going to
    sleep hands over its words, bumps the control word and wakes it, so the thread takes them
    into its next wait; when a word changes, the thread resolves the sleepers' futures through
    ``call_soon_threadsafe``, which wakes the loop through its self-pipe.
``executor``
    Elsewhere (Windows, macOS, FreeBSD, older Linux, the polling backend) each sleeping
    subscription waits in a thread of the waiter's executor, through the same
    ``Listener.wait`` the blocking iterator uses, in slices no longer than the subscriber's
    watch slice.

Timeouts are the loop's timers in every mode: one timer per waiter, set for the earliest time
limit of its sleepers. The waiter lives while the loop has at least
one open async subscription; the last one to close releases the ring, or stops and joins the
thread and the executor, so a loop that is shut down (``asyncio.run`` closes the async
generators of its subscriptions) leaves no thread or descriptor behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import itertools
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

from .._wait import Backend, MultiWait, WakeWord, WordKey
from .listen import Armed, Listener

__all__ = ["LoopWaiter", "acquire"]

#: The most words one kernel wait takes (futex_waitv), the thread's control word included.
MAX_WORDS = 128
#: How often the thread looks at the words it could not fit in one wait (beyond MAX_WORDS).
OVERFLOW_SLICE = 0.01

_lock = threading.Lock()
#: (id(loop), id(backend)) -> (loop, its waiter); an entry lives while the waiter has users.
_waiters: Dict[Tuple[int, int], Tuple[asyncio.AbstractEventLoop, LoopWaiter]] = {}


def acquire(loop: asyncio.AbstractEventLoop, backend: Backend) -> LoopWaiter:
    """The waiter of ``loop`` for ``backend`` (made on first use), with one more user; each
    ``acquire`` is paired with a ``release()``. Called in the loop's thread."""
    key = (id(loop), id(backend))
    with _lock:
        found = _waiters.get(key)
        if found is None or found[0] is not loop:
            waiter = LoopWaiter(loop, backend)
            _waiters[key] = (loop, waiter)
        else:
            waiter = found[1]
        waiter.users += 1
        return waiter


#: The environment variable that caps the mode (``thread`` or ``executor``), to try a mode the
#: machine would not otherwise use: ``PRICEFEED_LOOP_WAIT=thread`` leaves io_uring alone.
ENV = "PRICEFEED_LOOP_WAIT"
MODES = ("executor", "thread", "ring")


def _allowed() -> int:
    """The best mode allowed, as an index of MODES."""
    cap = os.environ.get(ENV) or "ring"
    if cap not in MODES:
        from .._errors import UnsupportedPlatform

        raise UnsupportedPlatform(f"${ENV} must be one of {', '.join(MODES)}: got {cap!r}")
    return MODES.index(cap)


def _resolve(future: asyncio.Future, value: bool) -> None:  # type: ignore[type-arg]
    if not future.done():
        future.set_result(value)


class _Entry:
    """A subscription asleep in the thread mode."""

    __slots__ = ("expected", "future", "views", "where", "words")

    def __init__(self, armed: Armed, future: asyncio.Future) -> None:  # type: ignore[type-arg]
        self.views = armed.views
        self.expected = armed.expected
        self.words = armed.words
        self.where = armed.where
        self.future = future

    def ready(self) -> bool:
        try:
            return any(v[0] != e for v, e in zip(self.views, self.expected))
        except ValueError:  # its subscriber was closed under it: wake it to find out
            return True


class LoopWaiter:
    """The waiter of one event loop (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, backend: Backend) -> None:
        self.loop = loop
        self.backend = backend
        self.users = 0
        allowed = _allowed()
        self._ring = backend.ring() if allowed >= 2 else None
        if self._ring is not None:
            self.mode = "ring"
            loop.add_reader(self._ring.fileno(), self._on_ring)
        elif allowed >= 1 and backend.futex_words and backend.can_wait_many():
            self.mode = "thread"
        else:
            self.mode = "executor"
        # ring mode: (words' ids, values) -> token of the armed wait; token -> (its key, its
        # sleepers' futures, the words, kept alive so that their ids stay theirs).
        self._armed: Dict[Tuple[Tuple[int, ...], Tuple[int, ...]], int] = {}
        self._sleepers: Dict[int, Tuple[Tuple[Tuple[int, ...], Tuple[int, ...]], List[Any], List[WakeWord]]] = {}
        self._tokens = itertools.count(1)
        # thread mode
        self._entries: Dict[int, _Entry] = {}
        self._cond = threading.Lock()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._control: Optional[Any] = None
        self._control_view: Optional[memoryview] = None
        self._control_word: Optional[WakeWord] = None
        # executor mode
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        # the sleepers' time limits (ring and thread modes): future -> loop.time() it ends at
        self._due: Dict[Any, float] = {}
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = 0.0

    # -- sleeping ------------------------------------------------------------------------------
    async def sleep(self, listener: Listener, cursor: int, seconds: float, words: Optional[Tuple[int, ...]]) -> bool:
        """Sleep until the head may have passed ``cursor`` (True) or ``seconds`` passed with
        nothing new (False), without blocking the loop: the async twin of ``Listener.wait``."""
        if self.mode == "executor":
            got = await self.loop.run_in_executor(self._pool(), listener.wait, cursor, seconds, words)
            return got != 0
        armed = listener.arm(cursor, words)
        if not isinstance(armed, Armed):
            return True
        future = self.loop.create_future()
        self._time_out(future, seconds)
        woken = False
        if self.mode == "ring":
            token = self._arm_ring(armed)
            sleepers = self._sleepers[token][1]
            sleepers.append(future)
            try:
                woken = await future
            finally:
                self._due.pop(future, None)
                if future in sleepers:  # its slice passed, or its task was cancelled
                    sleepers.remove(future)
                    if not sleepers:
                        self._forget(token)
        else:
            entry = self._arm_thread(armed, future)
            try:
                woken = await future
            finally:
                self._due.pop(future, None)
                with self._cond:
                    self._entries.pop(id(entry), None)
        if woken:
            listener.woken += 1
            return True
        return listener.head() != cursor

    def _time_out(self, future: Any, seconds: float) -> None:
        """Resolve ``future`` with False in ``seconds`` unless it is resolved first. One loop
        timer serves every sleeper, set for the earliest of their times: a sleep costs a dict
        entry, not a timer of the loop's (a timer each measured 2 µs of every wake-up)."""
        due = self.loop.time() + seconds
        self._due[future] = due
        if self._timer is None or due < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(due, self._on_timer)
            self._timer_at = due

    def _on_timer(self) -> None:
        self._timer = None
        now = self.loop.time()
        following: Optional[float] = None
        for future, due in list(self._due.items()):
            if due <= now:
                del self._due[future]
                _resolve(future, False)
            elif following is None or due < following:
                following = due
        if following is not None:
            self._timer = self.loop.call_at(following, self._on_timer)
            self._timer_at = following

    def _arm_ring(self, armed: Armed) -> int:
        """The token of the ring's wait on these words and values, armed if nobody sleeps on
        it yet. The key holds the word objects themselves (through the entry), so a word of a
        closed subscription is never mistaken for another at the same address."""
        assert self._ring is not None
        key = (tuple(id(w) for w in armed.words), tuple(armed.expected))
        token = self._armed.get(key)
        if token is None:
            token = next(self._tokens)
            self._ring.arm(armed.words, armed.expected, token)
            self._armed[key] = token
            self._sleepers[token] = (key, [], armed.words)
        return token

    def _forget(self, token: int) -> None:
        """Nobody sleeps on this wait any longer: cancel it, so that the ring holds only waits
        someone sleeps on."""
        found = self._sleepers.pop(token, None)
        if found is not None and self._ring is not None:
            self._armed.pop(found[0], None)
            self._ring.cancel(token)

    def _on_ring(self) -> None:
        """The ring's descriptor is readable: wake the sleepers of every wait that completed."""
        if self._ring is None:
            return
        for token in self._ring.done():
            found = self._sleepers.pop(token, None)
            if found is None:
                continue
            key, futures, _ = found
            self._armed.pop(key, None)
            for future in futures:
                _resolve(future, True)
            futures.clear()

    def _arm_thread(self, armed: Armed, future: Any) -> _Entry:
        """Hand the thread a sleeper; the caller removes the entry when it wakes."""
        entry = _Entry(armed, future)
        with self._cond:
            self._entries[id(entry)] = entry
            if self._thread is None:
                self._start()
            self._poke()
        return entry

    def _poke(self) -> None:
        """Tell the thread its set of words changed: bump the control word, then wake it."""
        view, word = self._control_view, self._control_word
        assert view is not None and word is not None
        view[0] = (view[0] + 1) & 0x7FFFFFFF
        word.wake()

    def _start(self) -> None:
        if self._control_word is None:
            self._control = ctypes.c_uint32(0)
            self._control_view = memoryview(self._control).cast("B").cast("I")
            key = WordKey(f"pricefeed-loop-{os.getpid()}-{id(self)}", 0)
            self._control_word = self.backend.word(ctypes.addressof(self._control), self._control_view, key)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pricefeed-loop-waiter", daemon=True)
        self._thread.start()

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="pricefeed-wait")
        return self._executor

    # -- lifetime ------------------------------------------------------------------------------
    def release(self) -> None:
        """One user fewer; the last one gives back everything the waiter holds."""
        with _lock:
            self.users -= 1
            if self.users > 0:
                return
            key = (id(self.loop), id(self.backend))
            found = _waiters.get(key)
            if found is not None and found[1] is self:
                del _waiters[key]
        self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
        ring, self._ring = self._ring, None
        if ring is not None:
            try:
                self.loop.remove_reader(ring.fileno())
            except (RuntimeError, ValueError, OSError):  # the loop is closed already
                pass
            ring.close()  # cancels the waits still armed
            for _, futures, _ in self._sleepers.values():
                for future in futures:
                    _resolve(future, False)
            self._sleepers.clear()
            self._armed.clear()
        with self._cond:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._stopping = True
                self._poke()
        if thread is not None:
            thread.join(timeout=5.0)
        if self._control_word is not None and (thread is None or not thread.is_alive()):
            self._control_word.close()
            self._control_word = None
            if self._control_view is not None:
                self._control_view.release()
                self._control_view = None
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)  # its waits end within one watch slice

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        multis: Dict[Tuple[int, ...], MultiWait] = {}
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    assert self._control_view is not None and self._control_word is not None
                    control = self._control_view[0]  # before the entries: a later change bumps it
                    entries = list(self._entries.values())
                    words: List[WakeWord] = [self._control_word]
                expected: List[int] = [control]
                seen = set()
                overflow = False
                for entry in entries:
                    if entry.ready():
                        self.loop.call_soon_threadsafe(_resolve, entry.future, True)
                        with self._cond:
                            self._entries.pop(id(entry), None)
                        continue
                    # The entries still waiting all expect what their words hold now, so a word
                    # several of them wait on goes into the wait once.
                    for word, where, value in zip(entry.words, entry.where, entry.expected):
                        if where in seen:
                            continue
                        if len(words) >= MAX_WORDS:
                            overflow = True
                            continue
                        seen.add(where)
                        words.append(word)
                        expected.append(value)
                key = tuple(int(getattr(w, "address", id(w))) for w in words)
                multi = multis.get(key)
                if multi is None:
                    if len(multis) >= 64:  # sets of words come and go: keep the cache small
                        for old in multis.values():
                            old.close()
                        multis.clear()
                    multi = multis[key] = self.backend.multi(words)
                multi.wait(expected, OVERFLOW_SLICE if overflow else None)
        except RuntimeError:  # the loop was closed under it: nobody is left to wake
            return
        finally:
            for multi in multis.values():
                multi.close()
