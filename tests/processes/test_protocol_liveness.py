"""Liveness: who publishes, and what a subscriber is told of it (protocol.md, "Liveness").

A publisher that closes cleanly says so in the header (``publisher_state``); one that dies
cannot. Subscribers are told of a departure as clean or not, of a takeover only when the
publisher before it did not close cleanly (it may have repaired), and nothing of what
happened before they attached. Real processes, real shared memory, SIGKILL for a death; the
same tests on both Python paths (``impl``), and the C header through pfcat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, List, Optional

import pytest
from conftest import Proc, access_modes_of, blocked_in_futex, cli, kill_hard, peek, poke, slot_at, wait_until, worker
from test_protocol_reader import CBuilds, env_of, run_c

from pricefeed import FeedBusy, Publisher, PublisherGone, PublisherRestarted, Quote, Subscriber, Timeout
from pricefeed._protocol import Implementation
from pricefeed._protocol import layout as L
from pricefeed._protocol.liveness import Seen, closed_cleanly, takeover_news

#: Every test here runs on each implementation of the protocol (see the impl fixture).
pytestmark = [
    pytest.mark.usefixtures("impl"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-specific: reads /proc and writes /dev/shm"),
]

HOLDS, CLOSED = L.PUBLISHER_HOLDS, L.PUBLISHER_CLOSED


@pytest.fixture(scope="module")
def pfcat(tmp_path_factory: pytest.TempPathFactory) -> CBuilds:
    return CBuilds(tmp_path_factory.mktemp("pfcat"))


def state(epoch: int, what: int, handovers: int) -> L.PublisherState:
    return L.PublisherState(epoch, what, handovers)


# -- the rules as data: what a reader makes of the two words ------------------------------------------
@pytest.mark.parametrize(
    "seen, epoch, word, final, news",
    [
        # No takeover since: nothing to say, whatever the word.
        (Seen(3, 1), 3, state(3, CLOSED, 1), False, None),
        (Seen(3, 1), 3, state(4, HOLDS, 2), True, None),
        # The first publisher of a feed took nothing over.
        (Seen(0, 0), 1, state(1, HOLDS, 0), False, (0, Seen(1, 0))),
        # A handover after a clean close; and one after a death (no handover counted).
        (Seen(1, 0), 2, state(2, HOLDS, 1), False, (0, Seen(2, 1))),
        (Seen(1, 0), 2, state(2, HOLDS, 0), False, (1, Seen(2, 0))),
        # Missed while busy: three takeovers, all clean; three with one death among them.
        (Seen(1, 5), 4, state(4, CLOSED, 8), False, (0, Seen(4, 8))),
        (Seen(1, 5), 4, state(4, HOLDS, 7), False, (1, Seen(4, 7))),
        # A writer that does not keep the word took over: its takeover is never counted clean.
        (Seen(2, 1), 3, state(2, CLOSED, 1), False, (1, Seen(3, 1))),
        # A takeover caught between its two stores: wait for it...
        (Seen(1, 0), 2, state(3, HOLDS, 2), False, None),
        # ...unless nobody holds the lock (it died there): then err towards a restart.
        (Seen(1, 0), 2, state(3, HOLDS, 2), True, (0, Seen(2, 2))),
        (Seen(1, 0), 2, state(3, HOLDS, 1), True, (1, Seen(2, 1))),
        # The counter wraps: only differences count.
        (Seen(7, (1 << L.HANDOVERS_BITS) - 1), 8, state(8, HOLDS, 0), False, (0, Seen(8, 0))),
    ],
)
def test_takeover_news(seen: Seen, epoch: int, word: L.PublisherState, final: bool, news: Any) -> None:
    assert takeover_news(seen, epoch, word, final) == news


def test_a_clean_departure_is_the_current_epochs_close() -> None:
    assert closed_cleanly(4, state(4, CLOSED, 0))
    assert not closed_cleanly(4, state(4, HOLDS, 0)), "it died, or exited without closing"
    assert not closed_cleanly(5, state(4, CLOSED, 0)), "a writer that does not keep the word came after"
    assert not closed_cleanly(0, state(0, 0, 0)), "no publisher ever"


def test_publisher_gone_keeps_its_positional_fields() -> None:
    assert PublisherGone(7, 12) == (7, 12, False) and PublisherGone(7, 12).clean is False


# -- real publishers, real subscribers -------------------------------------------------------------------
def subscriber(procs: List[Proc], feed: str, impl: Implementation, *args: str) -> Proc:
    """A blocked `pricefeed subscribe --json` on the given Python path."""
    p = Proc(cli("subscribe", feed, "--json", "--timeout", "60", *args), env=env_of(impl))
    procs.append(p)
    wait_until(lambda: blocked_in_futex(p.pid), 30, "the subscriber to block")
    return p


def lines_until_ended(p: Proc) -> List[dict]:
    out = []
    while True:
        line = p.json_line()
        if line.get("event") == "ended":
            code, rest, err = p.finish()
            assert code == 0 and not rest.strip(), (code, rest, err)
            return out
        out.append(line)


def shape(lines: List[dict]) -> List[Any]:
    """Events by name (with their clean flag), quotes as (symbol, price)."""
    return [(d["event"], d.get("clean")) if "event" in d else (d["symbol"], d["price"]) for d in lines]


def hold(procs: List[Proc], feed: str) -> Proc:
    holder = Proc(worker("hold_publisher", feed), stdin=subprocess.PIPE)
    procs.append(holder)
    assert holder.readline() == "ready"
    return holder


def die(holder: Proc) -> None:
    """SIGKILL, and wait until it is dead: its lock goes with its last descriptor, at exit."""
    kill_hard(holder.pid)
    holder.p.wait(timeout=10)


def test_a_clean_close_is_clean_and_the_next_publisher_no_restart(
    feed: str, impl: Implementation, procs: List[Proc]
) -> None:
    Publisher.create(feed).close()
    sub = subscriber(procs, feed, impl)
    with Publisher.open(feed) as pub:
        pub.publish("A", 1.0)
        assert shape([sub.json_line()]) == [("A", 1.0)], "no event for a departure before it started"
    gone = sub.json_line()
    assert gone == {"event": "publisher_gone", "pid": os.getpid(), "head_seq": 1, "clean": True}
    with Publisher.open(feed) as pub:
        pub.publish("A", 2.0)
        pub.end()
    assert shape(lines_until_ended(sub)) == [("A", 2.0)], "a takeover after a clean close is no restart"


def test_a_killed_publisher_is_gone_uncleanly_then_its_successor_restarts(
    feed: str, impl: Implementation, procs: List[Proc]
) -> None:
    Publisher.create(feed).close()
    sub = subscriber(procs, feed, impl)
    holder = hold(procs, feed)
    kill_hard(holder.pid)
    gone = sub.json_line()
    assert gone == {"event": "publisher_gone", "pid": holder.pid, "head_seq": 0, "clean": False}
    with Publisher.open(feed) as pub:
        restarted = sub.json_line()
        assert restarted == {"event": "publisher_restarted", "pid": os.getpid(), "epoch": 3, "head_seq": 0}
        pub.publish("A", 1.0)
        pub.end()
    assert shape(lines_until_ended(sub)) == [("A", 1.0)]


@pytest.mark.parametrize("how", ["closed", "killed"])
def test_a_late_subscriber_hears_nothing_of_the_past(
    feed: str, impl: Implementation, procs: List[Proc], how: str
) -> None:
    """Started on a feed whose publisher has already gone: no PublisherGone (it may ask
    status()). A takeover after it attached is news as usual: a restart if the one before died."""
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
    if how == "killed":
        die(hold(procs, feed))
    with Subscriber(feed) as sub:
        status = sub.status()
        assert (status.publisher_alive, status.publisher_clean) == (False, how == "closed")
        it = sub.updates(timeout=1.0)  # four wait slices, each a look at the lock
        with pytest.raises(Timeout):
            event = next(it)
            pytest.fail(f"told of the past: {event}")
        it = sub.updates(timeout=5)
        with Publisher.open(feed) as pub:
            pub.publish("A", 2.0)
            got: List[Any] = [next(it)]
            if how == "killed":
                got.append(next(it))
        assert [_kind(e) for e in got] == ([PublisherRestarted] if how == "killed" else []) + [Quote]
        assert sub.status().publisher_clean is True


def test_c_late_subscriber_hears_nothing_of_the_past(feed: str, pfcat: CBuilds, procs: List[Proc]) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
    die(hold(procs, feed))
    code, got = run_c(pfcat("pfcat"), "follow", feed, "--timeout", "1")
    assert code == 12 and [d.get("error") for d in got] == ["PF_ETIMEOUT"], got
    assert run_c(pfcat("pfcat"), "check", feed)[1][0]["publisher_alive"] == 0


def test_ten_one_shot_publishes_give_ten_changes_and_no_restart(feed: str) -> None:
    """Each `pricefeed publish FEED X=n` opens, publishes and closes: ten in a row are ten
    changes for a subscriber, and no restart (a clean departure between them may be told)."""
    env = dict(os.environ)  # with the implementation under test (see the impl fixture)
    subprocess.run(cli("create", feed), check=True, timeout=60, env=env)
    sub = subprocess.Popen(cli("subscribe", feed, "--json", "--count", "10", "--timeout", "60"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        wait_until(lambda: blocked_in_futex(sub.pid), 30, "the subscriber to block")
        for n in range(1, 11):
            subprocess.run(cli("publish", feed, f"X={n}"), check=True, timeout=60, env=env)
        out, err = sub.communicate(timeout=60)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
    assert sub.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["symbol"], d["price"], d["seq"]) for d in lines if "event" not in d] == [
        ("X", float(n), n) for n in range(1, 11)
    ]
    events = [d for d in lines if "event" in d]
    assert all(d["event"] == "publisher_gone" and d["clean"] for d in events), events


def test_takeovers_missed_while_busy_are_judged_together(feed: str, impl: Implementation, procs: List[Proc]) -> None:
    """A subscriber that did not look while several publishers came and went is told of a
    restart once if any of them followed a death, and not at all if none did."""
    Publisher.create(feed).close()
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=5)
        for k in range(3):  # three clean handovers, none seen as they happen
            with Publisher.open(feed) as pub:
                pub.publish("A", float(k))
        assert [_kind(next(it)) for _ in range(3)] == [Quote] * 3
        with Publisher.open(feed) as pub:
            pub.publish("A", 10.0)
        die(hold(procs, feed))
        with Publisher.open(feed) as pub:  # after the death: its takeover is a restart
            pub.publish("A", 11.0)
        got = [next(it) for _ in range(3)]
    # Told when it next looks, before the changes it had not read yet.
    assert [_kind(e) for e in got] == [PublisherRestarted, Quote, Quote]
    assert (got[1].price, got[2].price) == (10.0, 11.0)


def test_a_writer_that_does_not_keep_the_word_is_reported_as_before(feed: str, impl: Implementation) -> None:
    """publisher_state is 0, or stale, from writers older than it: their takeovers are
    reported as restarts and their departures as not clean, as readers that do not know the
    word report them. This is why the layout stays version 2."""
    Publisher.create(feed).close()
    before = peek(feed, L.OFF_PUBLISHER_STATE, "Q")[0]
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=5)
        pub = Publisher.open(feed)
        poke(feed, L.OFF_PUBLISHER_STATE, "Q", before)  # as an older writer: the word untouched
        pub.publish("A", 1.0)
        restarted = next(it)
        assert isinstance(restarted, PublisherRestarted) and restarted.epoch == 2
        assert next(it).price == 1.0
        pub.close()
        poke(feed, L.OFF_PUBLISHER_STATE, "Q", before)  # and its close leaves it so
        gone = next(it)
        assert isinstance(gone, PublisherGone) and gone.clean is False
        assert sub.status().publisher_clean is False


def test_a_close_that_leaves_a_slot_half_written_is_not_clean(feed: str, impl: Implementation) -> None:
    """A clean close is checked on the segment, not trusted: a slot left odd keeps the word at
    "holds", so the departure is not clean and the next publisher (which repairs) restarts."""
    Publisher.create(feed).close()
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=5)
        pub = Publisher.open(feed)
        pub.publish("A", 1.0)
        assert next(it).price == 1.0
        (lock,) = peek(feed, slot_at(feed, 0), "Q")
        poke(feed, slot_at(feed, 0), "Q", lock + 1)
        pub.close()
        gone = next(it)
        assert isinstance(gone, PublisherGone) and gone.clean is False
        with Publisher.open(feed) as again:
            assert again.repaired == 1
            assert isinstance(next(it), PublisherRestarted)


# -- the liveness probe ------------------------------------------------------------------------------------
def test_the_probe_works_through_a_read_only_descriptor_and_leaves_the_lock_alone(
    feed: str, pfcat: CBuilds, procs: List[Proc]
) -> None:
    """layout.md, section 10: flock looks at no access mode, so a reader probes through its own
    O_RDONLY descriptor (read permission is all it needs); the shared lock it may get is given
    back at once, so the publisher's exclusive lock is never weakened or kept from it."""
    Publisher.create(feed).close()
    holder = hold(procs, feed)
    with Subscriber(feed) as sub:
        assert sub.status().publisher_alive
        modes = access_modes_of(feed)
        assert modes and set(modes) == {os.O_RDONLY}, f"the subscriber's descriptors are not all read-only: {modes}"
        for _ in range(200):
            assert sub.status().publisher_alive
        assert run_c(pfcat("pfcat"), "check", feed)[1][0]["publisher_alive"] == 1
        with pytest.raises(FeedBusy):
            Publisher.open(feed)  # the holder's lock is whole
        die(holder)
        assert not sub.status().publisher_alive
        assert run_c(pfcat("pfcat"), "check", feed)[1][0]["publisher_alive"] == 0
        for _ in range(50):
            sub.status()
        with Publisher.open(feed):  # probes left no lock behind
            pass


# -- a feed created anew -----------------------------------------------------------------------------------
def test_a_feed_created_anew_is_a_reset_then_its_values(feed: str, impl: Implementation) -> None:
    """protocol.md, "Re-created feeds": when a wait slice passes and the name leads to another
    segment, the subscriber maps the new one and yields Reset, then the new feed's values."""
    from pricefeed import Reset
    from pricefeed._segment import segment_path

    with Publisher.create(feed) as pub:
        pub.publish("OLD", 1.0)
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=10)
        os.unlink(segment_path(feed))  # behind pricefeed's back: no end
        with Publisher.create(feed) as pub:
            pub.publish("NEW", 2.0)
            first: Optional[Any] = next(it)
            assert isinstance(first, Reset) and first.incarnation == pub.geometry.incarnation
            q = next(it)
            assert (q.symbol, q.price, q.seq) == ("NEW", 2.0, 1)


def _kind(event: object) -> type:
    """The event's class; Quote for a quote of any schema (each schema has its own class)."""
    return Quote if isinstance(event, Quote) else type(event)
