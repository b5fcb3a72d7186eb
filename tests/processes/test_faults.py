"""Fault injection with real processes: publishers and subscribers killed with SIGKILL at random
moments, feeds removed and re-created under running subscribers.

Every wait has a timeout, so a hang fails the test instead of stalling the run. The slow suite
(--slow) repeats the kill test 1,000 times."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import Proc, blocked_in_futex, cli, kill_hard, posix_only, slot_at, wait_until, worker

from pricefeed import Publisher, Subscriber, remove
from pricefeed._segment import segment_path

#: Every test here runs on each implementation of the protocol (see the impl fixture).
pytestmark = pytest.mark.usefixtures("impl")


def _check_churned(rows: list, head: int, final: Dict[str, float]) -> Dict[str, int]:
    """The property of a follower of a feed whose publishers were killed over and over."""
    seqs = [r[1] for r in rows if r[0] == "c"]
    assert seqs == sorted(set(seqs)), "a sequence number delivered twice, or out of order"
    missed = sum(r[1] for r in rows if r[0] == "g")
    assert len(seqs) + missed == head, f"{len(seqs)} delivered + {missed} missed != {head} changes"
    republished = 0
    for _, seq, symbol, price, time_ns in (r for r in rows if r[0] == "c"):
        intended = int(price - 0.5)
        assert price == intended + 0.5 and symbol == f"S{intended % 37}", f"torn or wrong: {symbol}={price} at {seq}"
        if time_ns in (intended, 0):
            assert intended == seq, f"change {seq} carries the value of change {intended}"
        else:
            # A price a dead publisher left in its slot, announced by the next one under the
            # next number and the time of the repair. The number the dead one meant for it was
            # never announced (it may even be above the head reached, if a batch was cut short).
            assert time_ns > 10**18, (seq, symbol, price, time_ns)
            republished += 1
    view = {r[2]: r[3] for r in rows if r[0] == "c"}
    assert view == final, "a follower's final view differs from the feed's"
    events = [r[1] for r in rows if r[0] == "e"]
    return {
        "delivered": len(seqs),
        "missed": missed,
        "republished": republished,
        "restarts": events.count("publisher_restarted"),
    }


def _kill_publishers(feed: str, kills: int, tmp_path: Path, procs: List[Proc], seed: int) -> None:
    rng = random.Random(seed)
    Publisher.create(feed, capacity=64, ring_size=512).close()
    outs = [tmp_path / "fast.json", tmp_path / "slow.json"]
    subs = [Proc(worker("follow", feed, outs[0])), Proc(worker("follow", feed, outs[1], 300, 20))]
    procs.extend(subs)
    for s in subs:
        assert s.readline() == "ready"
    repaired = 0
    for k in range(kills):
        pub = Proc(worker("churn_publish", feed, k))
        procs.append(pub)
        repaired += pub.json_line(timeout=60)["repaired"]
        time.sleep(rng.uniform(0.0, 0.03))
        kill_hard(pub.pid)
        pub.p.wait(timeout=30)
        procs.remove(pub)
    with Publisher.open(feed) as last:
        repaired += last.repaired
        last.end()
        head = last.head
    with Subscriber(feed) as sub:
        final = {s: q.price for s, q in sub.snapshot().items()}
    for s, out in zip(subs, outs):
        s.json_line(timeout=120)
        stats = _check_churned(json.loads(out.read_text()), head, final)
        assert stats["restarts"] >= 1
    print(f"{kills} kills, {head} changes, {repaired} slots found half-written and repaired")


def test_publisher_killed_at_random_50_times(feed: str, tmp_path: Path, procs: List[Proc]) -> None:
    """SIGKILL a publisher publishing at full rate 50 times. A new one takes over at once each
    time, repairing what was left mid-write; the subscribers never hang, never see a torn or
    wrong value or a number twice, and account for every change."""
    _kill_publishers(feed, 50, tmp_path, procs, seed=1)


@pytest.mark.slow
def test_publisher_killed_at_random_1000_times(feed: str, tmp_path: Path, procs: List[Proc]) -> None:
    _kill_publishers(feed, 1000, tmp_path, procs, seed=2)


def test_blocked_subscribers_learn_of_publisher_death_within_a_second(feed: str, procs: List[Proc]) -> None:
    holder = Proc(worker("hold_publisher", feed), stdin=subprocess.PIPE)
    procs.append(holder)
    assert holder.readline() == "ready"
    subs = [Proc(cli("subscribe", feed, "--json", "--timeout", "60")) for _ in range(3)]
    procs.extend(subs)
    wait_until(lambda: all(blocked_in_futex(s.pid) for s in subs), 30, "subscribers to block")
    killed = time.monotonic()
    kill_hard(holder.pid)
    latencies = []
    for s in subs:
        event = s.json_line(timeout=10)
        latencies.append(time.monotonic() - killed)
        assert event == {"event": "publisher_gone", "pid": holder.pid, "head_seq": 0, "clean": False}
    assert max(latencies) < 1.0, f"publisher_gone took {max(latencies):.3f} s"
    status = json.loads(
        subprocess.run(cli("status", feed, "--json"), capture_output=True, text=True, timeout=30).stdout
    )
    assert (status["state"], status["publisher_alive"], status["publisher_pid"]) == (
        "publisher gone",
        False,
        holder.pid,
    )
    with Publisher.open(feed) as pub:
        pub.publish("A", 1.0)
        for s in subs:
            assert s.json_line(timeout=10)["event"] == "publisher_restarted"
            assert s.json_line(timeout=10)["symbol"] == "A"


def test_killed_subscribers_affect_nothing(feed: str, tmp_path: Path, procs: List[Proc]) -> None:
    """30 subscribers killed at random moments (mid-wait, mid-read, mid-iteration) while a
    publisher publishes 300,000 changes and another subscriber follows them."""
    from conftest import check_follower

    rng = random.Random(3)
    Publisher.create(feed, capacity=64, ring_size=4096).close()
    out = tmp_path / "follower.json"
    follower = Proc(worker("follow", feed, out))
    procs.append(follower)
    assert follower.readline() == "ready"
    kinds = ["follow", "wait_one", "hammer_read"]
    victims = []
    for i in range(30):
        kind = kinds[i % 3]
        args = {"follow": ("follow", feed, tmp_path / f"v{i}.json"), "wait_one": ("wait_one", feed),
                "hammer_read": ("hammer_read", feed, 10**9)}[kind]  # fmt: skip
        victims.append(Proc(worker(*args)))
    procs.extend(victims)
    for v in victims:
        assert v.readline(timeout=60) == "ready"
    log = tmp_path / "log.json"
    pub = Proc(worker("exactly_publish", feed, 300_000, 9, log))
    procs.append(pub)
    assert pub.readline() == "ready"
    rng.shuffle(victims)
    killed_while_publishing = 0
    for v in victims:
        time.sleep(rng.uniform(0, 0.05))
        killed_while_publishing += pub.p.poll() is None
        v.kill()
    pub.json_line(timeout=120)
    follower.json_line(timeout=120)
    published = json.loads(log.read_text())
    check_follower(json.loads(out.read_text()), published["log"], published["final"], 300_000)
    assert killed_while_publishing >= 10, killed_while_publishing


def _rows(p: Proc, n: int) -> List[dict]:
    """The next n JSON lines, passing over publisher_gone: the feeds here are made by a
    publisher that then leaves, which subscribers report when they notice."""
    rows: List[dict] = []
    while len(rows) < n:
        row = p.json_line(timeout=10)
        if row.get("event") != "publisher_gone":
            rows.append(row)
    return rows


def _follower_and_quitter(feed: str, procs: List[Proc]) -> tuple[Proc, Proc]:
    """Two blocked CLI subscribers: one follows a re-created feed, one exits on it."""
    follower = Proc(cli("subscribe", feed, "--json", "--timeout", "60"))
    quitter = Proc(cli("subscribe", feed, "--json", "--timeout", "60", "--exit-on-reset"))
    procs.extend([follower, quitter])
    wait_until(lambda: blocked_in_futex(follower.pid) and blocked_in_futex(quitter.pid), 30, "subscribers to block")
    return follower, quitter


@posix_only
def test_feed_recreated_under_running_subscribers(feed: str, procs: List[Proc]) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("OLD", 1.0)
    follower, quitter = _follower_and_quitter(feed, procs)
    remove(feed)
    # rm ended the old feed: both finish, as after any end.
    assert follower.finish(timeout=10)[0] == 0 and quitter.finish(timeout=10)[0] == 0
    with Publisher.create(feed) as pub:
        pub.publish("OLD", 1.0)
    follower, quitter = _follower_and_quitter(feed, procs)
    # This time the name is unlinked behind pricefeed's back (no end), and a new feed made.
    os.unlink(segment_path(feed))
    with Publisher.create(feed) as pub:
        pub.publish("NEW", 2.0)
        rows = _rows(follower, 2)
        assert rows[0]["event"] == "reset" and rows[0]["incarnation"] == pub.geometry.incarnation
        assert (rows[1]["symbol"], rows[1]["price"], rows[1]["seq"]) == ("NEW", 2.0, 1)
        pub.publish("NEW", 3.0)
        assert _rows(follower, 1)[0]["price"] == 3.0
        code, _, err = quitter.finish(timeout=10)
        assert code == 13 and "was removed and created anew" in err and "Traceback" not in err
        pub.end()
    assert follower.finish(timeout=10)[0] == 0


def test_wait_for_a_feed_that_does_not_exist_yet(feed: str, procs: List[Proc]) -> None:
    sub = Proc(cli("subscribe", feed, "--wait", "--json", "--count", "1", "--timeout", "60"))
    procs.append(sub)
    wait_until(lambda: "waiting for feed" in sub.stderr, 60, "the subscriber to say it waits")
    time.sleep(0.1)
    assert sub.p.poll() is None, sub.stderr
    with Publisher.create(feed) as pub:
        time.sleep(0.1)
        pub.publish("A", 1.0)
        code, out, err = sub.finish(timeout=30)
    assert code == 0, err
    assert [json.loads(line)["symbol"] for line in out.splitlines() if "symbol" in line] == ["A"]
    with pytest.raises(FileNotFoundError):
        Subscriber("never-" + feed[:20], wait=0.2)


def test_a_reader_sleeps_on_a_stuck_writer_and_recovers_when_it_dies(feed: str, procs: List[Proc]) -> None:
    """A slot left odd while its publisher is alive (descheduled mid-write, say): get() sleeps
    rather than spins. Once the publisher is dead, get() gives the slot's last announced value
    at once instead of waiting for a write nobody will finish."""
    import struct
    import threading

    from pricefeed._protocol import layout as L

    with Publisher.create(feed, ring_size=16) as pub:
        pub.publish("A", 1.0)
        pub.publish("A", 2.0)
    holder = Proc(worker("hold_publisher", feed), stdin=subprocess.PIPE)
    procs.append(holder)
    assert holder.readline() == "ready"
    with open(segment_path(feed), "r+b") as f:  # as if it stopped inside a write of A
        f.seek(slot_at(feed, 0))
        (lock,) = struct.unpack("<Q", f.read(8))
        f.seek(slot_at(feed, 0))
        f.write(struct.pack("<Q", lock + 1))
        f.seek(slot_at(feed, 0, L.SLOT_VALUES))
        f.write(struct.pack("<d", 3.0))
    got: list = []
    with Subscriber(feed) as sub:
        t = threading.Thread(target=lambda: got.append(sub["A"]), daemon=True)
        cpu = time.process_time()
        t.start()
        time.sleep(1.0)
        spent = time.process_time() - cpu  # user + system time of this process
        assert t.is_alive() and not got, "the reader should still be waiting for the live writer"
        assert spent < 0.5, f"the waiting reader burned {spent:.2f} s of CPU in 1 s"
        holder.kill()
        t.join(timeout=5)
        assert got and (got[0].price, got[0].seq) == (2.0, 2), got
