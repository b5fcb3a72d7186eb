"""Damaged and foreign segments: thousands of fuzzed segments at rest, a segment damaged while
it is live, and things in the shared-memory directory that only carry a feed's name.

Every open and read must end in valid values or a PricefeedError saying what was found: never
another exception, a hang (a watchdog turns one into a failure), or a read out of range."""

from __future__ import annotations

import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

if sys.platform != "win32":
    import posix_ipc  # POSIX shared memory: the tests that use it are marked posix_only
from _workers import feed_reader
from conftest import Proc, cli, unique_name, unlink_feed, worker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricefeed import BadSegment, PricefeedError, Publisher, Quote, Subscriber
from pricefeed import _protocol as protocol
from pricefeed._protocol import layout as L
from pricefeed._segment import segment_name, segment_path
from pricefeed._values import quote_type

CAPACITY, RING = 8, 16


#: Every test here runs on each implementation of the protocol (see the impl fixture).
pytestmark = [
    pytest.mark.usefixtures("impl"),
    pytest.mark.skipif(
        sys.platform == "win32",
        reason="POSIX-specific: builds damaged segments with posix_ipc and bounds reads with SIGALRM",
    ),
]


@pytest.fixture(autouse=True)
def short_creation_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment whose version reads 0 is given a second to finish being created; fuzzing
    produces thousands of them, so wait 10 ms instead (the behaviour is the same)."""
    from pricefeed._segment import attach as _attach

    monkeypatch.setattr(_attach, "INIT_WAIT_SECONDS", 0.01)


@pytest.fixture(scope="module")
def image() -> Iterator[bytes]:
    """The bytes of a real, busy feed: 6 symbols, the ring wrapped several times."""
    name = unique_name()
    try:
        with Publisher.create(name, capacity=CAPACITY, ring_size=RING) as pub:
            for i in range(70):
                pub.publish(f"SYM{i % 6}", float(i) + 0.25)
        with open(segment_path(name), "rb") as f:
            yield f.read()
    finally:
        unlink_feed(name)


class Hang(Exception):
    pass


def _watchdog(*_: object) -> None:
    raise Hang("an open or read did not finish within 5 s")


def _follow_from(name: str, symbols: List[str], cursor: int) -> Iterator[object]:
    """The protocol's follow loop over the feed from ``cursor`` (far behind the head), never
    waiting: its quotes, and the codes that stop it (the caller bounds how many it takes)."""
    with feed_reader(name) as r:
        f = protocol.implementation().Follow(
            r, symbols, len(symbols), None, quote_type(r.geometry.fields), None, cursor, r.publisher_epoch(), 0.0, 0.0, -1.0,
            lambda *_: 0, False,
        )  # fmt: skip
        f.block = False
        yield from f


def _exercise(name: str) -> None:
    """Every read path a subscriber has, then a publisher taking the feed over."""
    try:
        with Subscriber(name) as sub:
            for symbol in sub.symbols():
                q = sub.get(symbol)
                assert q is not None and _finite(q)
            assert all(_finite(q) for q in sub.snapshot().values())
            sub.status()
            head = sub.head
            # Read the ring from well behind the head, and from the start with a snapshot.
            for it in (
                _follow_from(name, sub.symbols(), max(0, head - RING - 3)),
                sub.updates(timeout=0, snapshot=True),
                sub.updates(timeout=0, conflate=True, snapshot=True),
            ):
                try:
                    for n, ev in enumerate(it):
                        if isinstance(ev, Quote):
                            assert _finite(ev) and ev.seq <= max(head, sub.head)
                        if n > 4 * RING:
                            break
                except TimeoutError:
                    pass
    except PricefeedError:
        pass
    try:
        with Publisher.open(name) as pub:
            pub.publish("NEWSYM", 1.0)
            pub.publish_many({"SYM0": 99.5, "SYM1": 98.5})
    except PricefeedError:
        pass


def _run_on(data: bytes, name: str) -> None:
    shm = posix_ipc.SharedMemory(segment_name(name), posix_ipc.O_CREX, mode=0o600)
    try:
        os.write(shm.fd, data)
    finally:
        shm.close_fd()
    old = signal.signal(signal.SIGALRM, _watchdog)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        _exercise(name)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        unlink_feed(name)


SPECIAL_WORDS = [struct.pack("<d", v) for v in (math.nan, math.inf, -math.inf, -0.0, 1e308)] + [
    struct.pack("<Q", v) for v in (0, 1, 3, 2**32 - 1, 2**32, 2**63, 2**63 + 1, 2**64 - 1)
]
SIZE = L.segment_size(CAPACITY, RING)

# Random bytes anywhere, and the values that matter written over whole aligned words.
EDIT = st.one_of(
    st.tuples(st.integers(0, SIZE - 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.integers(0, SIZE // 8 - 1).map(lambda i: 8 * i), st.sampled_from(SPECIAL_WORDS)),
    st.tuples(st.integers(0, SIZE // 4 - 1).map(lambda i: 4 * i), st.sampled_from([w[:4] for w in SPECIAL_WORDS])),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(EDIT, min_size=1, max_size=8))
def test_fuzzed_segments_at_rest(image: bytes, edits: list) -> None:
    data = bytearray(image)
    for offset, chunk in edits:
        data[offset : offset + len(chunk)] = chunk
    _run_on(bytes(data[: len(image)]), unique_name())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 3 * L.segment_size(CAPACITY, RING)), fill=st.sampled_from([b"\0", b"\xff", b"image"]))
def test_truncated_and_oversized_segments(image: bytes, size: int, fill: bytes) -> None:
    data = image[:size] if fill == b"image" else (image + fill * size)[:size]
    _run_on(data, unique_name())


def test_the_untouched_image_reads_back(image: bytes) -> None:
    name = unique_name()
    shm = posix_ipc.SharedMemory(segment_name(name), posix_ipc.O_CREX, mode=0o600)
    os.write(shm.fd, image)
    shm.close_fd()
    try:
        with Subscriber(name) as sub:
            assert sub.head == 70 and len(sub.symbols()) == 6 and sub["SYM3"].price == 69.25
    finally:
        unlink_feed(name)


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink", "text file"])
def test_things_that_only_carry_the_feeds_name(feed: str, kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = segment_path(feed)
    made = {"directory": lambda: os.mkdir(path), "fifo": lambda: os.mkfifo(path),
            "symlink": lambda: os.symlink(tmp_path / "target", path),
            "text file": lambda: Path(path).write_text("hello, I am not a feed\n" * 20)}  # fmt: skip
    made[kind]()
    try:
        for args in (["get", feed, "A"], ["subscribe", feed], ["status", feed], ["publish", feed, "A=1"]):
            p = subprocess.run(cli(*args), capture_output=True, text=True, timeout=30)
            assert p.returncode == 9, (kind, args, p.returncode, p.stderr)
            assert "not a pricefeed segment" in p.stderr, p.stderr
            assert "Traceback" not in p.stderr
        listing = subprocess.run(cli("ls"), capture_output=True, text=True, timeout=30)
        assert listing.returncode == 0 and f"{feed}" in listing.stdout and "unreadable" in listing.stdout
    finally:
        if kind == "directory":
            os.rmdir(path)
        else:
            os.unlink(path)


def test_a_live_segment_damaged_under_its_readers(feed: str, procs: List[Proc]) -> None:
    """A publisher publishes at full rate while random words of its segment are overwritten;
    CLI subscribers either carry on or stop with a clear error, and readers in this process
    get values or PricefeedError, within the watchdog's time."""
    import mmap
    import random

    rng = random.Random(4)
    Publisher.create(feed, capacity=CAPACITY, ring_size=RING).close()
    pub = Proc(worker("churn_publish", feed, 1))
    procs.append(pub)
    pub.json_line(timeout=30)
    subs = [Proc(cli("subscribe", feed, "--json", "--timeout", "3")) for _ in range(3)]
    procs.extend(subs)
    size = L.segment_size(CAPACITY, RING)
    other_errors: List[str] = []
    damage_seen = 0
    with open(segment_path(feed), "r+b") as f:
        mm = mmap.mmap(f.fileno(), size)
    try:
        old = signal.signal(signal.SIGALRM, _watchdog)
        try:
            for _ in range(300):
                offset = rng.randrange(0, size - 8)
                mm[offset : offset + 8] = rng.randbytes(8) if hasattr(rng, "randbytes") else os.urandom(8)
                signal.setitimer(signal.ITIMER_REAL, 5.0)
                try:
                    with Subscriber(feed) as sub:
                        sub.snapshot()
                        sub.get("S1")
                except BadSegment:
                    damage_seen += 1
                except PricefeedError as exc:
                    other_errors.append(f"{type(exc).__name__}: {exc}")
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                time.sleep(0.002)
        finally:
            signal.signal(signal.SIGALRM, old)
    finally:
        mm.close()
        pub.kill()
    for s in subs:
        code, _, err = s.finish(timeout=30)
        assert code in (0, 9, 12), (code, err)
        assert "Traceback" not in err, err
    # Damage is reported as damage (BadSegment and its subclasses), never as another error.
    assert not other_errors, (damage_seen, other_errors[:5])


def _finite(q: Quote) -> bool:
    """Every field of the quote is a finite number (the schema itself may be a fuzzed one)."""
    return all(math.isfinite(v) for v in q.fields.values())
