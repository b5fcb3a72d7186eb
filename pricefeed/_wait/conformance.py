"""The wait-backend conformance suite, shipped in the package so that it runs where pricefeed is
installed, with no checkout and no pytest: ``pricefeed selftest`` calls ``run()``, and
``tests/backends/test_wait_conformance.py`` runs the very same checks under pytest.

The contract the checks hold a backend to is in ``pricefeed/_wait/__init__.py``. Every check is
a plain function of the backend (a name, or a backend object) that returns normally (optionally
with a note for the report), raises ``AssertionError`` saying what went wrong, or raises ``Skip``
when it does not apply here. Each check works in a shared-memory segment of its own (a unique
name, unlinked afterwards); the cross-process checks wait in child processes that map it
read-only, as subscribers do. Nothing may hang: every wait, every read of a child's output and
every child has a time limit, and a check whose wait overstays its limit fails.

Words are made as a feed makes them: the waking side with ``writer=True``, waiters with
``writer=False``, each named by ``WordKey(segment name, index)``; a child builds the same keys.
A check that waits and wakes on one word in one process uses two objects, a writer and a
waiter, because on Windows in-process waiters wait on an address the writer registered. For
the same reason the in-process waiting checks run twice: with the waiter alone in this process
(a subscriber's own process) and beside a writer of the same word (a subscriber living in its
publisher's process).

Extra strictness on Linux only: before a wake that must reach sleeping processes, the futex
checks see each waiter in the futex system call (``/proc/PID/syscall``); elsewhere they give
the waiters a moment to fall asleep.
"""

from __future__ import annotations

import errno
import os
import platform
import queue
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import IO, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, TextIO, Tuple, Type, Union

from .._errors import InvalidInput, UnsupportedPlatform
from .._segment import Segment
from . import Backend, MultiWait, WakeWord, WordKey, available, select

__all__ = ["Skip", "Check", "CHECKS", "BackendLike", "run", "check_names"]

#: A backend as the checks take it: a name for ``select()``, or a backend object.
BackendLike = Union[str, Backend]

#: The longest any one wait, or any read of a child's output, may take before its check fails.
WAIT_LIMIT = 30.0
#: How early a timed-out wait may come back, measured on ``time.monotonic()``: 10 ms, or two
#: ticks of a coarse clock.
_SLACK = max(0.01, 2 * time.get_clock_info("monotonic").resolution)
#: A kernel backend's idle wait of one second may use at most this much CPU.
IDLE_CPU_LIMIT = 0.05

_SEGMENT_SIZE = 4096
# The words the checks use, each with its WordKey index. None sits at offset 0, so that an
# address mistake shows; wake_with's second word is 256 bytes past the first.
_A = 128
_B = 384
_MULTI = (132, 192, 1152)
_INDEX = {_A: 0, _B: 1, _MULTI[0]: 2, _MULTI[1]: 3, _MULTI[2]: 4}


class Skip(Exception):
    """The check does not apply on this platform or with this backend; ``str()`` says why."""

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else "not applicable here"


class Check(NamedTuple):
    """One check: its name (the report's and the pytest id's), the function, and what it shows."""

    name: str
    func: Callable[[BackendLike], Optional[str]]
    about: str


# -- helpers ------------------------------------------------------------------------------------


def _resolve(backend: BackendLike) -> Backend:
    return select(backend) if isinstance(backend, str) else backend


def _child_backend(b: Backend) -> str:
    """The name a child process selects ``b`` by: a backend object that ``select()`` does not
    know (a test's stand-in) cannot be rebuilt in another process."""
    try:
        if select(b.name) is b:
            return b.name
    except UnsupportedPlatform:
        pass
    raise Skip(f"backend object {b.name!r} is not what select({b.name!r}) gives, so no child process can use it")


def _segment_name() -> str:
    return f"st-{os.getpid()}-{secrets.token_hex(3)}"  # at most 17 characters


def _views(seg: Segment, offsets: Sequence[int]) -> List[memoryview]:
    return [seg.view[o : o + 4].cast("I") for o in offsets]


class _Feed:
    """A new segment and the words a check makes in it; leaving the ``with`` block closes every
    word and multi-wait, releases every view, and unlinks the segment."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = _segment_name()
        self.seg = Segment.create(self.name, _SEGMENT_SIZE, 0o600)
        self._views: List[memoryview] = []
        self._owned: List[Union[WakeWord, MultiWait]] = []
        self._writers: Dict[int, WakeWord] = {}

    def __enter__(self) -> _Feed:
        return self

    def __exit__(
        self, kind: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        failed: Optional[BaseException] = None
        try:
            for obj in reversed(self._owned):
                try:
                    obj.close()
                    obj.close()  # close() is idempotent
                except Exception as e:
                    failed = failed or e
            for v in self._views:
                try:
                    v.release()
                except BufferError as e:  # a backend kept a view derived from the one it was given
                    failed = failed or e
            self.seg.close()
        finally:
            self.seg.unlink()
        if failed is not None and exc is None:
            raise AssertionError(f"giving back a word failed: {type(failed).__name__}: {failed}") from failed

    def view(self, offset: int) -> memoryview:
        (v,) = _views(self.seg, [offset])
        self._views.append(v)
        return v

    def word(self, offset: int, writer: bool) -> WakeWord:
        key = WordKey(self.name, _INDEX[offset])
        w = self.backend.word(self.seg.address + offset, self.view(offset), key, writer=writer)
        self._owned.append(w)
        if writer:
            self._writers.setdefault(offset, w)
        return w

    def writer(self, offset: int) -> WakeWord:
        """The word's first writer made here, or a new one."""
        return self._writers.get(offset) or self.word(offset, writer=True)

    def multi(self, words: Sequence[WakeWord]) -> MultiWait:
        m = self.backend.multi(words)
        self._owned.append(m)
        return m


class _Watchdog:
    """Ends a wait that the backend failed to end: after ``after`` seconds it stores a new value
    in the word and wakes it, with the check's writer or, where the waiter is alone in this
    process, one made only then. A check whose wait overstays thus fails instead of hanging."""

    def __init__(self, feed: _Feed, offset: int, after: float) -> None:
        self.fired = False
        self._feed, self._offset, self._after = feed, offset, after
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="conformance-watchdog", daemon=True)

    def _watch(self) -> None:
        if sys.platform != "win32":
            # SIGALRM is sent to the process; keep it for the main thread, whose wait it tests.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        if self._cancel.wait(self._after):
            return
        self.fired = True
        try:
            view = self._feed.view(self._offset)
            view[0] = (view[0] + 1) & 0xFFFFFFFF
            self._feed.writer(self._offset).wake()
        except Exception:  # the check failed in some other way and gave the word back already
            pass

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cancel.set()
        self._thread.join(WAIT_LIMIT)

    def says(self) -> str:
        return f" (it ended only because the word was changed and woken after {self._after:g} s)" if self.fired else ""


class _Child:
    """A child process running ``_child_main`` whose output lines are read with a time limit.
    ``close()`` kills it if it still runs and reaps it."""

    # The child imports the very pricefeed this process runs, wherever that is.
    _SCRIPT = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from pricefeed._wait.conformance import _child_main; sys.exit(_child_main(sys.argv[2:]))"
    )
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def __init__(self, *args: object) -> None:
        for attempt in range(3):
            try:
                self.p = subprocess.Popen(
                    [sys.executable, "-c", self._SCRIPT, self._ROOT, *map(str, args)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=dict(os.environ, PYTHONUNBUFFERED="1"),
                )
                break
            except OSError as exc:
                # Wine's CreateProcess now and then fails with "Internal error" (1359) when
                # processes start in quick succession: a failure to start, not of the backend.
                if getattr(exc, "winerror", None) != 1359 or attempt == 2:
                    raise
                time.sleep(0.5)
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._err: List[str] = []
        assert self.p.stdout is not None and self.p.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.p.stdout,), daemon=True),
            threading.Thread(target=self._err.extend, args=(self.p.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.p.pid

    def _stderr(self) -> str:
        text = "".join(self._err).strip()
        return f"; its stderr:\n{text}" if text else ""

    def readline(self, timeout: float = WAIT_LIMIT, what: str = "") -> str:
        where = f"{what}: " if what else ""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{where}no output from child pid {self.pid} within {timeout:g} s") from None
        if line is None:
            self._lines.put(None)
            try:
                self.p.wait(timeout=WAIT_LIMIT)
            except subprocess.TimeoutExpired:
                pass
            for t in self._threads:
                t.join(WAIT_LIMIT)
            raise AssertionError(f"{where}child pid {self.pid} exited {self.p.returncode} early{self._stderr()}")
        return line

    def expect(self, want: str, what: str, timeout: float = WAIT_LIMIT) -> None:
        got = self.readline(timeout, what)
        if got == "timeout":
            raise AssertionError(
                f"{what}: the wait in child pid {self.pid} ran out after {WAIT_LIMIT:g} s: the wake-up never came"
            )
        if got != want:
            raise AssertionError(f"{what}: child pid {self.pid} said {got!r}, expected {want!r}{self._stderr()}")

    def finish(self) -> None:
        """Wait for a clean exit."""
        try:
            code = self.p.wait(timeout=WAIT_LIMIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"child pid {self.pid} did not exit within {WAIT_LIMIT:g} s") from None
        for t in self._threads:
            t.join(WAIT_LIMIT)
        if code != 0:
            raise AssertionError(f"child pid {self.pid} exited {code}{self._stderr()}")

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        try:
            self.p.wait(timeout=WAIT_LIMIT)
        finally:
            for t in self._threads:
                t.join(WAIT_LIMIT)
            for stream in (self.p.stdout, self.p.stderr):
                if stream is not None:
                    stream.close()


class _Children:
    """Children started with ``add``; leaving the ``with`` block kills and reaps every one."""

    def __init__(self) -> None:
        self.all: List[_Child] = []

    def add(self, *args: object) -> _Child:
        child = _Child(*args)
        self.all.append(child)
        return child

    def __enter__(self) -> _Children:
        return self

    def __exit__(self, *exc: object) -> None:
        for child in self.all:
            try:
                child.close()
            except Exception:
                pass


def _in_futex(pid: int) -> Optional[bool]:
    """Linux: whether the process sits in futex or futex_waitv now (None: cannot tell)."""
    from ._futex_linux import sleeping_in_futex

    return sleeping_in_futex(pid)


def _let_them_sleep(children: Sequence[_Child], b: Backend) -> None:
    """Return once the waiting children are asleep in their wait, so that the wake path is what
    gets tested rather than the word differing before the wait began."""
    if b.name == "futex" and sys.platform.startswith("linux"):
        # Extra strictness on Linux: see each waiter in the futex system call.
        deadline = time.monotonic() + WAIT_LIMIT
        pending = list(children)
        while pending:
            states = [_in_futex(c.pid) for c in pending]
            if None in states:
                break  # /proc/PID/syscall unreadable here: fall back to sleeping, below
            pending = [c for c, asleep in zip(pending, states) if not asleep]
            if not pending:
                return
            if time.monotonic() > deadline:
                pids = ", ".join(str(c.pid) for c in pending)
                raise AssertionError(f"waiters {pids} not asleep in futex after {WAIT_LIMIT:g} s")
            time.sleep(0.005)
    # Nothing portable says that a process is asleep in a wait. The children print "ready" just
    # before their first wait, so a short sleep lets them get there.
    time.sleep(0.2)


def _need_main_thread() -> None:
    if threading.current_thread() is not threading.main_thread():
        raise Skip("signal handlers can only be installed from the main thread")


class _Stop(Exception):
    """What the checks' signal handler raises, as Python's raises KeyboardInterrupt on Ctrl-C."""


# -- in-process checks --------------------------------------------------------------------------


#: The two ways a process waits on a word: alone, as a subscriber in its own process does, and
#: beside a writer of the same word, as a subscriber in its publisher's process does. (Windows
#: waits differently in each: on a named event, or with WaitOnAddress.)
_SETTINGS = ((False, "waiting alone"), (True, "waiting beside a writer in the same process"))


def _in_each_setting(backend: BackendLike, body: Callable[[_Feed, WakeWord, memoryview], None]) -> None:
    """Run ``body(feed, waiter's word, view of it)`` in each of the settings, a new segment each."""
    b = _resolve(backend)
    for beside, where in _SETTINGS:
        with _Feed(b) as f:
            if beside:
                f.word(_A, writer=True)
            waiter, view = f.word(_A, writer=False), f.view(_A)
            try:
                body(f, waiter, view)
            except AssertionError as exc:
                raise AssertionError(f"{where}: {exc}") from exc


def check_returns_at_once(backend: BackendLike) -> None:
    def body(f: _Feed, waiter: WakeWord, view: memoryview) -> None:
        view[0] = 5
        with _Watchdog(f, _A, 10.0) as dog:
            start = time.monotonic()
            got = waiter.wait(4, 10.0)
            took = time.monotonic() - start
        assert got is True, f"wait(4, 10) with the word at 5 returned {got!r}, not True{dog.says()}"
        assert took < 5.0, f"wait(4, 10) with the word at 5 took {took:.2f} s to return True{dog.says()}"

    _in_each_setting(backend, body)


def check_times_out(backend: BackendLike) -> None:
    def body(f: _Feed, waiter: WakeWord, view: memoryview) -> None:
        view[0] = 7
        with _Watchdog(f, _A, 5.0) as dog:
            start = time.monotonic()
            got = waiter.wait(7, 0.2)
            took = time.monotonic() - start
        assert got is False, f"wait(7, 0.2) on an unchanged word returned {got!r}, not False{dog.says()}"
        assert 0.2 - _SLACK <= took < 5.0, f"wait(7, 0.2) timed out after {took:.3f} s, not 0.2 s"

    _in_each_setting(backend, body)


def check_zero_timeout(backend: BackendLike) -> None:
    def body(f: _Feed, waiter: WakeWord, view: memoryview) -> None:
        with _Watchdog(f, _A, 5.0) as dog:
            start = time.monotonic()
            got = waiter.wait(view[0], 0)
            took = time.monotonic() - start
        assert got is False, f"wait(value, 0) on an unchanged word returned {got!r}, not False{dog.says()}"
        assert took < 1.0, f"wait(value, 0) took {took:.3f} s: a zero timeout must not sleep{dog.says()}"

    _in_each_setting(backend, body)


def check_wake_without_waiters(backend: BackendLike) -> None:
    with _Feed(_resolve(backend)) as f:
        writer = f.word(_A, writer=True)
        other = f.word(_B, writer=True)
        for _ in range(1000):
            writer.wake()
        for _ in range(100):
            writer.wake_with(other)


def check_signal_keeps_timeout(backend: BackendLike) -> None:
    if sys.platform == "win32":
        raise Skip("POSIX only: Windows has no SIGALRM or setitimer to interrupt a wait with")
    _need_main_thread()

    def body(f: _Feed, waiter: WakeWord, view: memoryview) -> None:
        hits: List[int] = []
        old = signal.signal(signal.SIGALRM, lambda *_: hits.append(1))
        try:
            with _Watchdog(f, _A, 5.0) as dog:
                signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
                start = time.monotonic()
                got = waiter.wait(view[0], 0.3)
                took = time.monotonic() - start
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            signal.signal(signal.SIGALRM, old)
        assert got is False, f"wait(value, 0.3) under a 50 Hz SIGALRM returned {got!r}, not False{dog.says()}"
        assert len(hits) >= 3, f"the 50 Hz timer interrupted the wait {len(hits)} times: expected several"
        assert 0.3 - _SLACK <= took < 5.0, f"wait(value, 0.3) under a 50 Hz SIGALRM returned after {took:.3f} s"

    _in_each_setting(backend, body)


if sys.platform == "win32":
    _SIGNUM = signal.SIGINT
else:
    _SIGNUM = signal.SIGALRM


class _SignalSoon:
    """Delivers a signal to this process ``delay`` seconds in: SIGALRM from setitimer on POSIX;
    on Windows, which has no SIGALRM, SIGINT from ``signal.raise_signal`` in another thread (its
    C handler sets the interpreter's SIGINT event, which a Windows wait must watch)."""

    signum = _SIGNUM

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._cancel = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _raise(self) -> None:
        if not self._cancel.wait(self._delay):
            signal.raise_signal(self.signum)

    def __enter__(self) -> _SignalSoon:
        if sys.platform == "win32":
            self._thread = threading.Thread(target=self._raise, name="conformance-signal", daemon=True)
            self._thread.start()
        else:
            signal.setitimer(signal.ITIMER_REAL, self._delay)
        return self

    def __exit__(self, *exc: object) -> None:
        if sys.platform == "win32":
            self._cancel.set()
            if self._thread is not None:
                self._thread.join(WAIT_LIMIT)
        else:
            signal.setitimer(signal.ITIMER_REAL, 0)


def check_raising_handler_ends_wait(backend: BackendLike) -> None:
    """How Ctrl-C (KeyboardInterrupt) stops a blocked subscriber."""
    _need_main_thread()
    armed = [False]

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        if armed[0]:  # once: a late signal after the check must not raise elsewhere
            armed[0] = False
            raise _Stop

    def body(f: _Feed, waiter: WakeWord, view: memoryview) -> None:
        armed[0] = True
        raised = False
        got: Optional[bool] = None
        took = 0.0
        dog = _Watchdog(f, _A, 10.0)
        old = signal.signal(_SignalSoon.signum, handler)
        try:
            with dog, _SignalSoon(0.1):
                start = time.monotonic()
                try:
                    got = waiter.wait(view[0], None)
                finally:
                    took = time.monotonic() - start
        except _Stop:  # from the wait, or (a failure) from just after it
            raised = True
        finally:
            armed[0] = False
            signal.signal(_SignalSoon.signum, old)
        sig = signal.Signals(_SignalSoon.signum).name
        assert raised and got is None, (
            f"wait(value, None) returned {got!r} after {took:.2f} s instead of raising the {sig} "
            f"handler's exception{dog.says()}"
        )
        assert took < 5.0, f"the {sig} handler's exception ended wait(value, None) only after {took:.2f} s{dog.says()}"

    _in_each_setting(backend, body)


def check_in_process_wake(backend: BackendLike) -> None:
    """The publisher and a subscriber in one process: a thread waits, this one stores and wakes."""
    rounds = 200
    with _Feed(_resolve(backend)) as f:
        writer, waiter, view = f.word(_A, writer=True), f.word(_A, writer=False), f.view(_A)
        said: queue.Queue[str] = queue.Queue()
        stop = threading.Event()

        def waiting() -> None:
            try:
                seen = view[0]
                said.put("ready")
                for _ in range(rounds):
                    while view[0] == seen:
                        if stop.is_set():
                            return
                        if not waiter.wait(seen, WAIT_LIMIT):
                            said.put("timeout")
                            return
                    seen = view[0]
                    said.put(str(seen))
            except Exception as exc:
                said.put(f"{type(exc).__name__}: {exc}")

        def hear(want: str, what: str) -> None:
            try:
                got = said.get(timeout=WAIT_LIMIT)
            except queue.Empty:
                raise AssertionError(f"{what}: the waiting thread said nothing for {WAIT_LIMIT:g} s") from None
            assert got == want, f"{what}: the waiting thread said {got!r}, expected {want!r}"

        thread = threading.Thread(target=waiting, name="conformance-waiter", daemon=True)
        thread.start()
        try:
            hear("ready", "start")
            for i in range(1, rounds + 1):
                view[0] = i
                writer.wake()
                hear(str(i), f"round {i}")
        finally:
            stop.set()
            view[0] = rounds + 1
            writer.wake()
            thread.join(WAIT_LIMIT)
        assert not thread.is_alive(), "the waiting thread did not finish"


def check_futex_words(backend: BackendLike) -> Optional[str]:
    """``futex_words`` tells the truth: where a backend says its words are kernel futex words,
    a raw FUTEX_WAIT on a word's address (as the C core makes it) is woken by the backend's
    wake(), and the backend's wait() by a raw FUTEX_WAKE, round after round."""
    b = _resolve(backend)
    if not b.futex_words:
        raise Skip(f"{b.name} does not say its words are kernel futexes: only its own word() waits and wakes them")
    if not sys.platform.startswith("linux"):
        raise AssertionError(f"{b.name} says futex_words on {sys.platform}, which has no futex")
    import ctypes

    from ._futex_linux import _FUTEX_WAIT, _FUTEX_WAKE, _NR

    libc = ctypes.CDLL(None, use_errno=True)
    rounds = 50

    class _Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    with _Feed(b) as f:
        writer, waiter, view = f.word(_A, writer=True), f.word(_A, writer=False), f.view(_A)
        address = ctypes.c_void_p(f.seg.address + _A)

        def raw_wait(expected: int) -> bool:
            limit = _Timespec(int(WAIT_LIMIT), 0)
            got = libc.syscall(_NR, address, _FUTEX_WAIT, ctypes.c_uint32(expected), ctypes.byref(limit), None, 0)
            return got == 0 or ctypes.get_errno() in (errno.EAGAIN, errno.EINTR)

        def raw_wake() -> None:
            assert libc.syscall(_NR, address, _FUTEX_WAKE, 0x7FFFFFFF, None, None, 0) >= 0, "raw FUTEX_WAKE failed"

        for how, wait, wake in (
            ("a raw FUTEX_WAIT woken by wake()", raw_wait, writer.wake),
            ("wait() woken by a raw FUTEX_WAKE", lambda seen: waiter.wait(seen, WAIT_LIMIT), raw_wake),
        ):
            said: queue.Queue[str] = queue.Queue()

            def waiting(wait: Callable[[int], bool] = wait, said: queue.Queue[str] = said) -> None:
                seen = view[0]
                said.put("ready")
                for _ in range(rounds):
                    while view[0] == seen:
                        if not wait(seen):
                            said.put("timeout")
                            return
                    seen = view[0]
                    said.put(str(seen))

            thread = threading.Thread(target=waiting, name="conformance-futex-words", daemon=True)
            thread.start()
            try:
                for i in range(rounds + 1):
                    try:
                        got = said.get(timeout=WAIT_LIMIT)
                    except queue.Empty:
                        raise AssertionError(f"{how}: the waiting thread said nothing for {WAIT_LIMIT:g} s") from None
                    want = "ready" if i == 0 else str(view[0])
                    assert got == want, f"{how}, round {i}: the waiting thread said {got!r}, expected {want!r}"
                    if i < rounds:
                        time.sleep(0.002)  # let it fall asleep: the wake-up, not the value, is under test
                        view[0] = view[0] + 1
                        wake()
            finally:
                view[0] = view[0] + 1
                wake()
                thread.join(WAIT_LIMIT)
            assert not thread.is_alive(), f"{how}: the waiting thread did not finish"
    return None


def check_multi_wait_times_out(backend: BackendLike) -> None:
    b = _resolve(backend)
    if not b.can_wait_many():
        raise Skip("no multi-word wait here (Linux < 5.16): callers wait on one word instead")

    def body(f: _Feed, waiter: WakeWord, view: memoryview) -> None:
        multi = f.multi([waiter])
        with _Watchdog(f, _A, 5.0) as dog:
            start = time.monotonic()
            got = multi.wait([view[0]], 0.2)
            took = time.monotonic() - start
        assert got is False, f"multi.wait(values, 0.2) on unchanged words returned {got!r}{dog.says()}"
        assert 0.2 - _SLACK <= took < 5.0, f"multi.wait(values, 0.2) timed out after {took:.3f} s, not 0.2 s"
        with _Watchdog(f, _A, 10.0) as dog:
            start = time.monotonic()
            got = multi.wait([view[0] + 1], 10.0)
            took = time.monotonic() - start
        assert got is True, f"multi.wait with a word already different returned {got!r}, not True{dog.says()}"
        assert took < 5.0, f"multi.wait with a word already different took {took:.2f} s{dog.says()}"

    _in_each_setting(b, body)


def check_can_wait_many(backend: BackendLike) -> Optional[str]:
    b = _resolve(backend)
    says = b.can_wait_many()
    if b.name == "polling":
        assert says is True, f"polling waits on any number of words, but can_wait_many() says {says!r}"
        return None
    if b.name != "futex" or not sys.platform.startswith("linux"):
        raise Skip(f"can_wait_many() says {says}; only futex's answer has a kernel version to check it against")
    release = platform.release()
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        raise Skip(f"cannot read a kernel version from {release!r}") from None
    want = (major, minor) >= (5, 16)
    if want and not says:
        from ._futex_linux import waitv_missing

        if waitv_missing():
            return f"futex_waitv is missing on Linux {release} (an emulator or a seccomp filter): one word is used"
    assert says == want, f"can_wait_many() says {says} on Linux {release}: futex_waitv came in 5.16"
    return None


def check_ring(backend: BackendLike) -> str:
    """Where the backend has a ring: 200 rounds of a wait armed on one word or on three, each
    completing (the descriptor readable, its token in done()) only after a store and a wake of
    one of its words; an armed wait on a word that already differs completes at once; close()
    closes the descriptor."""
    import select as select_module

    b = _resolve(backend)
    ring = b.ring()
    if ring is None:
        raise Skip("no ring here: event loops wait on the words in a thread instead (docs/protocol.md)")
    fd = ring.fileno()
    try:
        with _Feed(b) as f:
            readers = [f.word(o, writer=False) for o in _MULTI]
            writers = [f.word(o, writer=True) for o in _MULTI]
            views = [f.view(o) for o in _MULTI]

            def readable(seconds: float) -> bool:
                return bool(select_module.select([fd], [], [], seconds)[0])

            ring.arm(readers[:1], [views[0][0] + 1], 1)
            assert readable(5.0), "a wait on a word that already differs did not complete within 5 s"
            assert ring.done() == [1], "done() did not give the token of the wait that completed"
            rng = random.Random(2)
            for i in range(2, 202):
                chosen = list(range(len(_MULTI))) if i % 2 else [rng.randrange(len(_MULTI))]
                ring.arm([readers[k] for k in chosen], [views[k][0] for k in chosen], i)
                assert not readable(0.0) and ring.done() == [], f"round {i}: completed with nothing changed"
                k = rng.choice(chosen)
                views[k][0] = (views[k][0] + 1) & 0xFFFFFFFF
                writers[k].wake()
                assert readable(5.0), f"round {i}: the wait on {len(chosen)} word(s) missed the wake of word {k}"
                assert ring.done() == [i], f"round {i}: done() did not give token {i} once"
            # A cancelled wait never completes as woken: after its cancellation, a change of its
            # word gives nothing more than the cancellation's own completions.
            ring.arm(readers[:1], [views[0][0]], 999)
            ring.cancel(999)
            deadline = time.monotonic() + 5.0
            cancelled: List[int] = []
            while sorted(cancelled) != [0, 999] and time.monotonic() < deadline:
                readable(0.1)
                cancelled += ring.done()
            assert sorted(cancelled) == [0, 999], f"a cancelled wait gave {cancelled}, not [0, 999]"
            views[0][0] = (views[0][0] + 1) & 0xFFFFFFFF
            writers[0].wake()
            assert not readable(0.2) and ring.done() == [], "a cancelled wait completed again on a wake"
    finally:
        ring.close()
    try:
        os.fstat(fd)
    except OSError:
        return "200 waits completed, each by its wake-up only"
    raise AssertionError(f"descriptor {fd} is still open after close()")


# -- cross-process checks -----------------------------------------------------------------------


def _spec(offset: int) -> str:
    return f"{offset}:{_INDEX[offset]}"


def check_cross_process_wake(backend: BackendLike) -> None:
    """300 rounds of store-then-wake against a waiter in another process that mapped the word
    read-only; a lost wake-up leaves the waiter asleep and fails the round's time limit."""
    b = _resolve(backend)
    name = _child_backend(b)
    rounds = 300
    with _Feed(b) as f, _Children() as children:
        writer = f.word(_A, writer=True)
        view = f.view(_A)
        p = children.add("wait", f.name, name, rounds, _spec(_A))
        p.expect("ready 0", "start")
        for i in range(1, rounds + 1):
            view[0] = i
            writer.wake()
            p.expect(str(i), f"round {i}")
        p.finish()


def check_many_waiters(backend: BackendLike) -> None:
    b = _resolve(backend)
    name = _child_backend(b)
    with _Feed(b) as f, _Children() as children:
        writer = f.word(_A, writer=True)
        view = f.view(_A)
        waiters = [children.add("wait", f.name, name, 1, _spec(_A)) for _ in range(8)]
        for p in waiters:
            p.expect("ready 0", "start", timeout=2 * WAIT_LIMIT)
        _let_them_sleep(waiters, b)
        view[0] = 1
        writer.wake()
        for k, p in enumerate(waiters):
            p.expect("1", f"waiter {k + 1} of 8 after one wake")
        for p in waiters:
            p.finish()


def check_multi_wait_any(backend: BackendLike) -> None:
    """200 rounds: a waiter in another process (read-only mapping) sleeps on three words and must
    come back for whichever one changes, and not before."""
    b = _resolve(backend)
    if not b.can_wait_many():
        raise Skip("no multi-word wait here (Linux < 5.16): callers wait on one word instead")
    name = _child_backend(b)
    rounds = 200
    with _Feed(b) as f, _Children() as children:
        words = [f.word(o, writer=True) for o in _MULTI]
        views = [f.view(o) for o in _MULTI]
        p = children.add("multi", f.name, name, rounds, ",".join(_spec(o) for o in _MULTI))
        p.expect("ready", "start")
        rng = random.Random(1)
        for i in range(1, rounds + 1):
            k = rng.randrange(len(_MULTI))
            views[k][0] = (views[k][0] + 1) & 0xFFFFFFFF
            words[k].wake()
            p.expect(str(k), f"round {i}, word {k} changed")
        p.finish()


def check_wake_with(backend: BackendLike) -> None:
    """One call wakes a waiter of each word; the second word keeps its value (below 2**31)."""
    b = _resolve(backend)
    name = _child_backend(b)
    with _Feed(b) as f, _Children() as children:
        w = f.word(_A, writer=True)
        other = f.word(_B, writer=True)
        view, other_view = f.view(_A), f.view(_B)
        other_view[0] = 0x7FFFFFF0
        a = children.add("wait", f.name, name, 1, _spec(_A))
        c = children.add("wait", f.name, name, 1, _spec(_B))
        a.expect("ready 0", "start, first word")
        c.expect(f"ready {0x7FFFFFF0}", "start, second word")
        _let_them_sleep([a, c], b)
        view[0] = 1
        other_view[0] = 0x7FFFFFF1
        w.wake_with(other)
        a.expect("1", "the first word's waiter after wake_with")
        c.expect(str(0x7FFFFFF1), "the second word's waiter after wake_with")
        assert other_view[0] == 0x7FFFFFF1, f"wake_with changed the second word to {other_view[0]:#x}"
        a.finish()
        c.finish()


def check_idle_wait_uses_no_cpu(backend: BackendLike) -> str:
    """A child waits one second on a word nobody changes; the CPU time it reports for the wait."""
    b = _resolve(backend)
    name = _child_backend(b)
    seconds = 1.0
    with _Feed(b) as f, _Children() as children:
        f.word(_A, writer=True)  # a publisher exists, as for any feed
        p = children.add("idle", f.name, name, seconds, _spec(_A))
        p.expect("ready", "start")
        line = p.readline(seconds + WAIT_LIMIT, "the idle wait")
        p.finish()
    kind, returns, took, cpu = line.split()
    assert kind == "idle", f"the idle child said {line!r}"
    n, elapsed, used = int(returns), float(took), float(cpu)
    assert elapsed >= seconds - _SLACK, f"the idle wait ended after {elapsed:.3f} s, not {seconds:g} s"
    calls = f"{n} call{'' if n == 1 else 's'} to wait"
    note = f"{used * 1000:.1f} ms CPU in a {elapsed:.2f} s wait ({used / elapsed:.2%} of a core; {calls})"
    if b.name == "polling":
        # Polling wakes about 200 times a second by design (5 ms back-off); report its cost, and
        # fail only a busy loop.
        assert used < 0.5 * elapsed, f"polling spins: {note}"
    else:
        assert used < IDLE_CPU_LIMIT, f"a kernel wait must use no CPU: {note} (limit {IDLE_CPU_LIMIT * 1000:g} ms)"
    return note


# -- the child processes' side ------------------------------------------------------------------


def check_feed_round_trip(backend: BackendLike) -> str:
    """The whole stack on this platform: a publisher here, a subscriber in another process
    waiting with this backend, 500 changes of 7 symbols in bursts; the subscriber must see
    each exactly once, in order. A second publisher is refused and the feed is removed."""
    from .._errors import FeedBusy
    from .._roles.admin import remove
    from .._roles.publisher import Publisher

    b = _resolve(backend)
    name = _child_backend(b)
    feed = _segment_name()
    changes = 500
    pub = Publisher.create(feed)
    try:
        with _Children() as children:
            p = children.add("subscribe", feed, name, changes, "0:0")
            p.expect("ready", "start")
            symbols = [f"S{k}" for k in range(7)]
            start = time.monotonic()
            for i in range(1, changes + 1):
                pub.publish(symbols[i % 7], float(i))
                if i % 50 == 0:
                    time.sleep(0.01)  # bursts and pauses: subscribers sleep between them
            seen = [p.readline(what=f"change {k + 1} of {changes}") for k in range(changes)]
            took = time.monotonic() - start
            want = [f"{i} {symbols[i % 7]} {float(i)!r}" for i in range(1, changes + 1)]
            if seen != want:
                first = next(k for k, (a, c) in enumerate(zip(seen, want)) if a != c)
                said, expected = seen[first], want[first]
                raise AssertionError(f"change {first + 1}: the subscriber said {said!r}, expected {expected!r}")
            p.finish()
        try:
            Publisher.open(feed).close()
        except FeedBusy:
            pass
        else:
            raise AssertionError("a second publisher was let in while the first one held the feed")
    finally:
        pub.close()
        remove(feed)
    return f"{changes} changes seen once each, in order, in {took:.2f} s"


def _child_subscribe(feed: str, backend_name: str, count: int) -> int:
    from .._roles.subscriber import Subscriber
    from .._values import Quote

    with Subscriber(feed, backend=backend_name) as sub:
        events = sub.updates(timeout=WAIT_LIMIT)  # the start is taken here: before "ready"
        print("ready", flush=True)
        got = 0
        for event in events:
            if isinstance(event, Quote):
                print(event.seq, event.symbol, repr(event.price), flush=True)
                got += 1
                if got == count:
                    return 0
            else:
                print("event", type(event).__name__, flush=True)
    return 1


def _child_main(argv: Sequence[str]) -> int:
    """``role feed backend count offset:index[,offset:index...]`` (see the checks above)."""
    role, feed, backend_name, count, specs = argv
    if role == "subscribe":
        return _child_subscribe(feed, backend_name, int(count))
    pairs: List[Tuple[int, int]] = []
    for spec in specs.split(","):
        offset, index = spec.split(":")
        pairs.append((int(offset), int(index)))
    b = select(backend_name)
    seg = Segment.open(feed, writable=False)
    seg.map(seg.size)
    views = _views(seg, [o for o, _ in pairs])
    words = [b.word(seg.address + o, v, WordKey(feed, i)) for (o, i), v in zip(pairs, views)]
    try:
        if role == "wait":
            return _child_wait(words[0], views[0], int(count))
        if role == "multi":
            return _child_multi(b.multi(words), views, int(count))
        if role == "idle":
            return _child_idle(words[0], views[0], float(count))
        raise ValueError(f"unknown role {role!r}")
    finally:
        for w in words:
            w.close()
        for v in views:
            v.release()
        seg.close()


def _child_wait(w: WakeWord, view: memoryview, rounds: int) -> int:
    seen = view[0]
    print("ready", seen, flush=True)
    for _ in range(rounds):
        while view[0] == seen:
            if not w.wait(seen, WAIT_LIMIT):
                print("timeout", flush=True)
                return 1
        seen = view[0]
        print(seen, flush=True)
    return 0


def _child_multi(multi: MultiWait, views: Sequence[memoryview], rounds: int) -> int:
    try:
        seen = [v[0] for v in views]
        print("ready", flush=True)
        for _ in range(rounds):
            while [v[0] for v in views] == seen:
                if not multi.wait(seen, WAIT_LIMIT):
                    print("timeout", flush=True)
                    return 1
            now = [v[0] for v in views]
            print(",".join(str(k) for k, (a, c) in enumerate(zip(seen, now)) if a != c), flush=True)
            seen = now
        return 0
    finally:
        multi.close()


def _child_idle(w: WakeWord, view: memoryview, seconds: float) -> int:
    value = view[0]
    print("ready", flush=True)
    returns = 0
    cpu0, start = time.process_time(), time.monotonic()
    deadline = start + seconds
    # A wait may return early (a spurious wake-up); wait again for what is left, as callers do.
    while view[0] == value and (left := deadline - time.monotonic()) > 0:
        w.wait(value, left)
        returns += 1
    cpu, took = time.process_time() - cpu0, time.monotonic() - start
    print("idle", returns, f"{took:.6f}", f"{cpu:.6f}", flush=True)
    return 0


# -- the suite ----------------------------------------------------------------------------------

CHECKS: List[Check] = [
    Check("returns_at_once", check_returns_at_once, "wait returns True at once when the word already differs"),
    Check("times_out", check_times_out, "wait returns False when its timeout passes with nothing changed"),
    Check("zero_timeout", check_zero_timeout, "a zero timeout does not sleep"),
    Check("wake_without_waiters", check_wake_without_waiters, "wake and wake_with with nobody waiting are harmless"),
    Check(
        "signal_keeps_timeout",
        check_signal_keeps_timeout,
        "a signal whose handler returns does not shorten a timed wait",
    ),
    Check("raising_handler_ends_wait", check_raising_handler_ends_wait, "a raising signal handler ends wait(None)"),
    Check("in_process_wake", check_in_process_wake, "200 wakes of a thread waiting in this process"),
    Check("futex_words", check_futex_words, "futex_words is true: raw futex waits and wakes meet the backend's"),
    Check("multi_wait_times_out", check_multi_wait_times_out, "a multi-word wait honours its timeout"),
    Check("can_wait_many", check_can_wait_many, "can_wait_many() tells the truth about the kernel"),
    Check("ring", check_ring, "a ring's waits complete on a wake of one of their words, and only then"),
    Check("cross_process_wake", check_cross_process_wake, "300 wakes of another process on a read-only mapping"),
    Check("many_waiters", check_many_waiters, "one wake wakes all of 8 waiting processes"),
    Check("multi_wait_any", check_multi_wait_any, "a multi-word wait returns for whichever word changed"),
    Check("wake_with", check_wake_with, "wake_with wakes both words' waiters and leaves the second word as it was"),
    Check("idle_wait_uses_no_cpu", check_idle_wait_uses_no_cpu, "a one-second wait with nothing changing uses no CPU"),
    Check("feed_round_trip", check_feed_round_trip, "500 changes from a publisher to a subscriber process, once each"),
]


def check_names() -> List[str]:
    return [c.name for c in CHECKS]


def _results(backends: Sequence[Backend], checks: Sequence[Check]) -> Iterator[Tuple[Check, Backend, str, float, str]]:
    """(check, backend, "PASS" | "FAIL" | "SKIP", seconds, note or reason) for each in turn."""
    for b in backends:
        for check in checks:
            start = time.monotonic()
            try:
                note = check.func(b) or ""
                status = "PASS"
            except Skip as exc:
                status, note = "SKIP", exc.reason
            except AssertionError as exc:
                status, note = "FAIL", str(exc) or "assertion failed"
            except Exception as exc:
                status, note = "FAIL", f"{type(exc).__name__}: {exc}"
            yield check, b, status, time.monotonic() - start, note


def run(
    backends: Optional[Sequence[BackendLike]] = None,
    out: Optional[TextIO] = None,
    only: Optional[str] = None,
    extra: Sequence[Check] = (),
) -> int:
    """Run every check, and the ``extra`` ones after them (or only the one named ``only``),
    against every backend given, by name or as an object (default: every backend that works
    here), printing one line per check and a summary to ``out`` (default: ``sys.stdout``).
    Returns 0 when nothing failed, 1 otherwise.

    Raises ``UnsupportedPlatform`` for a backend name that is unknown or does not work here, and
    ``InvalidInput`` for an unknown check name, before running anything."""
    from .. import __version__

    if not __debug__:
        raise UnsupportedPlatform(
            "the checks are assert statements, which python -O (or PYTHONOPTIMIZE) removes: run without it"
        )
    stream: TextIO = sys.stdout if out is None else out
    works = available()
    chosen = [_resolve(b) for b in (backends if backends is not None else [n for n, ok in works.items() if ok])]
    checks = [*CHECKS, *(c for c in extra if c not in CHECKS)]
    if only is not None:
        names = [c.name for c in checks]
        checks = [c for c in checks if c.name == only]
        if not checks:
            raise InvalidInput(f"unknown check {only!r}; expected one of {names}")

    def say(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    say(
        f"pricefeed {__version__} wait-backend conformance on {platform.system()} {platform.release()} "
        f"{platform.machine()}, Python {platform.python_version()}"
    )
    idle = sorted(n for n, ok in works.items() if not ok)
    say(f"backends: {', '.join(b.name for b in chosen)}" + (f" (not usable here: {', '.join(idle)})" if idle else ""))
    width = max(len(c.name) for c in checks)
    bwidth = max(len(b.name) for b in chosen) if chosen else 0
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    failed: List[str] = []
    start = time.monotonic()
    for check, b, status, took, note in _results(chosen, checks):
        counts[status] += 1
        head = f"{status}  {check.name:<{width}}  {b.name:<{bwidth}}"
        first, *rest = note.splitlines() or [""]
        timing = " " * 10 if status == "SKIP" else f"  {took:6.2f} s"  # reasons line up with notes
        say(f"{head}{timing}  {first}".rstrip())
        for more in rest:
            say("      " + more)
        if status == "FAIL":
            failed.append(f"{check.name}[{b.name}]")
    total = sum(counts.values())
    tally = f"{counts['PASS']} passed, {counts['SKIP']} skipped, {counts['FAIL']} failed"
    say(f"{total} check{'' if total == 1 else 's'}: {tally} in {time.monotonic() - start:.1f} s")
    if failed:
        say("FAILED: " + ", ".join(failed))
        return 1
    return 0
