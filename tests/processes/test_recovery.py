"""What a publisher finds when it takes a feed over, and what an interrupted call leaves.

The crash states are made by writing the segment's bytes directly, exactly as a publisher that
died at that instant would have left them (the SIGKILL fault-injection suite drives the same
states with real kills)."""

from __future__ import annotations

import gc
import math
import os
import sys
import threading
import time

import pytest
from conftest import linux_only, mappings_of, open_fds, peek, poke, posix_only, slot_at

from pricefeed import BadSegment, Publisher, PublisherRestarted, Subscriber
from pricefeed._protocol import layout as L
from pricefeed._segment import segment_name, segment_path

#: Every test here runs on each implementation of the protocol (see the impl fixture).
pytestmark = pytest.mark.usefixtures("impl")


def path(feed: str) -> str:
    return segment_path(feed)


def test_odd_lock_with_the_published_price_is_put_back_silently(feed: str) -> None:
    with Publisher.create(feed, ring_size=16) as pub:
        pub.publish_many({"A": 1.0, "B": 2.0})
    # Died right after making A's lock odd: nothing else written.
    (lock,) = peek(feed, slot_at(feed, 0, L.SLOT_LOCK), "Q")
    poke(feed, slot_at(feed, 0, L.SLOT_LOCK), "Q", lock + 1)
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=0.2)
        with Publisher.open(feed) as pub:
            assert pub.head == 2
            assert pub.publish("A", 1.0) is False, "A is still 1.0"
        assert peek(feed, slot_at(feed, 0, L.SLOT_LOCK), "Q")[0] % 2 == 0
        assert sub["A"].price == 1.0 and sub["A"].seq == 1
        assert isinstance(next(it), PublisherRestarted)
        with pytest.raises(TimeoutError):
            next(it)  # and no change for a repair that changed nothing


def test_odd_lock_with_a_new_price_is_published_as_a_change(feed: str) -> None:
    with Publisher.create(feed, ring_size=16) as pub:
        pub.publish_many({"A": 1.0, "B": 2.0})
    # Died inside A's write: lock odd, the new price stored, time and seq not yet.
    (lock,) = peek(feed, slot_at(feed, 0, L.SLOT_LOCK), "Q")
    poke(feed, slot_at(feed, 0, L.SLOT_LOCK), "Q", lock + 1)
    poke(feed, slot_at(feed, 0, L.SLOT_VALUES), "d", 1.5)
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=5)
        with Publisher.open(feed) as pub:
            assert pub.head == 3
            assert pub.publish("A", 1.5) is False
            pub.publish("B", 2.5)
        restarted = next(it)
        assert isinstance(restarted, PublisherRestarted) and restarted.pid == os.getpid()
        assert [(q.symbol, q.price, q.seq) for q in [next(it), next(it)]] == [("A", 1.5, 3), ("B", 2.5, 4)]


def test_a_change_written_but_never_announced_does_not_reuse_its_number(feed: str) -> None:
    with Publisher.create(feed, ring_size=16) as pub:
        pub.publish_many({"A": 1.0, "B": 2.0})
    # Died after writing A=5.0 as change 3 (slot complete, lock even) but before moving the head.
    poke(feed, slot_at(feed, 0, L.SLOT_SEQ), "QQI4xd", 3, 123, 1, 5.0)
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=5)
        with Publisher.open(feed) as pub:
            assert pub.head == 3
            pub.publish("B", 7.0)
        assert isinstance(next(it), PublisherRestarted)
        got = [next(it), next(it)]
        assert [(q.symbol, q.price, q.seq) for q in got] == [("A", 5.0, 3), ("B", 7.0, 4)]
        assert sub["A"].seq == 3 and sub["B"].seq == 4


def test_a_half_added_symbol_leaves_no_trace(feed: str) -> None:
    with Publisher.create(feed, ring_size=16) as pub:
        pub.publish("A", 1.0)
    # Died while adding a second symbol: its slot named and odd, slot_count not yet moved.
    poke(feed, slot_at(feed, 1, L.SLOT_LOCK), "QQQI4xd", 1, 2, 9, 1, 9.0)
    poke(feed, L.symbol_offset(1), "8s", b"GHOST\0\0\0")
    with Publisher.open(feed) as pub:
        assert pub.symbols == ["A"] and pub.head == 1
        pub.publish("C", 3.0)
    assert peek(feed, slot_at(feed, 1, L.SLOT_LOCK), "Q")[0] % 2 == 0
    with Subscriber(feed) as sub:
        assert sub.symbols() == ["A", "C"] and sub["C"].price == 3.0 and sub["C"].seq == 2


class _Hit(BaseException):
    """Stands for an asynchronous exception such as KeyboardInterrupt."""


def _raise_at_line(k: int) -> list[int]:
    """Trace the publisher and protocol modules; raise _Hit at the k-th line they execute."""
    count = [0]

    def local(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "line":
            count[0] += 1
            if count[0] == k:
                raise _Hit
        return local

    def global_(frame, event, arg):  # type: ignore[no-untyped-def]
        if frame.f_code.co_filename.endswith(("_roles/publisher.py", "_protocol/writer.py", "_protocol/reader.py")):
            return local
        return None

    sys.settrace(global_)
    return count


def _ops(pub: Publisher, round_: int) -> None:
    pub.publish(f"N{round_}", 1.0)  # a new symbol
    pub.publish("A", float(round_))  # an existing one
    pub.publish_many([(f"M{round_}", 2.0), ("A", float(round_) + 0.5), ("B", float(round_))])


@pytest.mark.skipif(
    sys.platform == "win32",
    reason="under Wine 8, 300 open()/close() pairs of one file left 5,070 fewer free C-runtime descriptors "
    "(measured); this test opens the feed file thousands of times",
)
def test_an_interruption_anywhere_in_a_publish_leaves_publisher_and_feed_in_step(feed: str) -> None:
    """Interrupt publish() and publish_many() at every line they execute, one line per round:
    afterwards the publisher's own view, the feed and a subscriber must still agree, every
    slot must be consistent, and later changes must flow with no number used twice."""
    with Publisher.create(feed, capacity=8192, ring_size=1024) as pub, Subscriber(feed) as sub:
        it = sub.updates(timeout=5)
        pub.publish_many({"A": -1.0, "B": -1.0})
        count = _raise_at_line(0)
        try:
            _ops(pub, 0)
        finally:
            sys.settrace(None)
        lines = count[0]
        assert lines > 50
        hits = 0
        for k in range(1, lines + 1):
            _raise_at_line(k)
            try:
                _ops(pub, k)
            except _Hit:
                hits += 1
            finally:
                sys.settrace(None)
            assert pub.head == sub.head, k
            assert sorted(pub.symbols) == sorted(sub.symbols()), k
            for i in range(len(pub.symbols)):
                assert peek(feed, slot_at(feed, i, L.SLOT_LOCK), "Q")[0] % 2 == 0, f"slot {i} left odd (line {k})"
            for sym, q in sub.snapshot().items():
                assert q.seq <= pub.head
                assert pub.publish(sym, q.price) is False, f"publisher and feed disagree on {sym} (line {k})"
            _ops(pub, -k)  # and the next calls work
        assert hits == lines
        pub.end()
        seqs = [ev.seq for ev in it if not hasattr(ev, "missed")]
        assert seqs == sorted(set(seqs)) and seqs[-1] == pub.head


def test_duplicate_symbols_in_the_table_are_reported(feed: str) -> None:
    with Publisher.create(feed) as pub:
        pub.publish_many({"A": 1.0, "B": 2.0})
    poke(feed, L.symbol_offset(1), "2s", b"A\0")
    with pytest.raises(BadSegment, match=r"symbol 'A' is in slots 0 and 1"):
        Subscriber(feed).symbols()
    with pytest.raises(BadSegment):
        Publisher.open(feed)


def test_a_ring_record_naming_an_uncounted_slot_is_reported(feed: str) -> None:
    with Publisher.create(feed, ring_size=16) as pub, Subscriber(feed) as sub:
        it = sub.updates(timeout=5)
        pub.publish("A", 1.0)
        ring = pub.geometry.ring_offset
        poke(feed, ring + 1 * pub.geometry.record_size + L.REC_SLOT, "I", 5)
        with pytest.raises(BadSegment, match="change 1 names slot 5, but only 1 slots hold a symbol"):
            next(it)


def test_a_longer_segment_of_odd_size_is_accepted(feed: str) -> None:
    with Publisher.create(feed, capacity=4, ring_size=8) as pub:
        pub.publish("A", 1.0)
    os.truncate(path(feed), L.segment_size(4, 8) + 13)
    with Subscriber(feed) as sub:
        assert sub["A"].price == 1.0


@posix_only
def test_a_segment_still_being_created_is_waited_for(feed: str) -> None:
    """A subscriber that opens a feed between its creator's shm_open and its header being
    written waits (up to a second) instead of calling it damaged."""
    import posix_ipc

    from pricefeed._protocol.header import initialise

    posix_ipc.SharedMemory(segment_name(feed), posix_ipc.O_CREX, mode=0o600).close_fd()

    def creator_finishes() -> None:
        time.sleep(0.2)
        image = bytearray(L.segment_size(4, 8))
        initialise(memoryview(image), 4, 8, 77, 1)
        with open(path(feed), "r+b") as f:
            f.write(image)

    t = threading.Thread(target=creator_finishes)
    t.start()
    try:
        with Subscriber(feed) as sub:  # a 0-byte segment, then a sized one
            assert sub.geometry.incarnation == 77
    finally:
        t.join(timeout=10)


@posix_only
def test_a_segment_never_finished_is_reported_after_a_second(feed: str) -> None:
    import posix_ipc

    posix_ipc.SharedMemory(segment_name(feed), posix_ipc.O_CREX, mode=0o600).close_fd()
    start = time.monotonic()
    with pytest.raises(BadSegment, match="0 bytes, smaller than the 256-byte header"):
        Subscriber(feed)
    assert time.monotonic() - start >= 0.9, "an empty segment is given its creator's second"


@linux_only
def test_dropped_objects_release_descriptors_mappings_and_the_lock(feed: str) -> None:
    Publisher.create(feed).close()
    gc.collect()
    fds = open_fds()
    with pytest.warns(ResourceWarning):
        for _ in range(50):
            Subscriber(feed).get("A")
        gc.collect()
    assert (open_fds(), mappings_of(feed)) == (fds, 0)
    with pytest.warns(ResourceWarning):
        Publisher.open(feed).publish("A", 1.0)
        gc.collect()
    Publisher.open(feed).close()  # the dropped publisher's lock is gone
    assert (open_fds(), mappings_of(feed)) == (fds, 0)


def test_infinite_timeout_means_forever(feed: str) -> None:
    with Publisher.create(feed) as pub, Subscriber(feed) as sub:
        it = sub.updates(timeout=math.inf)
        t = threading.Timer(0.1, pub.publish, args=("A", 1.0))
        t.start()
        try:
            assert next(it).price == 1.0
        finally:
            t.join(timeout=10)


def test_a_publisher_that_fails_while_starting_leaves_no_lock_behind(
    feed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error halfway through building the wake words (Ctrl-C, a refused kernel object) must
    reach the caller as itself, and leave the feed free for the next publisher."""
    from pricefeed._segment import Segment
    from pricefeed._wait import waker

    Publisher.create(feed).close()
    backend = waker()  # what a publisher wakes with: the wait contract's word() is what fails
    real = type(backend).word
    calls = [0]

    def failing(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 50:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(backend), "word", failing)
    with pytest.raises(KeyboardInterrupt):
        Publisher.open(feed)
    monkeypatch.undo()
    seg = Segment.open(feed, writable=False)
    try:
        assert seg.holder_pid() is None, "the failed publisher still holds the lock"
    finally:
        seg.close()
    with Publisher.open(feed) as pub:
        assert pub.publish("A", 1.0)
