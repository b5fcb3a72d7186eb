"""The recorder and the replayer in real processes on real shared memory: a million changes
recorded at full rate with none missed; a recorder killed with SIGKILL while it writes, and run
again, leaves every change exactly once; a stop and a resume after the ring moved on record the
gap; a replay gives the recorded changes again, in order, with their spacing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from _workers import RECORDED, recorded_change
from conftest import Proc, cli, kill_hard, posix_only, wait_until, worker

from pricefeed import Publisher, Quote, Subscriber
from pricefeed._record import format as F
from pricefeed._values import parse_fields, quote_type

#: The changes of the full-rate tests: more than any ring but the largest holds.
N = 1_000_000
FIELDS = parse_fields(RECORDED)


def expected(n: int, start: int = 1) -> Iterator[Tuple[object, ...]]:
    """(symbol, bid, ask, size, seq, changed mask) of changes start..n of recorded_change
    published in order into a new feed (a symbol's first change sets every field)."""
    state: dict = {}
    for k in range(1, n + 1):
        symbol, given = recorded_change(k)
        current = state.get(symbol)
        if current is None:
            current = state[symbol] = [0.0, 0.0, 0]
            mask = 7
        else:
            mask = 1 if len(given) == 1 else 7
        current[0] = given["bid"]
        if "ask" in given:
            current[1], current[2] = given["ask"], given["size"]
        if k >= start:
            yield (symbol, current[0], current[1], current[2], k, mask)


def check_every_change(path: str, n: int) -> F.Summary:
    """The recording holds changes 1..n, each once, in order, with its values and changed
    fields, and no gap."""
    with F.Recording(path) as rec:
        summary = rec.scan()
        got = rec.changes(summary.end)
        for want in expected(n):
            q = next(got, None)
            assert q is not None, f"the recording stops before change {want[4]}"
            assert q[:4] + q[5:] == want, f"change {want[4]} recorded as {q!r}"
        extra = next(got, None)
        assert extra is None, f"a change after {n}: {extra!r}"
    assert "gap" not in summary.kinds, summary.kinds
    return summary


def start_recorder(feed: str, path: str, procs: List[Proc], *args: str) -> Proc:
    rec = Proc(cli("record", feed, path, *args))
    procs.append(rec)
    wait_until(lambda: "recording feed" in rec.stderr or rec.p.poll() is not None, 60, "the recorder to start")
    assert "recording feed" in rec.stderr, rec.stderr
    return rec


def recorded_seconds(stderr: str) -> float:
    found = re.search(r"changes=(\d+) .*seconds=([\d.]+)", stderr)
    assert found, stderr
    return float(found.group(2))


def last_recorded(path: str) -> int:
    with F.Recording(path) as rec:
        last = 0
        for q in rec.changes():
            last = q.seq
        return last


def test_records_a_million_changes_published_at_full_rate(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    """A publisher makes a million changes as fast as it can, in batches of 1000, while a
    recorder follows: the file holds every one, 1 to N, in order, with its values and changed
    fields, and no gap. (The ring holds N changes, so a gap could only come from a recorder
    that lost its place; how fast it went is printed, and docs/recording.md gives the figures.)"""
    Publisher.create(feed, capacity=256, ring_size=1 << 20, fields=RECORDED).close()
    path = str(tmp_path / "feed.pfr")
    rec = start_recorder(feed, path, procs)
    pub = Proc(worker("record_publish", feed, N))
    procs.append(pub)
    assert pub.readline(timeout=60) == "ready"
    published = pub.json_line(timeout=300)
    code, _, err = rec.finish(timeout=300)
    assert code == 0, err
    assert "Traceback" not in err
    assert f"ended: changes={N} gaps=0 missed=0" in err, err
    summary = check_every_change(path, N)
    assert summary.kinds == {"start": 1, "ended": 1, "change": N}
    assert summary.torn == 0
    print(
        f"published {N} changes in {published['seconds']:.2f} s ({N / published['seconds']:,.0f}/s); "
        f"recorded in {recorded_seconds(err):.2f} s, {summary.size:,} bytes"
    )


@posix_only
def test_a_recorder_killed_while_writing_resumes_after_its_last_whole_entry(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    """SIGKILL the recorder while it records a million changes at full rate, three times,
    running it again each time: each time the file is valid up to a torn tail (if the kill
    landed in a write), which the next run cuts off before it appends after the last whole
    change; the final file holds every change exactly once, in order."""
    Publisher.create(feed, capacity=256, ring_size=1 << 20, fields=RECORDED).close()
    path = str(tmp_path / "feed.pfr")
    rec = start_recorder(feed, path, procs)
    pub = Proc(worker("record_publish", feed, N))
    procs.append(pub)
    assert pub.readline(timeout=60) == "ready"
    kills, torn_tails = 0, []
    for size in (3 << 20, 15 << 20, 27 << 20):
        running = rec.p
        wait_until(
            lambda: os.path.getsize(path) >= size or running.poll() is not None,  # noqa: B023 - used at once
            240,
            f"{size} bytes recorded",
        )
        if rec.p.poll() is not None:  # done already: nothing left to kill it in
            break
        kill_hard(rec.pid)
        rec.p.wait(timeout=30)
        kills += 1
        with F.Recording(path) as r:
            last = 0
            for q in r.changes():
                last = q.seq
            torn = r.torn
        torn_tails.append(torn)
        rec = start_recorder(feed, path, procs)
        assert f"after change {last}" in rec.stderr, rec.stderr
        if torn:
            assert f"cut off a torn tail of {torn} bytes" in rec.stderr, rec.stderr
        else:
            assert "torn" not in rec.stderr, rec.stderr
    assert kills >= 1, "the recorder finished before it could be killed"
    pub.json_line(timeout=300)
    code, _, err = rec.finish(timeout=300)
    assert code == 0, err
    summary = check_every_change(path, N)
    assert summary.kinds == {"start": kills + 1, "ended": 1, "change": N}, summary.kinds
    print(f"killed {kills} times; torn tails cut off: {torn_tails} bytes")


def _publish(pub: Publisher, first: int, last: int, log: dict, state: dict) -> None:
    for k in range(first, last + 1):
        symbol, given = recorded_change(k)
        pub.publish(symbol, **given)
        values = state.setdefault(symbol, [0.0, 0.0, 0])
        values[0] = given["bid"]
        if "ask" in given:
            values[1], values[2] = given["ask"], given["size"]
        log[k] = (symbol, tuple(values))


def _paced(pub: Publisher, first: int, last: int, log: dict, state: dict, path: str) -> None:
    """Publish first..last in steps the recorder keeps up with (the ring holds 64 changes)."""
    for k in range(first, last + 1, 16):
        top = min(k + 15, last)
        _publish(pub, k, top, log, state)
        wait_until(lambda top=top: last_recorded(path) >= top, 60, f"change {top} recorded")


@posix_only
def test_a_stopped_recorder_resumes_and_records_the_gap_the_ring_left(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    """A recorder started after the ring (64 changes) moved on records a gap entry, then the
    latest value of each symbol, then every change; SIGTERM stops it (exit 143) with every
    entry whole; run again after 600 more changes, it records that gap and goes on, never a
    change twice, every value the one its change set."""
    path = str(tmp_path / "feed.pfr")
    log: dict = {}
    state: dict = {}
    with Publisher.create(feed, capacity=256, ring_size=64, fields=RECORDED) as pub:
        _publish(pub, 1, 300, log, state)
        rec = start_recorder(feed, path, procs)
        wait_until(lambda: last_recorded(path) >= 300, 60, "the catch-up recorded")
        _paced(pub, 301, 400, log, state, path)
        rec.p.send_signal(signal.SIGTERM)
        code, _, err = rec.finish(timeout=60)
        assert code == 143, err
        assert "terminated: changes=200 gaps=1 missed=200" in err, err
        with F.Recording(path) as r:
            assert sum(1 for _ in r.entries()) > 0 and r.torn == 0  # a stop leaves every entry whole
        _publish(pub, 401, 1000, log, state)
        rec = start_recorder(feed, path, procs)
        assert "after change 400" in rec.stderr
        wait_until(lambda: last_recorded(path) >= 1000, 60, "the second catch-up recorded")
        _paced(pub, 1001, 1100, log, state, path)
        pub.end()
    code, _, err = rec.finish(timeout=60)
    assert code == 0, err
    assert "gap: changes 401 to 1000 left the feed's ring" in err
    with F.Recording(path) as r:
        entries = list(r.entries())
    kinds = [F.KIND_NAMES[F.kind_of(e)] for e in entries]
    assert kinds == ["start", "gap", *["change"] * 200, "start", "gap", *["change"] * 200, "ended"], kinds
    gaps = [tuple(e)[1:] for e in entries if isinstance(e, F.GapEntry)]
    assert gaps == [(200, 1, 300), (500, 401, 1000)]  # (missed, first, last): 100 symbols caught up
    changes = [e for e in entries if isinstance(e, Quote)]
    # The catch-ups are each symbol's latest change in the range; the rest, every change.
    assert [q.seq for q in changes] == [*range(201, 401), *range(901, 1101)]
    for q in changes:
        assert (q.symbol, q[1:4]) == log[q.seq], q
    live = {q.seq: q for q in changes if 301 <= q.seq <= 400 or q.seq > 1000}
    for *_, seq, mask in expected(1100, 301):
        if seq in live:
            assert live[seq].changed_mask == mask, live[seq]


@posix_only
def test_a_torn_last_entry_is_cut_off_and_its_change_recorded_again(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    """What a kill inside a write leaves, made on purpose: the file cut 7 bytes into its last
    change. The next run says it cut the rest of that entry off, resumes after the change
    before it, records that change again from the ring, and goes on: every change once."""
    path = str(tmp_path / "feed.pfr")
    with Publisher.create(feed, capacity=256, ring_size=1 << 12, fields=RECORDED) as pub:
        rec = start_recorder(feed, path, procs)
        _paced(pub, 1, 500, {}, {}, path)
        rec.p.send_signal(signal.SIGTERM)
        assert rec.finish(timeout=60)[0] == 143
        size = os.path.getsize(path)
        last = 28 + 8 * len(FIELDS) + len(recorded_change(500)[0])  # the bytes of change 500's entry
        os.truncate(path, size - 7)
        rec = start_recorder(feed, path, procs)
        assert f"cut off a torn tail of {last - 7} bytes at byte {size - last}" in rec.stderr, rec.stderr
        assert "after change 499" in rec.stderr
        _paced(pub, 501, 600, {}, {}, path)
        pub.end()
    code, _, err = rec.finish(timeout=60)
    assert code == 0, err
    summary = check_every_change(path, 600)
    assert summary.kinds == {"start": 2, "ended": 1, "change": 600}


@posix_only
def test_a_write_that_fails_halfway_loses_nothing(feed: str, tmp_path: Path) -> None:
    """The file cannot grow past 64 KiB (RLIMIT_FSIZE: what a full disk does to a write): the
    recorder writes what fits, part of an entry included, and exits 1 saying why; the next
    run cuts the part off and records the rest, every change once."""
    path = str(tmp_path / "feed.pfr")
    with Publisher.create(feed, capacity=256, ring_size=1 << 12, fields=RECORDED) as pub:
        for k in range(1, 3001, 100):
            pub.publish_many([recorded_change(j) for j in range(k, k + 100)])
        pub.end()
    limited = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "from pricefeed._cli.main import main\n"
        f"sys.exit(main(['record', {feed!r}, {path!r}]))"
    )
    code, _, err = Proc([sys.executable, "-c", limited]).finish(timeout=60)
    assert code == 1, err
    assert f"pricefeed: recording {path!r} cannot be written: File too large" in err, err
    assert os.path.getsize(path) == 65536
    with F.Recording(path) as r:
        whole = sum(1 for _ in r.changes())
        torn = r.torn
    p = Proc(cli("record", feed, path))
    code, _, err = p.finish(timeout=60)
    assert code == 0, err
    if torn:
        assert f"cut off a torn tail of {torn} bytes at byte {65536 - torn}" in err, err
    assert f"after change {whole}" in err
    check_every_change(path, 3000)


@posix_only
def test_a_publisher_dying_and_another_taking_over_are_recorded(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    path = str(tmp_path / "feed.pfr")
    Publisher.create(feed, fields=RECORDED).close()
    holder = Proc(worker("hold_publisher", feed), stdin=subprocess.PIPE)
    procs.append(holder)
    assert holder.readline() == "ready"
    rec = start_recorder(feed, path, procs)
    kill_hard(holder.pid)
    holder.p.wait(timeout=10)
    wait_until(lambda: "publisher gone" in rec.stderr, 30, "the recorder to see the publisher gone")
    with Publisher.open(feed) as pub:
        pub.publish("ES", bid=1.5)
        pub.end()
    code, _, err = rec.finish(timeout=60)
    assert code == 0, err
    with F.Recording(path) as r:
        entries = list(r.entries())
    gone = [e for e in entries if isinstance(e, F.PublisherGoneEntry)]
    restarted = [e for e in entries if isinstance(e, F.PublisherRestartedEntry)]
    assert [(g.pid, g.clean) for g in gone] == [(holder.pid, False)]
    assert [r.pid for r in restarted] == [os.getpid()]
    changes = [e for e in entries if isinstance(e, Quote)]
    assert [(q.symbol, q.bid, q.seq) for q in changes] == [("ES", 1.5, 1)]
    assert entries.index(restarted[0]) < entries.index(changes[0])


def test_a_feed_created_anew_ends_its_recording(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    """A recording is of one incarnation: when the feed is removed and created anew, the
    recorder writes what it has and exits 13, and the file stays valid."""
    path = str(tmp_path / "feed.pfr")
    with Publisher.create(feed, fields=RECORDED) as pub:
        pub.publish("ES", bid=1.5)
        rec = start_recorder(feed, path, procs)
        wait_until(lambda: last_recorded(path) >= 1, 30, "the change recorded")
        pub.unlink()
    with Publisher.create(feed, fields=RECORDED) as pub:
        pub.publish("ES", bid=2.5)
    code, _, err = rec.finish(timeout=60)
    assert code == 13, err
    assert (
        f"pricefeed: feed {feed!r} was removed and created anew: its recording {path!r} ends here, after 1 changes"
        in err
    )
    with F.Recording(path) as r:
        assert [(q.symbol, q.bid) for q in r.changes()] == [("ES", 1.5)] and r.torn == 0


@posix_only
def test_one_recorder_per_file(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    path = str(tmp_path / "feed.pfr")
    Publisher.create(feed, fields=RECORDED).close()
    start_recorder(feed, path, procs)
    before = Path(path).read_bytes()
    second = Proc(cli("record", feed, path))
    procs.append(second)
    code, _, err = second.finish(timeout=60)
    assert code == 1, err
    assert err.startswith(f"pricefeed: recording {path!r} is being written by another recorder"), err
    assert "Traceback" not in err
    assert Path(path).read_bytes() == before


# -- replay -----------------------------------------------------------------------------------------
def record_changes(feed: str, path: str, n: int, procs: List[Proc]) -> None:
    """A recording of recorded_change(1..n), made by a recorder following the publisher."""
    Publisher.create(feed, capacity=256, ring_size=1 << 16, fields=RECORDED).close()
    rec = start_recorder(feed, path, procs)
    pub = Proc(worker("record_publish", feed, n, 100))
    procs.append(pub)
    assert pub.readline() == "ready"
    pub.json_line(timeout=120)
    code, _, err = rec.finish(timeout=120)
    assert code == 0, err


@pytest.mark.parametrize("original_time", [False, True], ids=["now", "original-time"])
def test_a_replay_publishes_the_recorded_changes_again_in_order(
    feed: str, other_feed: str, procs: List[Proc], tmp_path: Path, original_time: bool
) -> None:
    """Replayed into a new feed of the same fields, followed as it happens: each change has the
    recorded symbol, values, changed fields and sequence, in the recorded order; its time is the
    recorded one with --original-time, else the replay's."""
    path = str(tmp_path / "feed.pfr")
    n = 20_000
    record_changes(feed, path, n, procs)
    Publisher.create(other_feed, capacity=256, ring_size=1 << 16, fields=RECORDED).close()
    began = time.time_ns()
    with Subscriber(other_feed) as sub:
        follow = sub.updates(after=0, timeout=60)
        options = ["--original-time"] if original_time else []
        replayer = Proc(cli("replay", path, other_feed, "--as-fast-as-possible", "--end", *options))
        procs.append(replayer)
        replayed = list(follow)  # until the replay ends the feed
    code, _, err = replayer.finish(timeout=120)
    assert code == 0, err
    assert f"{n} changes of" in err and "Traceback" not in err
    assert all(isinstance(q, Quote) for q in replayed), [q for q in replayed if not isinstance(q, Quote)][:3]
    with F.Recording(path) as rec:
        recorded = list(rec.changes())
    assert len(recorded) == len(replayed) == n
    for old, new in zip(recorded, replayed):
        assert (new.symbol, new.fields, new.changed, new.seq) == (old.symbol, old.fields, old.changed, old.seq)
        if original_time:
            assert new.time_ns == old.time_ns
        else:
            assert new.time_ns >= began
    assert [q[:4] + q[5:] for q in replayed] == list(expected(n))


def test_a_replay_keeps_the_recorded_spacing_scaled_by_speed(other_feed: str, tmp_path: Path) -> None:
    """Changes recorded 10 ms apart replayed at --speed 2 into a feed the replay creates: they
    span at least 40% of the 200 ms they should (only a lower bound: a loaded machine is slower,
    never faster); every value is the recorded one."""
    path = tmp_path / "spaced.pfr"
    qt = quote_type(FIELDS)
    t0 = 1_764_380_000_000_000_000
    changes = [qt._build(f"S{k % 3}", (k + 0.5, k + 0.25, k), t0 + k * 10_000_000, k + 1, 7) for k in range(41)]
    enc = F.Encoder(FIELDS)
    head = F.Header("spaced", 12345, t0, t0, FIELDS)
    path.write_bytes(F.encode_header(head) + b"".join(enc.change(q) for q in changes))
    code, _, err = Proc(cli("replay", str(path), other_feed, "--speed", "2", "--end")).finish(timeout=60)
    assert code == 0, err
    with Subscriber(other_feed) as sub:
        replayed = [q for q in sub.updates(after=0, timeout=30) if isinstance(q, Quote)]
    assert [(q.symbol, q[1:4]) for q in replayed] == [(q.symbol, q[1:4]) for q in changes]
    span = (replayed[-1].time_ns - replayed[0].time_ns) / 1e9
    nominal = (changes[-1].time_ns - changes[0].time_ns) / 1e9 / 2
    assert span >= 0.4 * nominal, f"replayed in {span:.3f} s; the recording spans {nominal:.3f} s at speed 2"
