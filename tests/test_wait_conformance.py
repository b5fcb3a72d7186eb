"""One conformance suite, run against every wait backend this machine can use.

The contract is in pricefeed/_wait/__init__.py. Each test uses a real shared-memory segment;
the cross-process tests wait on a read-only mapping, as subscribers do.
"""

from __future__ import annotations

import signal
import sys
import textwrap
import time
from typing import Iterator, List, Tuple

import pytest
from conftest import Proc, blocked_in_futex, unique_name, wait_until

from pricefeed._segment import Segment
from pricefeed._wait import available, select

BACKENDS = [name for name, ok in available().items() if ok]
OFFSET = 128  # any aligned word will do; keep it off offset 0 to catch address mistakes


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def word(backend: str) -> Iterator[Tuple[Segment, object, memoryview]]:
    name = unique_name()
    seg = Segment.create(name, 4096, 0o600)
    view = seg.view[OFFSET : OFFSET + 4].cast("I")
    try:
        yield seg, select(backend).word(seg.address + OFFSET, view), view
    finally:
        view.release()
        seg.close()
        seg.unlink()


def test_futex_backend_is_available_on_linux() -> None:
    if sys.platform.startswith("linux"):
        assert available()["futex"], "the futex backend should work on Linux"
    assert available()["polling"]


def test_returns_at_once_when_the_word_differs(word) -> None:  # type: ignore[no-untyped-def]
    _, w, view = word
    view[0] = 5
    start = time.monotonic()
    assert w.wait(4, 10.0) is True
    assert time.monotonic() - start < 5.0


def test_times_out_when_nothing_happens(word) -> None:  # type: ignore[no-untyped-def]
    _, w, view = word
    view[0] = 7
    start = time.monotonic()
    assert w.wait(7, 0.2) is False
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 5.0


def test_zero_timeout_does_not_sleep(word) -> None:  # type: ignore[no-untyped-def]
    _, w, view = word
    assert w.wait(view[0], 0) is False


def test_wake_with_no_waiter_is_harmless(word) -> None:  # type: ignore[no-untyped-def]
    _, w, _ = word
    for _ in range(1000):
        w.wake()


def test_a_signal_does_not_shorten_the_timeout(word) -> None:  # type: ignore[no-untyped-def]
    _, w, view = word
    hits: List[int] = []
    old = signal.signal(signal.SIGALRM, lambda *_: hits.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
        start = time.monotonic()
        assert w.wait(view[0], 0.3) is False
        elapsed = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(hits) >= 3, "the timer should have interrupted the wait several times"
    assert 0.29 <= elapsed < 5.0


class _Stop(Exception):
    pass


def _raise_stop(*_: object) -> None:
    raise _Stop


def test_a_raising_signal_handler_ends_an_unbounded_wait(word) -> None:  # type: ignore[no-untyped-def]
    """This is how Ctrl-C (KeyboardInterrupt) stops a blocked subscriber."""
    _, w, view = word
    old = signal.signal(signal.SIGALRM, _raise_stop)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        start = time.monotonic()
        with pytest.raises(_Stop):
            w.wait(view[0], None)
        assert time.monotonic() - start < 5.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_WAITER = textwrap.dedent(
    """
    import sys
    from pricefeed._segment import Segment
    from pricefeed._wait import select
    name, backend, offset, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    seg = Segment.open(name, writable=False)
    seg.map(seg.size)
    view = seg.view[offset : offset + 4].cast("I")
    w = select(backend).word(seg.address + offset, view)
    seen = view[0]
    print("ready", seen, flush=True)
    for _ in range(rounds):
        while view[0] == seen:
            if not w.wait(seen, 30.0):
                print("timeout", flush=True)
                sys.exit(1)
        seen = view[0]
        print(seen, flush=True)
    """
)


def test_cross_process_wake_on_a_read_only_mapping(word, backend: str, procs: List[Proc]) -> None:  # type: ignore[no-untyped-def]
    """300 rounds of store-then-wake against a waiter in another process that mapped the word
    read-only; a lost wake-up hangs the waiter and fails the round's timeout."""
    seg, w, view = word
    rounds = 300
    p = Proc([sys.executable, "-c", _WAITER, seg.feed, backend, str(OFFSET), str(rounds)])
    procs.append(p)
    assert p.readline() == "ready 0"
    for i in range(1, rounds + 1):
        view[0] = i
        w.wake()
        assert p.readline(timeout=30) == str(i)
    code, _, err = p.finish(timeout=30)
    assert code == 0, err


def test_many_waiters_all_wake(word, backend: str, procs: List[Proc]) -> None:  # type: ignore[no-untyped-def]
    seg, w, view = word
    waiters = [Proc([sys.executable, "-c", _WAITER, seg.feed, backend, str(OFFSET), "1"]) for _ in range(8)]
    procs.extend(waiters)
    for p in waiters:
        assert p.readline(timeout=60) == "ready 0"
    if backend == "futex":
        wait_until(lambda: all(blocked_in_futex(p.pid) for p in waiters), 30, "waiters to block")
    view[0] = 1
    w.wake()
    for p in waiters:
        assert p.readline(timeout=30) == "1"
        assert p.finish(timeout=30)[0] == 0


def test_backend_selection() -> None:
    from pricefeed import UnsupportedPlatform

    assert select("polling").name == "polling"
    assert select().name == BACKENDS[0]
    with pytest.raises(UnsupportedPlatform, match=r"unknown wait backend 'nope'; expected one of"):
        select("nope")


_MULTI_WAITER = textwrap.dedent(
    """
    import sys
    from pricefeed._segment import Segment
    from pricefeed._wait import select
    name, backend, offsets, rounds = sys.argv[1], sys.argv[2], [int(o) for o in sys.argv[3].split(",")], int(sys.argv[4])
    seg = Segment.open(name, writable=False)
    seg.map(seg.size)
    b = select(backend)
    views = [seg.view[o : o + 4].cast("I") for o in offsets]
    multi = b.multi([b.word(seg.address + o, v) for o, v in zip(offsets, views)])
    seen = [v[0] for v in views]
    print("ready", flush=True)
    for _ in range(rounds):
        while [v[0] for v in views] == seen:
            if not multi.wait(seen, 30.0):
                print("timeout", flush=True)
                sys.exit(1)
        now = [v[0] for v in views]
        print(",".join(str(i) for i, (a, c) in enumerate(zip(seen, now)) if a != c), flush=True)
        seen = now
    """
)


def test_many_words_are_waited_on_where_it_matters(backend: str) -> None:
    if backend == "futex" and sys.platform.startswith("linux"):
        import platform

        major, minor = (int(x) for x in platform.release().split(".")[:2])
        assert select(backend).can_wait_many() == ((major, minor) >= (5, 16))


def test_a_multi_wait_returns_for_any_of_its_words(word, backend: str, procs: List[Proc]) -> None:  # type: ignore[no-untyped-def]
    """200 rounds: the waiter (another process, read-only mapping) sleeps on three words and
    must come back for whichever one changes, and not before."""
    import random

    if not select(backend).can_wait_many():
        pytest.skip("no multi-word wait on this kernel (Linux < 5.16)")
    seg, _, _ = word
    offsets = [OFFSET + 4, OFFSET + 64, OFFSET + 1024]
    views = [seg.view[o : o + 4].cast("I") for o in offsets]
    words = [select(backend).word(seg.address + o, v) for o, v in zip(offsets, views)]
    p = Proc([sys.executable, "-c", _MULTI_WAITER, seg.feed, backend, ",".join(map(str, offsets)), "200"])
    procs.append(p)
    try:
        assert p.readline() == "ready"
        rng = random.Random(1)
        for _ in range(200):
            k = rng.randrange(3)
            views[k][0] = (views[k][0] + 1) & 0xFFFFFFFF
            words[k].wake()
            assert p.readline(timeout=30) == str(k)
        assert p.finish(timeout=30)[0] == 0
    finally:
        for v in views:
            v.release()


def test_a_multi_wait_times_out(word, backend: str) -> None:  # type: ignore[no-untyped-def]
    _, w, view = word
    b = select(backend)
    if not b.can_wait_many():
        pytest.skip("no multi-word wait on this kernel (Linux < 5.16)")
    multi = b.multi([w])
    start = time.monotonic()
    assert multi.wait([view[0]], 0.2) is False
    assert 0.19 <= time.monotonic() - start < 5.0
    assert multi.wait([view[0] + 1], 5.0) is True  # differs already: at once


def test_wake_with_wakes_the_waiters_of_both_words(word, backend: str, procs: List[Proc]) -> None:  # type: ignore[no-untyped-def]
    """One call wakes a waiter of each word; the second word keeps its value (below 2**31)."""
    seg, w, view = word
    other_off = OFFSET + 256
    other_view = seg.view[other_off : other_off + 4].cast("I")
    other = select(backend).word(seg.address + other_off, other_view)
    try:
        other_view[0] = 0x7FFFFFF0
        a = Proc([sys.executable, "-c", _WAITER, seg.feed, backend, str(OFFSET), "1"])
        b = Proc([sys.executable, "-c", _WAITER, seg.feed, backend, str(other_off), "1"])
        procs.extend([a, b])
        assert a.readline() == "ready 0" and b.readline() == f"ready {0x7FFFFFF0}"
        if backend == "futex":
            wait_until(lambda: blocked_in_futex(a.pid) and blocked_in_futex(b.pid), 30, "waiters to block")
        view[0] = 1
        other_view[0] = 0x7FFFFFF1
        w.wake_with(other)
        assert a.readline(timeout=30) == "1" and b.readline(timeout=30) == str(0x7FFFFFF1)
        assert other_view[0] == 0x7FFFFFF1, "the kernel's no-op must leave the word as it was"
    finally:
        other_view.release()
