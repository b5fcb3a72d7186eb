"""The embedded library: Publisher and Subscriber on real shared memory."""

from __future__ import annotations

import math
import os
import re
import sys
import time
from decimal import Decimal
from fractions import Fraction
from typing import List

import pytest

if sys.platform != "win32":
    import posix_ipc  # POSIX shared memory: the tests that use it are marked posix_only
from _workers import feed_reader
from conftest import Proc, linux_only, posix_only, unlink_feed, worker

from pricefeed import (
    BadSegment,
    FeedBusy,
    FeedEnded,
    FeedExists,
    FeedFull,
    FeedNotFound,
    Gap,
    InvalidGeometry,
    InvalidInput,
    InvalidName,
    InvalidPrice,
    InvalidSymbol,
    LayoutVersionMismatch,
    PricefeedError,
    Publisher,
    Quote,
    Subscriber,
    SymbolNotFound,
    Timeout,
    remove,
)
from pricefeed._protocol import layout as L
from pricefeed._segment import segment_name, segment_path
from pricefeed._segment.attach import attach

#: Every test here runs on each implementation of the protocol (see the impl fixture).
pytestmark = pytest.mark.usefixtures("impl")


def state(feed: str) -> tuple:
    """Everything a subscriber can observe, to prove that bad input changed nothing."""
    with Subscriber(feed) as sub, feed_reader(feed) as r:
        return sub.head, sub.snapshot(), sub.symbols(), r.futex_value(), r.slot_count()


def test_publish_reports_changes_only(feed: str) -> None:
    with Publisher.create(feed) as pub:
        assert pub.publish("AAPL", 187.5) is True
        assert pub.publish("AAPL", 187.5) is False
        assert pub.publish("AAPL", 188.0) is True
        assert pub.publish("AAPL", 188) is False  # 188 == 188.0
        assert pub.publish("Z", 0.0) is True
        assert pub.publish("Z", -0.0) is False
        assert pub.head == 3
        with Subscriber(feed) as sub:
            assert sub["AAPL"].price == 188.0 and sub["AAPL"].seq == 2
            assert sub.get("Z") == Quote("Z", 0.0, sub["Z"].time_ns, 3)


def test_price_types(feed: str) -> None:
    with Publisher.create(feed) as pub:
        for i, price in enumerate([1, 2.5, Decimal("3.25"), Fraction(7, 2)]):
            pub.publish(f"S{i}", price)  # type: ignore[arg-type]
        with Subscriber(feed) as sub:
            assert [q.price for q in sub.snapshot().values()] == [1.0, 2.5, 3.25, 3.5]


def test_publish_many_is_one_wake_and_counts_changes(feed: str) -> None:
    with Publisher.create(feed) as pub, Subscriber(feed) as sub, feed_reader(feed) as r:
        before = r.futex_value()
        assert pub.publish_many([("A", 1.0), ("B", 2.0), ("A", 1.0), ("A", 3.0)]) == 3
        assert r.futex_value() == before + 1
        assert pub.publish_many({"A": 3.0, "B": 2.0}) == 0
        assert r.futex_value() == before + 1, "a batch of repeats wakes nobody"
        assert pub.publish_many([]) == 0
        assert sub.head == 3
        assert [(q.symbol, q.price, q.seq) for q in sub.snapshot().values()] == [("A", 3.0, 3), ("B", 2.0, 2)]


def test_explicit_time(feed: str) -> None:
    with Publisher.create(feed) as pub, Subscriber(feed) as sub:
        pub.publish("A", 1.0, time_ns=123)
        assert sub["A"].time_ns == 123
        now = time.time_ns()
        pub.publish("A", 2.0)
        assert abs(sub["A"].time_ns - now) < 60e9


BAD_PRICES = [math.nan, math.inf, -math.inf, "1.5", None, True, b"1", 10**400, [1.0]]
BAD_SYMBOLS = ["", "A" * 32, "has space", "tab\there", "caf\u00e9", "nul\0", "\x7f", 12, None, b"AAPL"]


@pytest.mark.parametrize("price", BAD_PRICES, ids=repr)
def test_bad_prices_are_refused_and_change_nothing(feed: str, price: object) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        before = state(feed)
        with pytest.raises(InvalidPrice, match=r"price for symbol 'A' must be a (real|finite) number"):
            pub.publish("A", price)  # type: ignore[arg-type]
        with pytest.raises(InvalidPrice):
            pub.publish("NEW", price)  # type: ignore[arg-type]
        with pytest.raises(InvalidPrice):
            pub.publish_many([("B", 2.0), ("A", price)])  # type: ignore[list-item]
        assert state(feed) == before
        assert pub.publish("B", 2.0) and pub.head == 2, "the publisher still works afterwards"


@pytest.mark.parametrize("symbol", BAD_SYMBOLS, ids=repr)
def test_bad_symbols_are_refused_and_change_nothing(feed: str, symbol: object) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        before = state(feed)
        with pytest.raises(InvalidSymbol, match="symbol must be 1 to 31 printable ASCII characters without spaces"):
            pub.publish(symbol, 1.0)  # type: ignore[arg-type]
        with pytest.raises(InvalidSymbol):
            pub.publish_many([("B", 2.0), (symbol, 1.0)])  # type: ignore[list-item]
        assert state(feed) == before


def test_longest_symbol_is_accepted(feed: str) -> None:
    with Publisher.create(feed) as pub, Subscriber(feed) as sub:
        pub.publish("X" * 31, 1.0)
        pub.publish("~!#$%&'()*+,-./:;<=>?@[]^_`{|}", 2.0)
        assert sub.symbols() == ["X" * 31, "~!#$%&'()*+,-./:;<=>?@[]^_`{|}"]


def test_full_slot_table(feed: str) -> None:
    with Publisher.create(feed, capacity=2) as pub:
        pub.publish_many({"A": 1.0, "B": 2.0})
        before = state(feed)
        with pytest.raises(FeedFull, match=r"is full: 2 of 2 slots hold a symbol and 1 more were asked for"):
            pub.publish("C", 3.0)
        with pytest.raises(FeedFull):
            pub.publish_many([("A", 5.0), ("C", 3.0)])
        assert state(feed) == before
        assert pub.publish("A", 5.0)  # existing symbols still work


def test_batch_that_does_not_fit_writes_nothing(feed: str) -> None:
    with Publisher.create(feed, capacity=3) as pub:
        pub.publish("A", 1.0)
        before = state(feed)
        with pytest.raises(FeedFull, match="1 of 3 slots hold a symbol and 3 more"):
            pub.publish_many([("A", 2.0), ("B", 1.0), ("C", 1.0), ("D", 1.0)])
        assert state(feed) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ring_size": 1000}, "ring size must be a power of 2 from 2 to 16777216: ring_size=1000"),
        ({"capacity": 0}, "capacity must be a whole number from 1 to 1048576: capacity=0"),
        (
            {"mode": 0o400},
            "mode must be a permission from 0o600 to 0o777 that lets the owner read and write: mode=0o400",
        ),
        ({"mode": 0o4600}, "mode=0o4600"),
    ],
)
def test_bad_geometry_creates_nothing(feed: str, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidGeometry, match=re.escape(message)):
        Publisher.create(feed, **kwargs)
    with pytest.raises(FeedNotFound):
        Subscriber(feed)


@pytest.mark.parametrize("name", ["", "a/b", "x" * 28, ".hidden", "-dash", "sp ace", "\u00e9t\u00e9", None])
def test_bad_feed_names(name: object) -> None:
    with pytest.raises(InvalidName, match=re.escape("feed name must be 1 to 27 characters of A-Z a-z 0-9 . _ -")):
        Publisher.create(name)  # type: ignore[arg-type]
    with pytest.raises(InvalidName):
        Subscriber(name)  # type: ignore[arg-type]


def test_missing_feed(feed: str) -> None:
    with pytest.raises(FeedNotFound, match=f"no feed named '{feed}'"):
        Subscriber(feed)
    with pytest.raises(FeedNotFound):
        Publisher.open(feed)
    with pytest.raises(FileNotFoundError):  # the builtin it subclasses
        Subscriber(feed)


def test_create_twice(feed: str) -> None:
    Publisher.create(feed).close()
    with pytest.raises(FeedExists, match="already exists"):
        Publisher.create(feed)


@posix_only
def test_mode_ignores_umask(feed: str) -> None:
    old = os.umask(0o077)
    try:
        Publisher.create(feed, mode=0o644).close()
    finally:
        os.umask(old)
    assert os.stat(segment_path(feed)).st_mode & 0o777 == 0o644


@posix_only
def test_default_mode_is_owner_only(feed: str) -> None:
    old = os.umask(0)
    try:
        Publisher.create(feed).close()
    finally:
        os.umask(old)
    assert os.stat(segment_path(feed)).st_mode & 0o777 == 0o600


def test_second_publisher_is_refused_naming_the_holder(feed: str, procs: List[Proc]) -> None:
    holder = Proc(worker("hold_publisher", feed), stdin=-1)
    procs.append(holder)
    assert holder.readline() == "ready"
    with pytest.raises(FeedBusy, match=rf"already has a publisher \(pid {holder.pid}\)") as info:
        Publisher.open(feed)
    assert info.value.holder_pid == holder.pid
    with pytest.raises(FeedBusy):
        Publisher.open_or_create(feed)
    code, _, err = holder.finish()
    assert code == 0, err
    Publisher.open(feed).close()  # the lock went with the holder


def test_second_publisher_in_the_same_process_is_refused(feed: str) -> None:
    with Publisher.create(feed), pytest.raises(FeedBusy, match=f"pid {os.getpid()}"):
        Publisher.open(feed)


def test_the_lock_dies_with_a_killed_publisher(feed: str, procs: List[Proc]) -> None:
    holder = Proc(worker("hold_publisher", feed), stdin=-1)
    procs.append(holder)
    assert holder.readline() == "ready"
    holder.kill()  # SIGKILL
    Publisher.open(feed).close()


def test_reopen_continues_the_sequence_and_keeps_values(feed: str) -> None:
    with Publisher.create(feed) as pub:
        pub.publish_many({"A": 1.0, "B": 2.0})
        epoch = pub.epoch
    with Publisher.open(feed) as pub:
        assert pub.head == 2 and pub.epoch == epoch + 1
        assert pub.publish("A", 1.0) is False, "the old value is still current"
        assert pub.publish("A", 1.5) is True
        assert pub.head == 3
    with Subscriber(feed) as sub:
        assert sub["A"] == Quote("A", 1.5, sub["A"].time_ns, 3)


def test_end_finishes_subscribers_and_refuses_more(feed: str) -> None:
    pub = Publisher.create(feed)
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=10)
        pub.publish("A", 1.0)
        pub.end()
        assert [q.seq for q in it] == [1]  # delivered, then the iteration ends
        assert sub.ended
        assert list(sub.updates(timeout=10)) == []
        with pytest.raises(FeedEnded):
            pub.publish("A", 2.0)
        pub.close()
        with pytest.raises(FeedEnded, match="ended for good"):
            Publisher.open(feed)
        assert sub["A"].price == 1.0, "values stay readable"


@linux_only
def test_subscriber_maps_the_feed_read_only(feed: str) -> None:
    Publisher.create(feed).close()
    with Subscriber(feed):
        with open(f"/proc/{os.getpid()}/maps") as f:
            maps = f.read().splitlines()
        mine = [m for m in maps if m.endswith(segment_name(feed))]
        assert mine and all(m.split()[1] == "r--s" for m in mine), mine
    seg, _ = attach(feed, writable=False)  # the mapping a subscriber makes
    try:
        with pytest.raises(TypeError):
            seg.view[0] = 1
    finally:
        seg.close()


def test_get_and_missing_symbols(feed: str) -> None:
    with Publisher.create(feed) as pub, Subscriber(feed) as sub:
        assert sub.get("A") is None
        with pytest.raises(SymbolNotFound, match=f"feed '{feed}' has no symbol 'A'"):
            sub["A"]
        with pytest.raises(KeyError):
            sub["A"]
        pub.publish("A", 1.0)
        assert sub.get("A") is not None, "a symbol added after the subscriber opened is found"
        with pytest.raises(InvalidSymbol):
            sub.get("bad symbol")


def test_updates_in_order_with_filter_and_new_symbols(feed: str) -> None:
    with Publisher.create(feed) as pub, Subscriber(feed) as sub:
        everything = sub.updates(timeout=5)
        only_b = sub.updates(["B", "LATER"], timeout=5)
        pub.publish("A", 1.0)  # published before the first next(): still delivered
        pub.publish_many([("B", 2.0), ("A", 1.0), ("A", 3.0)])
        pub.publish("LATER", 9.0)
        pub.end()
        assert [(q.symbol, q.price, q.seq) for q in everything] == [
            ("A", 1.0, 1),
            ("B", 2.0, 2),
            ("A", 3.0, 3),
            ("LATER", 9.0, 4),
        ]
        assert [(q.symbol, q.seq) for q in only_b] == [("B", 2), ("LATER", 4)]


def test_snapshot_first_then_live(feed: str) -> None:
    with Publisher.create(feed) as pub, Subscriber(feed) as sub:
        pub.publish_many({"A": 1.0, "B": 2.0, "C": 3.0})
        pub.publish("A", 1.5)
        it = sub.updates(snapshot=True, timeout=5)
        assert [(q.symbol, q.price, q.seq) for q in [next(it), next(it), next(it)]] == [
            ("B", 2.0, 2),
            ("C", 3.0, 3),
            ("A", 1.5, 4),
        ]
        pub.publish("B", 2.5)
        pub.end()
        assert [(q.symbol, q.price, q.seq) for q in it] == [("B", 2.5, 5)]
        # The snapshot is read at the first next(): a value that moved on since updates() was
        # called is not given stale; its newer change comes, once, in its place.
        it = sub.updates(snapshot=True)
        assert [(q.symbol, q.seq) for q in it] == [("C", 3), ("A", 4), ("B", 5)]
        assert [q.symbol for q in sub.updates(["C"], snapshot=True)] == ["C"]


def test_timeout_raises_and_honours_the_time(feed: str) -> None:
    with Publisher.create(feed) as pub, Subscriber(feed) as sub:
        it = sub.updates(timeout=0.2)
        start = time.monotonic()
        with pytest.raises(Timeout, match=r"no change on feed '.*' within the timeout of 0.2 s"):
            next(it)
        assert 0.19 <= time.monotonic() - start < 5
        pub.publish("A", 1.0)
        it = sub.updates(timeout=0)
        with pytest.raises(TimeoutError):
            next(it)


def test_timeout_fires_on_a_busy_feed_whose_changes_are_filtered_out(feed: str) -> None:
    with Publisher.create(feed, ring_size=64) as pub, Subscriber(feed) as sub:
        it = sub.updates(["QUIET"], timeout=0.3)
        # Drive the feed from this thread between the subscriber's wake-ups.
        import threading

        stop = threading.Event()

        def churn() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                pub.publish("BUSY", float(i))
                time.sleep(0.0005)

        t = threading.Thread(target=churn, daemon=True)
        t.start()
        try:
            with pytest.raises(Timeout):
                next(it)
        finally:
            stop.set()
            t.join(timeout=10)


def test_lapped_subscriber_gets_a_gap_then_latest_values(feed: str) -> None:
    with Publisher.create(feed, ring_size=8) as pub, Subscriber(feed) as sub:
        it = sub.updates(timeout=5)
        pub.publish("A", 0.5)
        assert next(it).seq == 1
        for i in range(100):
            pub.publish("ABCDE"[i % 5], float(i))
        pub.end()
        events = list(it)
        gap = events[0]
        assert isinstance(gap, Gap)
        # changes 2..101 were skipped; the latest of each of 5 symbols is delivered instead
        assert gap == Gap(missed=95, first_seq=2, last_seq=101)
        assert [(q.symbol, q.price, q.seq) for q in events[1:]] == [
            ("A", 95.0, 97),
            ("B", 96.0, 98),
            ("C", 97.0, 99),
            ("D", 98.0, 100),
            ("E", 99.0, 101),
        ]


def test_conflate_gives_only_the_newest(feed: str) -> None:
    with Publisher.create(feed, ring_size=8) as pub, Subscriber(feed) as sub:
        it = sub.updates(conflate=True, timeout=5)
        for i in range(50):
            pub.publish("ABC"[i % 3], float(i))
        # Lapped before the first next(): the newest of each symbol, oldest change first.
        assert next(it)[:2] == ("C", 47.0)
        pub.publish("B", 100.0)  # replaces the pending B=49.0, which is never given
        pub.end()
        assert [(q.symbol, q.price) for q in it] == [("A", 48.0), ("B", 100.0)]


@posix_only
def test_foreign_segment_is_reported(feed: str) -> None:
    shm = posix_ipc.SharedMemory(segment_name(feed), posix_ipc.O_CREX, mode=0o600, size=4096)
    os.write(shm.fd, b"definitely not a price feed")
    shm.close_fd()
    expected = f"feed '{feed}': not a pricefeed segment: its first 8 bytes are b'definite', expected b'PRCFEED\\x00'"
    for opener in (Subscriber, Publisher.open):
        with pytest.raises(BadSegment, match=re.escape(expected)):
            opener(feed)
    with pytest.raises(FeedExists):
        Publisher.create(feed)


@posix_only
def test_empty_segment_is_reported(feed: str) -> None:
    posix_ipc.SharedMemory(segment_name(feed), posix_ipc.O_CREX, mode=0o600).close_fd()
    with pytest.raises(BadSegment, match="0 bytes, smaller than the 256-byte header"):
        Subscriber(feed)


def _poke(feed: str, offset: int, data: bytes) -> None:
    with open(segment_path(feed), "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_other_layout_version_names_both(feed: str) -> None:
    Publisher.create(feed).close()
    _poke(feed, L.OFF_VERSION, (7).to_bytes(4, "little"))
    with pytest.raises(LayoutVersionMismatch, match="layout version 7; this pricefeed reads version 3"):
        Subscriber(feed)
    with pytest.raises(LayoutVersionMismatch):
        Publisher.open(feed)


@posix_only
def test_truncated_segment_is_reported(feed: str) -> None:
    Publisher.create(feed, capacity=8, ring_size=16).close()
    os.truncate(segment_path(feed), 600)
    with pytest.raises(BadSegment, match="truncated: 600 bytes, expected at least 1280 for a header, a schema"):
        Subscriber(feed)
    Publisher.create(feed + "4", capacity=8, ring_size=16, fields="bid,ask,size:i64,n:i64").close()
    try:
        os.truncate(segment_path(feed + "4"), 2600)
        with pytest.raises(
            BadSegment, match="truncated: 2600 bytes, expected at least 3072 for capacity 8, ring size 16 and 4"
        ):
            Subscriber(feed + "4")
    finally:
        unlink_feed(feed + "4")
    with pytest.raises(BadSegment, match="truncated: 600 bytes"):
        Subscriber(feed)


def test_remove(feed: str, procs: List[Proc]) -> None:
    Publisher.create(feed).close()
    assert remove(feed) is True
    with pytest.raises(FeedNotFound):
        remove(feed)
    holder = Proc(worker("hold_publisher", feed), stdin=-1)
    procs.append(holder)
    assert holder.readline() == "ready"
    with pytest.raises(FeedBusy, match=f"live publisher \\(pid {holder.pid}\\)"):
        remove(feed)
    assert remove(feed, stale_only=True) is False
    assert remove(feed, force=True) is True


def test_remove_ends_the_feed_for_blocked_subscribers(feed: str) -> None:
    Publisher.create(feed).close()
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=10)
        remove(feed)
        assert list(it) == []


def test_close_is_idempotent_and_final(feed: str) -> None:
    pub = Publisher.create(feed)
    pub.close()
    pub.close()
    with pytest.raises(PricefeedError, match=re.escape(f"publisher of feed {feed!r} is closed")):
        pub.publish("A", 1.0)
    sub = Subscriber(feed)
    sub.close()
    sub.close()
    with pytest.raises(PricefeedError, match=re.escape(f"subscriber of feed {feed!r} is closed")):
        sub.get("A")


def test_status(feed: str) -> None:
    with Publisher.create(feed, capacity=8, ring_size=16) as pub, Subscriber(feed) as sub:
        s = sub.status()
        assert (s.head_seq, s.symbols, s.capacity, s.ring_size, s.last_change_ns) == (0, 0, 8, 16, None)
        assert s.publisher_alive and s.publisher_pid == os.getpid()
        pub.publish("A", 1.0, time_ns=5)
        s = sub.status()
        assert (s.head_seq, s.symbols, s.last_change_ns, s.ended) == (1, 1, 5, False)
    with Subscriber(feed) as sub:
        s = sub.status()
        assert not s.publisher_alive and s.publisher_pid == os.getpid()


def test_spin_before_sleep_delivers_every_change_once(feed: str) -> None:
    """With a spin budget the subscriber polls before sleeping; bursts and quiet spells
    alike, every change still comes exactly once and in order."""
    import threading

    with Publisher.create(feed, ring_size=4096) as pub, Subscriber(feed) as sub:
        it = sub.updates(timeout=10, spin=0.002)

        def bursts() -> None:
            k = 0
            for _ in range(30):
                for _ in range(50):
                    k += 1
                    pub.publish("ABC"[k % 3], float(k))
                time.sleep(0.003)  # longer than the spin: the subscriber goes to sleep
            pub.end()

        t = threading.Thread(target=bursts)
        t.start()
        try:
            seqs = [q.seq for q in it if isinstance(q, Quote)]
        finally:
            t.join(timeout=30)
        assert seqs == list(range(1, 1501))


@pytest.mark.parametrize("spin", [-1.0, 0.5])
def test_spin_is_bounded(feed: str, spin: float) -> None:
    Publisher.create(feed).close()
    with (
        Subscriber(feed) as sub,
        pytest.raises(InvalidInput, match=re.escape(f"spin must be from 0 to 0.01 seconds: spin={spin!r}")),
    ):
        sub.updates(spin=spin)


def test_closing_from_another_thread_ends_a_sleeping_iterator(feed: str) -> None:
    """A subscriber closed by another thread while its iterator sleeps in the kernel: the
    iterator ends with an error within a wait slice, and nothing touches the unmapped feed."""
    import threading

    Publisher.create(feed).close()
    sub = Subscriber(feed)
    it = sub.updates(timeout=30)
    outcome: List[BaseException] = []

    def follow() -> None:
        try:
            next(it)
        except BaseException as exc:  # what ends it is the point of the test
            outcome.append(exc)

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    time.sleep(0.2)  # asleep in the kernel by now
    sub.close()
    t.join(timeout=5)
    assert not t.is_alive(), "the iterator kept sleeping on a closed subscriber"
    assert outcome and isinstance(outcome[0], (ValueError, OSError)), outcome


@posix_only
def test_a_signal_handler_that_closes_the_subscriber_ends_the_iteration(feed: str) -> None:
    """Closing from a signal handler while the iterator sleeps: an error, never a crash (run
    in a child, so that a crash would show as a signal, not take the test run down)."""
    import subprocess
    import sys
    import textwrap

    Publisher.create(feed).close()
    code = textwrap.dedent(
        f"""
        import signal
        from pricefeed import Subscriber
        sub = Subscriber({feed!r})
        it = sub.updates(timeout=10)
        signal.signal(signal.SIGALRM, lambda *_: sub.close())
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        try:
            next(it)
        except (ValueError, OSError) as exc:
            print("ended:", type(exc).__name__)
        """
    )
    for env in ({}, {"PRICEFEED_PURE": "1"}):
        p = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
        )
        assert p.returncode == 0 and p.stdout.startswith("ended:"), (env, p.returncode, p.stdout, p.stderr)


def test_a_filtered_iterator_gets_a_new_symbol_however_the_subscriber_learnt_it(feed: str) -> None:
    """The subscriber learns a new symbol through get() before the iterator meets it: the
    iterator must still deliver every change of it."""
    with Publisher.create(feed) as pub, Subscriber(feed) as sub:
        pub.publish("A", 1.0)
        it = sub.updates(["A", "B"], timeout=5)
        pub.publish("A", 1.5)
        assert next(it)[:2] == ("A", 1.5)  # the iterator is running, knowing only A
        pub.publish("B", 5.0)
        assert sub.get("B") is not None  # the subscriber now knows B; the iterator does not yet
        assert sub.symbols() == ["A", "B"]
        pub.publish("B", 6.0)
        pub.publish("A", 2.0)
        pub.end()
        assert [(q.symbol, q.price) for q in it if isinstance(q, Quote)] == [("B", 5.0), ("B", 6.0), ("A", 2.0)]


def test_batches_with_the_polling_backend(feed: str) -> None:
    with Publisher.create(feed, backend="polling") as pub, Subscriber(feed, backend="polling") as sub:
        it = sub.updates(timeout=5)
        assert pub.publish_many({"A": 1.0, "B": 2.0}) == 2
        assert pub.publish_many([("A", 1.0), ("A", 3.0)]) == 1
        assert pub.publish_many([]) == 0
        pub.end()
        assert [(q.symbol, q.price, q.seq) for q in it] == [("A", 1.0, 1), ("B", 2.0, 2), ("A", 3.0, 3)]


def test_a_subscriber_that_waited_for_the_feed_gets_every_change_since_it_appeared(feed: str) -> None:
    """Changes made after the subscriber started waiting are after its start, however late it
    attaches: its first updates() begins at the feed's first change."""
    import threading

    box: List[Subscriber] = []
    t = threading.Thread(target=lambda: box.append(Subscriber(feed, wait=30)), daemon=True)
    t.start()
    time.sleep(0.1)
    with Publisher.create(feed) as pub:
        pub.publish_many({"A": 1.0, "B": 2.0})
        pub.publish("A", 3.0)
        t.join(timeout=30)
        assert box, "the waiting subscriber never attached"
        with box[0] as sub:
            # (A PublisherRestarted may come first: the subscriber can attach before the new
            # publisher has announced itself.)
            quotes = (q for q in sub.updates(timeout=5) if isinstance(q, Quote))
            got = [(q.seq, q.symbol, q.price) for q in (next(quotes) for _ in range(3))]
            assert got == [(1, "A", 1.0), (2, "B", 2.0), (3, "A", 3.0)]
            later = sub.updates(timeout=0.2)  # the next updates() starts from now, as usual
            pub.publish("B", 4.0)
            assert next(q for q in later if isinstance(q, Quote)).seq == 4
