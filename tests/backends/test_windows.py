"""The Windows wake-up registry (pricefeed/_wait/_windows.py), with real processes: entries of
dead subscribers are reclaimed, a subscriber that does not take its wake-ups blocks nobody,
and a full registry makes subscribers poll instead of failing. Runs in the Wine lane."""

from __future__ import annotations

import sys
import textwrap
import time
from typing import List

import pytest
from conftest import Proc, kill_hard, wait_until

from pricefeed import Publisher, Subscriber

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="the named-event registry exists on Windows only")

# Follows the feed and prints each change's sequence; "busy" makes it stop reading (without
# closing) after the first change, as a subscriber stuck in its own work would.
_FOLLOW = textwrap.dedent(
    """
    import sys, time
    from pricefeed import Quote, Subscriber
    feed, mode = sys.argv[1], sys.argv[2]
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=60)
        print("ready", flush=True)
        for ev in it:
            if isinstance(ev, Quote):
                print(ev.seq, flush=True)
                if mode == "busy":
                    time.sleep(120)
    """
)


def _registry_pids(feed: str) -> List[int]:
    from pricefeed._roles.announce import HEADER_INDEX, wake_key
    from pricefeed._wait import _windows as W

    with Subscriber(feed) as sub:
        space = wake_key(feed, sub.geometry.incarnation, HEADER_INDEX).space
    reg = W._acquire_registry(space)
    try:
        return [int(reg.q[W._Registry.entry_word(i)]) for i in range(W.ENTRIES)]
    finally:
        W._release_registry(reg)


def _follower(feed: str, mode: str, procs: List[Proc]) -> Proc:
    p = Proc([sys.executable, "-c", _FOLLOW, feed, mode])
    procs.append(p)
    assert p.readline(timeout=60) == "ready"
    return p


def test_a_dead_subscribers_entry_is_reclaimed(feed: str, procs: List[Proc]) -> None:
    with Publisher.create(feed) as pub:
        first = _follower(feed, "all", procs)
        wait_until(lambda: first.pid in _registry_pids(feed), 30, "the subscriber to register")
        entry = _registry_pids(feed).index(first.pid)
        kill_hard(first.pid)
        first.p.wait(timeout=30)
        second = _follower(feed, "all", procs)
        wait_until(lambda: second.pid in _registry_pids(feed), 30, "the new subscriber to register")
        assert _registry_pids(feed).index(second.pid) == entry, "the dead subscriber's entry was not reused"
        for seq in range(1, 21):
            pub.publish("A", float(seq))
            assert second.readline(timeout=30) == str(seq)


def test_a_subscriber_that_stops_taking_wake_ups_blocks_nobody(feed: str, procs: List[Proc]) -> None:
    with Publisher.create(feed) as pub:
        busy = _follower(feed, "busy", procs)
        others = [_follower(feed, "all", procs) for _ in range(3)]
        pub.publish("A", 1.0)
        assert busy.readline(timeout=30) == "1"  # and now it sleeps with its entry claimed
        for p in others:
            assert p.readline(timeout=30) == "1"
        for seq in range(2, 52):
            pub.publish("A", float(seq))
            time.sleep(0.002)
        for p in others:
            assert [p.readline(timeout=30) for _ in range(2, 52)] == [str(s) for s in range(2, 52)]


def test_a_full_registry_makes_subscribers_poll_not_fail(feed: str, procs: List[Proc]) -> None:
    from pricefeed._roles.announce import HEADER_INDEX, wake_key
    from pricefeed._wait import _windows as W

    with Publisher.create(feed) as pub:
        space = wake_key(feed, pub.geometry.incarnation, HEADER_INDEX).space
        reg = W._acquire_registry(space)
        taken = []
        try:
            while True:  # claim every entry, as 256 live subscribers would
                entry = reg.claim([0, 0, 0, 0])
                if entry is None:
                    break
                taken.append(entry)
            assert len(taken) == W.ENTRIES
            late = _follower(feed, "all", procs)
            for seq in range(1, 11):
                pub.publish("A", float(seq))
                assert late.readline(timeout=30) == str(seq)
            assert late.pid not in _registry_pids(feed)
        finally:
            for entry in taken:
                entry.release()
            W._release_registry(reg)


def test_any_spelling_of_the_feed_name_gets_the_same_wake_ups(feed: str, procs: List[Proc]) -> None:
    """Windows file names ignore case and kernel object names do not: a subscriber that spells
    the name differently must still be woken by events (counted as wake-ups), not only find
    the changes at its quarter-second watch."""
    from conftest import worker

    with Publisher.create(feed.upper()) as pub:
        sub = Proc(worker("count_wakeups", feed.lower(), "A"))
        procs.append(sub)
        assert sub.readline(timeout=60) == "ready"
        time.sleep(0.3)
        for k in range(1, 11):
            pub.publish("A", float(k))
            time.sleep(0.05)
        pub.end()
        report = sub.json_line(timeout=60)
    assert report["prices"] == [float(k) for k in range(1, 11)]
    assert report["wakeups"] >= 10, report
