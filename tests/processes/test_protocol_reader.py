"""The reader's rules that docs/layout.md and docs/protocol.md settle, one test each, run on
every implementation that reads a feed: the Python subscriber with the C accelerator and
without it (the ``impl`` fixture runs every test here on both), and the C header
``clients/c/pricefeed.h`` through ``pfcat`` (built here with gcc, also as 32-bit programs).

Each test names the rule it holds the implementations to ("Opening", "Catch-up", ... in
protocol.md). Crash states are made by writing the segment's bytes as a publisher that died at
that instant leaves them; real processes, real shared memory, a unique feed per test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import ROOT, Proc, blocked_in_futex, peek, poke, record_at, slot_at, wait_until, worker

from pricefeed import BadSegment, Gap, Publisher, PublisherRestarted, Quote, Subscriber
from pricefeed._protocol import Implementation
from pricefeed._protocol import layout as L
from pricefeed._protocol.header import initialise
from pricefeed._segment import attach as _attach
from pricefeed._segment import segment_path

#: Every test here runs on each implementation of the protocol (see the impl fixture).
pytestmark = [
    pytest.mark.usefixtures("impl"),
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="Linux-specific: writes crash states into /dev/shm"
    ),
]

CLIENTS = ROOT / "clients" / "c"
WARN = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"]
#: name -> the gcc arguments after the warnings. pfcat_slow_init waits a minute, not a second,
#: for a header still being written: a test then tells "waited" from "refused" with no clock.
PFCATS = {
    "pfcat": [],
    "pfcat_slow_init": ["-DPF__INIT_WAIT_NS=60000000000LL"],
    "pfcat_m32": ["-m32"],
    "pfcat_m32_sse2": ["-m32", "-msse2"],
}


# -- the C reader ------------------------------------------------------------------------------------
def env_of(impl: Implementation) -> Dict[str, str]:
    """The environment that gives a child process the same implementation."""
    return {"PRICEFEED_PURE": "1"} if impl.name == "python" else {}


class CBuilds:
    """pfcat in each PFCATS variant, compiled when first asked for."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.built: Dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name not in self.built:
            if shutil.which("gcc") is None:
                pytest.skip("gcc is not installed: cannot build pfcat")
            out = str(self.where / name)
            p = subprocess.run(
                ["gcc", *PFCATS[name], *WARN, str(CLIENTS / "pfcat.c"), "-o", out],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if p.returncode != 0:
                if "-m32" in PFCATS[name]:
                    first = (p.stderr.strip().splitlines() or ["no output"])[0]
                    pytest.skip(f"gcc -m32 cannot build a 32-bit program here (apt-get install gcc-multilib): {first}")
                pytest.fail(f"gcc failed to build {name}:\n{p.stderr}")
            self.built[name] = out
        return self.built[name]


@pytest.fixture(scope="module")
def pfcat(tmp_path_factory: pytest.TempPathFactory) -> CBuilds:
    return CBuilds(tmp_path_factory.mktemp("pfcat"))


def run_c(program: str, *args: str, timeout: float = 30) -> Tuple[int, List[dict]]:
    """Run pfcat; its exit code and JSON lines. A reader that waits where it must refuse (or
    the reverse) shows as a timeout here, never as a slow pass."""
    p = subprocess.run([program, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines()]


# -- bytes of the segment ---------------------------------------------------------------------------
def left_mid_write(feed: str, slot: int, price: float) -> None:
    """Slot ``slot`` as a publisher that died inside its write leaves it: lock odd, the new
    price stored, time and seq not yet."""
    (lock,) = peek(feed, slot_at(feed, slot), "Q")
    poke(feed, slot_at(feed, slot), "Q", lock | 1)
    poke(feed, slot_at(feed, slot, L.SLOT_VALUES), "d", price)


def make_segment(feed: str, data: bytes) -> None:
    """A segment of exactly these bytes under the feed's name (0 bytes: just created)."""
    fd = os.open(segment_path(feed), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def feed_image(capacity: int = 4, ring_size: int = 8) -> bytes:
    image = bytearray(L.segment_size(capacity, ring_size, 1))
    initialise(memoryview(image), capacity, ring_size, 77, 1)
    return bytes(image)


def in_thread(fn: Any) -> Tuple[threading.Thread, List[Any]]:
    """Run fn() in a daemon thread; the list gets its result, or the exception it raised."""
    box: List[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # handed to the test to look at
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def drain(it: Iterator[Any]) -> List[Any]:
    """Everything an iterator yields until the feed ends."""
    return list(it)


def quotes_of(events: List[Any]) -> List[Tuple[int, str, float]]:
    return [(q.seq, q.symbol, q.price) for q in events if isinstance(q, Quote)]


class CFollower:
    """``pfcat follow``: a C subscriber in a process of its own, to stop and resume."""

    def __init__(self, procs: List[Proc], program: str, feed: str, *symbols: str) -> None:
        self.p = Proc([program, "follow", feed, *symbols, "--timeout", "30"])
        procs.append(self.p)
        wait_until(lambda: blocked(self.p.pid), 30, "pfcat follow to block in FUTEX_WAIT")

    def pause(self) -> None:
        os.kill(self.p.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.p.pid, signal.SIGCONT)

    def lines(self, n: int) -> List[dict]:
        return [self.p.json_line() for _ in range(n)]

    def until_ended(self) -> List[dict]:
        out = []
        while True:
            line = self.p.json_line()
            if line.get("event") == "ended":
                code, rest, err = self.p.finish()
                assert code == 0 and not rest.strip(), (code, rest, err)
                return out
            out.append(line)


def blocked(pid: int) -> bool:
    """In FUTEX_WAIT, 64-bit or 32-bit (futex 240, futex_time64 422)."""
    if blocked_in_futex(pid):
        return True
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split(" ", 1)[0] in ("240", "422")
    except OSError:
        return False


def c_quotes(lines: List[dict]) -> List[Tuple[int, str, float]]:
    return [(d["seq"], d["symbol"], d["price"]) for d in lines if "event" not in d]


# -- Opening: the size, then the version, then the magic ----------------------------------------------
def test_opening_waits_for_0_bytes_and_refuses_1_to_255_at_once(
    feed: str, monkeypatch: pytest.MonkeyPatch, pfcat: CBuilds
) -> None:
    """protocol.md, "Opening": a 0-byte segment is one its creator has not sized yet (retried
    like version 0); 1 to 255 bytes is never a pricefeed segment, and is refused at once."""
    monkeypatch.setattr(_attach, "INIT_WAIT_SECONDS", 60.0)  # waiting would outlast every join below
    make_segment(feed, b"\xff" * 100)
    t, box = in_thread(lambda: Subscriber(feed))
    t.join(timeout=30)
    assert box and isinstance(box[0], BadSegment), f"waited on a 100-byte segment instead of refusing it: {box}"
    assert "100 bytes, smaller than the 256-byte header" in str(box[0])
    code, got = run_c(pfcat("pfcat_slow_init"), "check", feed)
    assert (code, got[0]["error"]) == (9, "PF_EBADSEG") and "100 bytes" in got[0]["message"]
    os.unlink(segment_path(feed))

    for reader in ("python", "c"):
        make_segment(feed, b"")

        def finish_creating() -> None:
            # A whole segment under the name at once (the reader re-opens the name to retry).
            spare = segment_path(feed) + ".new"
            with open(spare, "wb") as f:
                f.write(feed_image())
            os.replace(spare, segment_path(feed))

        timer = threading.Timer(0.3, finish_creating)
        timer.start()
        try:
            if reader == "python":
                with Subscriber(feed) as sub:
                    assert sub.geometry.incarnation == 77
            else:
                code, got = run_c(pfcat("pfcat_slow_init"), "check", feed)
                assert code == 0 and got[0]["ok"], got
        finally:
            timer.join(timeout=10)
        os.unlink(segment_path(feed))


def test_opening_calls_a_zero_magic_with_a_version_damage(
    feed: str, monkeypatch: pytest.MonkeyPatch, pfcat: CBuilds
) -> None:
    """protocol.md, "Opening": the creator stores magic, then (after a release fence) version;
    a version seen with acquire comes with its magic. Zero magic under a non-zero version is
    damage, refused at once, not a header being written; magic under version 0 is one."""
    monkeypatch.setattr(_attach, "INIT_WAIT_SECONDS", 60.0)
    image = bytearray(feed_image())
    image[L.OFF_MAGIC : L.OFF_MAGIC + 8] = bytes(8)
    make_segment(feed, bytes(image))
    t, box = in_thread(lambda: Subscriber(feed))
    t.join(timeout=30)
    assert box and isinstance(box[0], BadSegment), f"zero magic was waited for: {box}"
    assert "magic is 0 but version is 3" in str(box[0])
    code, got = run_c(pfcat("pfcat_slow_init"), "check", feed)
    assert (code, got[0]["error"]) == (9, "PF_EBADSEG") and "magic is 0 but version is 3" in got[0]["message"]
    os.unlink(segment_path(feed))

    for reader in ("python", "c"):
        image = bytearray(feed_image())
        image[L.OFF_VERSION : L.OFF_VERSION + 4] = bytes(4)  # magic stored, version not yet
        make_segment(feed, bytes(image))
        timer = threading.Timer(0.3, poke, args=(feed, L.OFF_VERSION, "I", L.LAYOUT_VERSION))
        timer.start()
        try:
            if reader == "python":
                Subscriber(feed).close()
            else:
                code, got = run_c(pfcat("pfcat_slow_init"), "check", feed)
                assert code == 0, got
        finally:
            timer.join(timeout=10)
        os.unlink(segment_path(feed))


# -- Catch-up after a lap -----------------------------------------------------------------------------
def _lap_with_new_symbols(pub: Publisher) -> int:
    """20 new symbols (one change each) and 5 changes of A, in a ring of 8; returns the head."""
    for k in range(20):
        pub.publish(f"N{k}", float(k))
    for k in range(5):
        pub.publish("A", 10.0 + k)
    return pub.head


def test_catch_up_reloads_slot_count_after_the_head(feed: str, impl: Implementation) -> None:
    """protocol.md, "Catch-up": slot_count is loaded again after H, so symbols that first
    appeared in the skipped range are caught up too."""
    with Publisher.create(feed, ring_size=8) as pub, Subscriber(feed) as sub:
        pub.publish("A", 1.0)
        it = sub.updates(timeout=5)  # knows A only
        head = _lap_with_new_symbols(pub)
        pub.end()
        events = drain(it)
    assert events[0] == Gap(4, 2, head)
    want = [(k + 2, f"N{k}", float(k)) for k in range(20)] + [(head, "A", 14.0)]
    assert quotes_of(events) == want


def test_c_catch_up_reloads_slot_count_after_the_head(feed: str, pfcat: CBuilds, procs: List[Proc]) -> None:
    with Publisher.create(feed, ring_size=8) as pub:
        pub.publish("A", 1.0)
        c = CFollower(procs, pfcat("pfcat"), feed)
        c.pause()
        try:
            head = _lap_with_new_symbols(pub)
            pub.end()
        finally:
            c.resume()
    lines = c.until_ended()
    assert lines[0] == {"event": "gap", "missed": 4, "first_seq": 2, "last_seq": head}
    assert c_quotes(lines) == [(k + 2, f"N{k}", float(k)) for k in range(20)] + [(head, "A", 14.0)]


def _stuck_after_a_lap(feed: str, in_ring: bool) -> int:
    """A lapped subscriber's feed (ring 16) whose publisher died inside a write of A, after
    A's last announced change (2.0), which the ring still holds or not. Returns that change's
    sequence (or 0)."""
    with Publisher.open(feed) as pub:
        for k in range(20 if in_ring else 0):
            pub.publish("B", float(k))
        pub.publish("A", 2.0)
        a_seq = pub.head
        for k in range(5 if in_ring else 30):
            pub.publish("B", 100.0 + k)
    left_mid_write(feed, 0, 9.5)  # the dead writer's new price, never announced
    return a_seq if in_ring else 0


@pytest.mark.parametrize("in_ring", [True, False], ids=["in-ring", "out-of-ring"])
def test_catch_up_of_a_dead_writers_slot(feed: str, impl: Implementation, in_ring: bool) -> None:
    """protocol.md, "Catch-up": a slot still odd after the retry budget, with no publisher
    holding the lock, gives its newest ring record at or below the head; if the ring holds
    none, it is left out (counted in missed), not an error: the next publisher's repair
    announces the price the slot holds."""
    with Publisher.create(feed, ring_size=16) as pub:
        pub.publish("A", 1.0)
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=5)
        a_seq = _stuck_after_a_lap(feed, in_ring)
        gap = next(it)
        assert isinstance(gap, Gap) and gap.first_seq == 2
        caught = [next(it) for _ in range(2 if in_ring else 1)]
        want = [("B", 104.0 if in_ring else 129.0)]
        if in_ring:
            want.insert(0, ("A", 2.0))
            assert caught[0].seq == a_seq
        assert [(q.symbol, q.price) for q in caught] == want
        assert gap.missed + len(caught) == gap.last_seq - gap.first_seq + 1
        with Publisher.open(feed) as pub:
            head = pub.head
            pub.end()  # the repair republished A's 9.5 as change head
        rest = drain(it)
    assert isinstance(rest[0], PublisherRestarted), rest
    assert quotes_of(rest) == [(head, "A", 9.5)]


@pytest.mark.parametrize("in_ring", [True, False], ids=["in-ring", "out-of-ring"])
def test_c_catch_up_of_a_dead_writers_slot(feed: str, pfcat: CBuilds, procs: List[Proc], in_ring: bool) -> None:
    with Publisher.create(feed, ring_size=16) as pub:
        pub.publish("A", 1.0)
    c = CFollower(procs, pfcat("pfcat"), feed)
    c.pause()
    try:
        a_seq = _stuck_after_a_lap(feed, in_ring)
    finally:
        c.resume()
    gap = c.p.json_line()
    assert gap["event"] == "gap" and gap["first_seq"] == 2, gap
    caught = c.lines(2 if in_ring else 1)
    want = [(a_seq, "A", 2.0)] if in_ring else []
    assert [(d["symbol"], d["price"]) for d in caught] == [(s, p) for _, s, p in want] + [
        ("B", 104.0 if in_ring else 129.0)
    ]
    assert gap["missed"] + len(caught) == gap["last_seq"] - gap["first_seq"] + 1
    with Publisher.open(feed) as pub:
        head = pub.head
        pub.end()
    rest = c.until_ended()
    assert rest[0]["event"] == "publisher_restarted" and c_quotes(rest) == [(head, "A", 9.5)]


def test_catch_up_waits_for_a_live_writer(feed: str, impl: Implementation, procs: List[Proc]) -> None:
    """protocol.md, "Catch-up": a slot odd past the retry budget while a publisher holds the
    lock is being written: the reader sleeps (never spins) until the write ends. That write
    carries a sequence above H, so the slot is then left for the ring."""
    with Publisher.create(feed, ring_size=16) as pub:
        pub.publish_many({"A": 1.0, "B": 1.0})
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=10)
        with Publisher.open(feed) as pub:
            for k in range(40):
                pub.publish("B", float(k))
            head = pub.head
        holder = Proc(worker("hold_publisher", feed), stdin=subprocess.PIPE)
        procs.append(holder)
        assert holder.readline() == "ready"
        (lock,) = peek(feed, slot_at(feed, 0), "Q")
        poke(feed, slot_at(feed, 0), "Q", lock + 1)  # the holder "writes" A
        t, box = in_thread(lambda: [next(it), next(it)])
        t.join(timeout=0.5)
        assert t.is_alive() and not box, f"the catch-up did not wait for the live writer: {box}"
        # The write ends with a change above the head (its record and head store would follow).
        poke(feed, slot_at(feed, 0, L.SLOT_VALUES), "d", 3.0)
        poke(feed, slot_at(feed, 0), "QQQ", lock + 2, head + 1, 1)
        t.join(timeout=30)
        gap, b = box[0]  # (no PublisherRestarted: the holder took over after a clean close)
    assert gap == Gap(head - 2 - 1, 3, head) and (b.symbol, b.price, b.seq) == ("B", 39.0, head)


# -- The cursor and the head ----------------------------------------------------------------------------
@pytest.mark.parametrize("conflate", [False, True], ids=["changes", "conflate"])
def test_a_head_below_the_cursor_is_damage(feed: str, impl: Implementation, conflate: bool) -> None:
    """protocol.md, "The cursor": sequences only grow for a segment's life, and a feed created
    anew is another segment, never this mapping: a head below the cursor is BadSegment at
    once (it used to make the reader spin until its timeout)."""
    with Publisher.create(feed) as pub, Subscriber(feed) as sub:
        for k in range(5):
            pub.publish("A", float(k))
        it = sub.updates(timeout=30, conflate=conflate)
        poke(feed, L.OFF_HEAD_SEQ, "Q", 2)
        t, box = in_thread(lambda: next(it))
        t.join(timeout=20)
        assert box and isinstance(box[0], BadSegment), f"not reported at once: {box}"
        assert "head_seq went back from 5 to 2" in str(box[0])


def test_c_head_below_the_cursor_is_damage(feed: str, pfcat: CBuilds, procs: List[Proc]) -> None:
    with Publisher.create(feed) as pub:
        for k in range(5):
            pub.publish("A", float(k))
        c = CFollower(procs, pfcat("pfcat"), feed)
        poke(feed, L.OFF_HEAD_SEQ, "Q", 2)  # noticed within a wait slice: nothing wakes it
        got = c.p.json_line(timeout=20)
        assert got["error"] == "PF_EBADSEG" and "head_seq went back from 5 to 2" in got["message"], got
        assert c.p.finish(timeout=10)[0] == 9


# -- Ending -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lapped", [False, True], ids=["in-step", "lapped"])
@pytest.mark.parametrize("conflate", [False, True], ids=["changes", "conflate"])
def test_an_ended_feed_is_drained_first(feed: str, impl: Implementation, lapped: bool, conflate: bool) -> None:
    """protocol.md, "Ending": closed is loaded after the head, and the head again after
    closed; a reader that sees closed still reads every change up to that head (a Gap and the
    catch-up if it was lapped; its pending values in conflate mode), then stops."""
    with Publisher.create(feed, ring_size=8) as pub, Subscriber(feed) as sub:
        it = sub.updates(timeout=5, conflate=conflate)
        n = 30 if lapped else 6
        for k in range(n):
            pub.publish(f"S{k % 3}", float(k))
        pub.end()
        events = drain(it)
    final = {(n - 3 + j) % 3: (n - 2 + j, float(n - 3 + j)) for j in range(3)}  # S{i}: (seq, price)
    last3 = sorted((seq, f"S{i}", price) for i, (seq, price) in final.items())
    if conflate:
        assert quotes_of(events) == last3 and not [e for e in events if isinstance(e, Gap)]
    elif lapped:
        assert events[0] == Gap(n - 3, 1, n) and quotes_of(events) == last3
    else:
        assert quotes_of(events) == [(k + 1, f"S{k % 3}", float(k)) for k in range(n)]


def test_c_an_ended_lapped_feed_is_drained_first(feed: str, pfcat: CBuilds, procs: List[Proc]) -> None:
    with Publisher.create(feed, ring_size=8) as pub:
        c = CFollower(procs, pfcat("pfcat"), feed)
        c.pause()
        try:
            for k in range(30):
                pub.publish(f"S{k % 3}", float(k))
            pub.end()
        finally:
            c.resume()
    lines = c.until_ended()
    assert lines[0] == {"event": "gap", "missed": 27, "first_seq": 1, "last_seq": 30}
    assert c_quotes(lines) == [(28, "S0", 27.0), (29, "S1", 28.0), (30, "S2", 29.0)]


# -- The ring fallback ---------------------------------------------------------------------------------
@pytest.mark.parametrize("back", [7, 8, 3], ids=["oldest-record", "overwritten", "record-above-head"])
def test_a_dead_writers_slot_is_looked_for_in_the_whole_ring_and_no_further(
    feed: str, impl: Implementation, pfcat: CBuilds, back: int
) -> None:
    """protocol.md, "Reading a slot": the fallback searches the records of head, head - 1, ...,
    head - ring_size + 1 (every record the ring holds; each read with both sequence checks,
    since a new publisher may be writing the ring meanwhile), and never one above the head."""
    with Publisher.create(feed, ring_size=8) as pub:
        pub.publish("A", 1.0)  # change 1
        for k in range(back):
            pub.publish("B", float(k))
        head = pub.head  # A's change is head - back
    left_mid_write(feed, 0, 5.0)
    if back == 3:
        # A complete record above the head naming A (a dead publisher's unannounced change):
        # never read, since nothing above the head was announced.
        poke(feed, record_at(feed, head + 1), "QIIQd", head + 1, 0, 1, 7, 6.0)
    code, got = run_c(pfcat("pfcat"), "get", feed, "A")
    with Subscriber(feed) as sub:
        if back != 8:
            q = sub["A"]
            assert (q.price, q.seq) == (1.0, 1)
            assert code == 0 and (got[0]["price"], got[0]["seq"]) == (1.0, 1), got
        else:
            with pytest.raises(BadSegment, match="ring no longer holds its last value"):
                sub.get("A")
            assert code == 9 and "ring no" in got[0]["message"], got


# -- What a Gap means ------------------------------------------------------------------------------------
@pytest.mark.parametrize("symbols", [None, ["A", "C"]], ids=["all", "filtered"])
def test_a_gap_is_an_inclusive_range_of_feed_wide_changes(
    feed: str, impl: Implementation, symbols: Optional[List[str]]
) -> None:
    """protocol.md, "Gap": first_seq and last_seq are both included; the catch-up values lie
    in that range; missed + their number == last_seq - first_seq + 1; missed counts changes of
    every symbol, wanted or not; last_seq is the head loaded after the lap."""
    with Publisher.create(feed, ring_size=8) as pub, Subscriber(feed) as sub:
        pub.publish_many({"A": 0.0, "B": 0.0, "C": 0.0})
        it = sub.updates(symbols, timeout=5)
        start = pub.head
        for k in range(40):
            pub.publish("ABCB"[k % 4], float(k + 1))
        head = pub.head
        pub.end()
        events = drain(it)
    gap = events[0]
    caught = quotes_of(events)
    assert isinstance(gap, Gap) and (gap.first_seq, gap.last_seq) == (start + 1, head)
    assert all(gap.first_seq <= seq <= gap.last_seq for seq, _, _ in caught)
    assert gap.missed + len(caught) == gap.last_seq - gap.first_seq + 1
    wanted = {"A", "B", "C"} if symbols is None else set(symbols)
    assert {s for _, s, _ in caught} == wanted


def test_c_gap_of_a_filtered_follower(feed: str, pfcat: CBuilds, procs: List[Proc]) -> None:
    with Publisher.create(feed, ring_size=8) as pub:
        pub.publish_many({"A": 0.0, "B": 0.0, "C": 0.0})
        c = CFollower(procs, pfcat("pfcat"), feed, "A", "C")
        c.pause()
        try:
            for k in range(40):
                pub.publish("ABCB"[k % 4], float(k + 1))
            pub.end()
        finally:
            c.resume()
    lines = c.until_ended()
    gap, caught = lines[0], c_quotes(lines)
    assert (gap["first_seq"], gap["last_seq"]) == (4, 43) and {s for _, s, _ in caught} == {"A", "C"}
    assert gap["missed"] + len(caught) == 40


# -- 32-bit readers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("program", ["pfcat_m32", "pfcat_m32_sse2"], ids=["x87", "sse2"])
def test_a_32_bit_reader_loads_each_u64_with_one_plain_load(
    feed: str, pfcat: CBuilds, procs: List[Proc], program: str
) -> None:
    """layout.md, section 2: a 32-bit x86 reader loads a u64 with one 8-byte load (SSE2 movq,
    or x87 fild/fistp), never lock cmpxchg8b, which writes and so faults on the subscriber's
    PROT_READ mapping. Checked in the machine code, then on a read-only mapping for real."""
    binary = pfcat(program)
    objdump = shutil.which("objdump")
    if objdump is not None:
        code = subprocess.run([objdump, "-d", binary], capture_output=True, text=True, timeout=60).stdout
        assert "cmpxchg8b" not in code, "a 32-bit pfcat uses lock cmpxchg8b"
        assert ("movq" if program.endswith("sse2") else "fildll") in code
    with Publisher.create(feed, ring_size=64) as pub:
        pub.publish("A", 2.0**53 + 2, time_ns=(1 << 63) + 5)  # both halves of each word matter
        code, got = run_c(binary, "get", feed, "A")
        assert code == 0 and (got[0]["price"], got[0]["time_ns"], got[0]["seq"]) == (2.0**53 + 2, (1 << 63) + 5, 1)
        c = CFollower(procs, binary, feed)
        for k in range(1, 51):
            pub.publish("A", float(k), time_ns=(1 << 40) * k)
        pub.end()
    assert c_quotes(c.until_ended()) == [(k + 1, "A", float(k)) for k in range(1, 51)]


def test_a_32_bit_target_without_sse2_or_x87_is_refused_at_compile_time(tmp_path: Path) -> None:
    """With neither unit, GCC would make an 8-byte atomic load a call into libatomic, whose
    load is a lock cmpxchg8b: pricefeed.h refuses such a target instead."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    probe = subprocess.run(["gcc", "-m32", "-x", "c", "-", "-o", str(tmp_path / "probe")], input="int main(void){return 0;}",
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("gcc -m32 cannot build a 32-bit program here (apt-get install gcc-multilib)")
    p = subprocess.run(
        ["gcc", "-m32", "-mno-80387", *WARN, "-c", str(CLIENTS / "pfcat.c"), "-o", str(tmp_path / "pfcat.o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode != 0 and "faults on a read-only mapping" in p.stderr, p.stderr
