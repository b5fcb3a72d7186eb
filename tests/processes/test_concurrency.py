"""Real processes on a real segment with the real futex: the properties that make the product.

Each test checks a property over many events (never torn, exactly once, in order, nothing lost
silently) and bounds every wait, so a hang fails instead of stalling the run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import Proc, blocked_in_futex, check_follower, wait_until, worker

from pricefeed import Publisher, Subscriber
from pricefeed import _protocol as protocol

#: Every test here runs on each implementation of the protocol (see the impl fixture).
pytestmark = pytest.mark.usefixtures("impl")


def _hammer(feed: str, procs: List[Proc], reader: str, reads: int, ring_size: int) -> List[dict]:
    """Two reader processes of kind `reader`, attached first, then a publisher rewriting two
    slots a million times as fast as it can (hammer_publish); the readers' reports."""
    Publisher.create(feed, capacity=4, ring_size=ring_size).close()
    readers = [Proc(worker(reader, feed, reads)) for _ in range(2)]
    procs.extend(readers)
    for r in readers:
        assert r.readline() == "ready"
    pub = Proc(worker("hammer_publish", feed, 1_000_000))
    procs.append(pub)
    assert pub.readline() == "ready"
    results = [r.json_line(timeout=240) for r in readers]
    pub.json_line(timeout=240)
    return results


def test_torn_read_hammer(feed: str, procs: List[Proc]) -> None:
    """Two reader processes check at least two million reads in all, for as long as a
    publisher rewrites the same two slots as fast as it can (a million times): no read may
    mix two writes (price != time_ns)."""
    results = _hammer(feed, procs, "hammer_read", 1_000_000, ring_size=1024)
    for res in results:
        assert res["reads"] >= 1_000_000
        assert res["torn"] == 0, res
        assert res["backwards"] == 0, res
        # The readers really raced the writer: they saw many different values.
        assert res["distinct"] > 1000, res


def test_torn_record_hammer(feed: str, procs: List[Proc]) -> None:
    """Ring records read at the head of a 4-record ring that a publisher rewrites as fast as
    it can: two readers check about two million reads; each is the change asked for, or is
    reported lapped, never a mix of two changes."""
    results = _hammer(feed, procs, "hammer_records", 500_000, ring_size=4)
    for res in results:
        assert res["torn"] == 0, res
        assert res["got"] > 1000 and res["lapped"] > 100, f"the readers did not race the writer: {res}"


def test_exactly_once_three_subscribers_one_lapped(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    """100,000 changes (repeats mixed in) to 3 subscriber processes; one is slow enough to be
    lapped. No duplicate, increasing order, every change delivered or counted in a gap, and
    every final view equal to the publisher's."""
    total = 100_000
    Publisher.create(feed, capacity=64, ring_size=1024).close()
    outs = [tmp_path / f"sub{i}.json" for i in range(3)]
    subs = [
        Proc(worker("follow", feed, outs[0])),
        Proc(worker("follow", feed, outs[1])),
        Proc(worker("follow", feed, outs[2], 500)),  # pauses 50 ms every 500 items
    ]
    procs.extend(subs)
    for s in subs:
        assert s.readline() == "ready"
    log_path = tmp_path / "log.json"
    pub = Proc(worker("exactly_publish", feed, total, 7, log_path))
    procs.append(pub)
    assert pub.readline() == "ready"
    summary = pub.json_line(timeout=120)
    assert summary["changes"] == total and summary["repeats"] > 1000
    published = json.loads(log_path.read_text())
    assert [e[0] for e in published["log"]] == list(range(1, total + 1))
    stats = []
    for s, out in zip(subs, outs):
        s.json_line(timeout=180)
        stats.append(check_follower(json.loads(out.read_text()), published["log"], published["final"], total))
    assert stats[2]["gaps"] >= 1, f"the slow subscriber was never lapped: {stats[2]}"


def test_no_gap_when_ring_holds_everything(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    """With a ring larger than the whole run nobody can be lapped: every change is delivered."""
    total = 20_000
    Publisher.create(feed, capacity=64, ring_size=32768).close()
    outs = [tmp_path / f"sub{i}.json" for i in range(2)]
    subs = [Proc(worker("follow", feed, out)) for out in outs]
    procs.extend(subs)
    for s in subs:
        assert s.readline() == "ready"
    log_path = tmp_path / "log.json"
    pub = Proc(worker("exactly_publish", feed, total, 11, log_path))
    procs.append(pub)
    assert pub.readline() == "ready"
    pub.json_line(timeout=120)
    published = json.loads(log_path.read_text())
    for s, out in zip(subs, outs):
        s.json_line(timeout=120)
        st = check_follower(json.loads(out.read_text()), published["log"], published["final"], total)
        assert st == {"delivered": total, "gaps": 0, "missed": 0}


def test_conflating_subscriber_never_twice(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    """A slow conflating subscriber gets fewer items, each the true value of its change, in
    increasing order, and ends with the publisher's final view."""
    total = 30_000
    Publisher.create(feed, capacity=64, ring_size=256).close()
    out = tmp_path / "conf.json"
    sub = Proc(worker("follow", feed, out, 200, 50, 1))
    procs.append(sub)
    assert sub.readline() == "ready"
    log_path = tmp_path / "log.json"
    pub = Proc(worker("exactly_publish", feed, total, 5, log_path))
    procs.append(pub)
    assert pub.readline() == "ready"
    pub.json_line(timeout=120)
    sub.json_line(timeout=120)
    published = json.loads(log_path.read_text())
    by_seq = {seq: (sym, price) for seq, sym, price in published["log"]}
    rows = json.loads(out.read_text())
    assert not [r for r in rows if r[0] == "g"], "conflate mode reports no gaps"
    rows = [r for r in rows if r[0] == "c"]
    seqs = [r[1] for r in rows]
    assert seqs == sorted(set(seqs))
    assert all(by_seq[r[1]] == (r[2], r[3]) for r in rows)
    assert len(rows) < total / 2, "a slow conflating subscriber should have skipped most values"
    view = {r[2]: r[3] for r in rows}
    assert view == published["final"]


@pytest.mark.parametrize("count", [50])
def test_fan_out_every_blocked_subscriber_wakes(feed: str, procs: List[Proc], count: int) -> None:
    """50 subscriber processes blocked in FUTEX_WAIT; one change wakes each of them once."""
    pub = Publisher.create(feed, capacity=4, ring_size=64)
    try:
        subs = [Proc(worker("wait_one", feed)) for _ in range(count)]
        procs.extend(subs)
        for s in subs:
            assert s.readline(timeout=60) == "ready"
        wait_until(lambda: all(blocked_in_futex(s.pid) for s in subs), 60, "all subscribers to block in futex")
        assert pub.publish("X", 42.5)
        for s in subs:
            got = s.json_line(timeout=30)
            assert (got["seq"], got["symbol"], got["price"]) == (1, "X", 42.5)
            code, rest, err = s.finish(timeout=30)
            assert code == 0 and rest.strip() == "", err
    finally:
        pub.close()


def test_subscribers_wake_only_for_their_own_symbols(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    """20 subscriber processes, each following one symbol of its own, blocked; 400 changes
    spread over those symbols and 20 others. Each subscriber gets exactly its symbol's
    changes, and all of them together wake at most twice per change that concerns them
    (one futex word shared by everyone would wake each of them 400 times)."""
    import random

    from pricefeed._wait import select

    if not select().can_wait_many():
        pytest.skip("no multi-word wait on this kernel (Linux < 5.16): every change wakes every subscriber")
    n = 20
    with Publisher.create(feed, capacity=64, ring_size=1024) as pub:
        pub.publish_many({f"S{i}": 0.0 for i in range(2 * n)})  # known symbols: subscribers can target them
        subs = [Proc(worker("count_wakeups", feed, f"S{i}")) for i in range(n)]
        procs.extend(subs)
        for s in subs:
            assert s.readline(timeout=60) == "ready"
        wait_until(lambda: all(blocked_in_futex(s.pid) for s in subs), 60, "subscribers to block")
        rng = random.Random(8)
        sent: Dict[str, List[float]] = {f"S{i}": [] for i in range(2 * n)}
        for k in range(400):
            symbol = f"S{rng.randrange(2 * n)}"
            pub.publish(symbol, float(k + 1))
            sent[symbol].append(float(k + 1))
            time.sleep(0.001)
        pub.end()
    concerning = sum(len(sent[f"S{i}"]) for i in range(n))
    total_wakeups = 0
    for i, s in enumerate(subs):
        got = s.json_line(timeout=60)
        assert got["prices"] == sent[f"S{i}"], f"S{i}: got {got['prices']}, sent {sent[f'S{i}']}"
        total_wakeups += got["wakeups"]
    # +n: the end of the feed wakes everyone once.
    assert total_wakeups <= 2 * concerning + n, f"{total_wakeups} wake-ups for {concerning} changes that concern them"


def test_a_conflating_subscriber_is_given_items_while_the_feed_never_goes_quiet(
    feed: str, procs: List[Proc], impl: protocol.Implementation
) -> None:
    """A publisher flat out (batches of 100 changes, millions a second) never lets the feed go
    quiet, so a conflating subscriber that waited for a quiet moment to give an item would give
    none until the end: it gives one at least every 256 changes, each a symbol's newest."""
    with Publisher.create(feed, capacity=256) as pub:
        pub.publish("S0", 0.0)
    with Subscriber(feed) as sub:
        p = Proc(worker("flood_publish", feed, 2))
        procs.append(p)
        assert p.json_line(30) == {"started": True}
        during, last = 0, {}
        for q in sub.updates(conflate=True, timeout=30):
            if not sub.ended:
                during += 1
            assert q.price > last.get(q.symbol, -1.0), f"{q.symbol} went back from {last[q.symbol]} to {q.price}"
            last[q.symbol] = q.price
        made = p.json_line(30)["changes"]
    assert during >= 100, f"only {during} items while the publisher made {made} changes"
    assert last == {f"S{k}": last["S0"] for k in range(100)} and last["S0"] == made // 100
