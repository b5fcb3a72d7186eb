"""The subscriber registry with real processes on real shared memory: who reads a feed, how far
behind, reclaimed when they die (pid and start time), hostile or broken registries never
breaking a subscriber, a tool or the publisher, and registration that can be turned off or
refused without a subscriber noticing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest
from conftest import Proc, cli, kill_hard, wait_until

from pricefeed import Publisher, Subscriber
from pricefeed._registry import layout as R
from pricefeed._registry import registry
from pricefeed._registry.procs import start_time

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the registry is Linux-only for now")

#: A subscriber process: registers (with a label, unless "-"), says "ready", then takes each
#: change, sleeping ``pause`` seconds on each, and prints how many it took when the feed ends.
FOLLOWER = textwrap.dedent(
    """
    import sys, time
    from pricefeed import Subscriber, Quote
    feed, label, pause, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    sub = Subscriber(feed, label=None if label == "-" else label, register=mode != "off")
    events = sub.updates(symbols=["A"] if mode == "some" else None, conflate=mode == "conflate")
    print("ready", sub.registered, sub.registry_reason, flush=True)
    n = 0
    for event in events:
        if isinstance(event, Quote):
            n += 1
            time.sleep(pause)
    print("done", n, flush=True)
    """
)


def follower(feed: str, label: str = "-", pause: float = 0.0, mode: str = "all") -> Proc:
    p = Proc([sys.executable, "-c", FOLLOWER, feed, label, str(pause), mode])
    line = p.readline(30)
    assert line.startswith("ready"), line
    return p


def readers(feed: str) -> Any:
    with Subscriber(feed, register=False) as sub:
        return sub.readers()


def entry_of(feed: str, pid: int) -> Any:
    got = [r for r in readers(feed).entries if r.pid == pid]
    return got[0] if got else None


def test_subscribers_are_listed_with_label_state_and_exact_counts(feed: str, procs: List[Proc]) -> None:
    with Publisher.create(feed, mode=0o644) as pub:
        a = follower(feed, "risk-1")
        b = follower(feed, "-", mode="some")
        procs += [a, b]
        for k in range(300):
            pub.publish("A" if k % 3 else "B", float(k))
        wait_until(
            lambda: (entry_of(feed, a.pid) or ()) and entry_of(feed, a.pid).delivered == 300, 20, "a to take all"
        )
        wait_until(
            lambda: (entry_of(feed, b.pid) or ()) and entry_of(feed, b.pid).delivered == 200, 20, "b to take A's"
        )
        wait_until(lambda: entry_of(feed, a.pid).state == "waiting", 20, "a to wait")
        ra, rb = entry_of(feed, a.pid), entry_of(feed, b.pid)
        assert (ra.label, ra.state, ra.seq, ra.lag, ra.lag_seconds, ra.gaps) == ("risk-1", "waiting", 300, 0, 0.0, 0)
        assert (rb.label, rb.filtered, rb.conflate, rb.lag) == (None, True, False, 0)
        assert rb.seq >= 299  # the last change of A, or later once it passed over B's
        pub.end()
        for p, n in ((a, 300), (b, 200)):
            assert p.readline(20) == f"done {n}"
            assert p.finish(20)[0] == 0
    # Both closed their subscriber: their entries are free again.
    assert readers(feed).entries == []


def test_a_slow_subscriber_shows_its_lag_in_changes_and_time(feed: str, procs: List[Proc]) -> None:
    with Publisher.create(feed) as pub:
        slow = follower(feed, "slow", pause=0.05)
        procs.append(slow)
        for k in range(100):
            pub.publish("A", float(k))
        time.sleep(0.3)
        r = entry_of(feed, slow.pid)
        assert r.state == "working"
        assert 0 < r.lag <= 100 and r.seq + r.lag == 100
        assert r.lag_seconds is not None and r.lag_seconds >= 0.2 and not r.lag_lower_bound
        out = subprocess.run(cli("status", feed), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        row = [line for line in out.stdout.splitlines() if line.split()[:1] == [str(slow.pid)]]
        assert row and "slow" in row[0] and "working" in row[0], out.stdout
        js = json.loads(
            subprocess.run(cli("status", feed, "--json"), capture_output=True, text=True, timeout=60).stdout
        )
        (s,) = [s for s in js["subscribers"] if s["pid"] == slow.pid]
        assert s["label"] == "slow" and s["lag"] > 0 and s["lag_seconds"] > 0
        assert js["registry"]["available"] is True and js["registry"]["capacity"] == R.SLOTS
        slow.kill()


def test_dead_subscribers_are_not_listed_and_their_entries_are_reclaimed(feed: str, procs: List[Proc]) -> None:
    with Publisher.create(feed):
        victims = [follower(feed, f"v{k}") for k in range(3)]
        procs += victims
        slots = {entry_of(feed, p.pid).slot for p in victims}
        for p in victims:
            kill_hard(p.pid)
            p.p.wait(timeout=10)
        found = readers(feed)
        assert found.entries == [] and found.dead == 3
        # The next subscribers take the dead ones' entries rather than new ones.
        again = [follower(feed, f"n{k}") for k in range(3)]
        procs += again
        assert {entry_of(feed, p.pid).slot for p in again} == slots
        assert readers(feed).dead == 0


def _forge(feed: str, slot: int, **words: int) -> None:
    """Write an entry into the feed's registry as its owner could (a test is the owner)."""
    with open(registry.path(feed), "r+b") as f:
        base = R.entry_offset(slot)
        for name, value in words.items():
            f.seek(base + R.E[name])
            f.write(value.to_bytes(8, "little"))


def _hold(feed: str, slots: Any, kind: int = 0) -> int:
    """Hold read locks on these entries from a descriptor of our own (as any reader of the
    registry could), returning the descriptor: closing it lets them go."""
    import fcntl
    import struct

    fd = os.open(registry.path(feed), os.O_RDONLY)
    for slot in slots:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhxxxxqqixxxx", kind or fcntl.F_RDLCK, 0,
                                                      R.entry_offset(slot), R.SLOT_SIZE, 0))  # fmt: skip
    return fd


def test_an_entry_lives_while_its_lock_is_held_whatever_its_pid_says(feed: str) -> None:
    with Publisher.create(feed):
        me = os.getpid()
        real = start_time(me) or 0
        _forge(feed, 5, gen=2, pid=me, start=real)  # this very process, but nobody holds the entry
        _forge(feed, 6, gen=2, pid=me, start=real)
        fd = _hold(feed, [6])
        try:
            found = readers(feed)
            assert [r.slot for r in found.entries] == [6] and found.dead == 1
            # A new subscriber takes the entry whose subscriber is gone before a free one.
            with Subscriber(feed) as sub:
                assert sub.registered and sub._reg is not None and sub._reg.slot == 5
        finally:
            os.close(fd)


@pytest.mark.skipif(
    getattr(os, "geteuid", lambda: -1)() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)"
)
def test_a_subscriber_in_another_pid_namespace_is_seen_alive(feed: str, procs: List[Proc]) -> None:
    """Its pid means nothing here (it is pid 1 there): its entry's lock still says it lives, and
    nobody takes its entry."""
    with Publisher.create(feed) as pub:
        # --kill-child: killing unshare kills the follower too (pid 1 in there ignores SIGTERM).
        inside = Proc(["unshare", "--pid", "--kill-child", "--mount-proc", sys.executable, "-c", FOLLOWER, feed,
                       "boxed", "0", "all"])  # fmt: skip
        procs.append(inside)
        assert inside.readline(30).startswith("ready True")
        (boxed,) = [r for r in readers(feed).entries if r.label == "boxed"]
        assert boxed.pid == 1
        with Subscriber(feed, label="host") as sub:
            assert sub._reg is not None and sub._reg.slot != boxed.slot
        pub.publish("A", 1.0)
        wait_until(lambda: [r.delivered for r in readers(feed).entries if r.label == "boxed"] == [1], 20, "delivery")
        assert readers(feed).dead == 0
        pub.end()
        assert inside.readline(20) == "done 1"
        assert inside.finish(20)[0] == 0


def test_a_forked_child_never_frees_or_writes_its_parents_entry(feed: str) -> None:
    with Publisher.create(feed), Subscriber(feed, label="parent") as sub:
        assert sub._reg is not None
        slot = sub._reg.slot
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child: drop everything, as an exiting child does
            try:
                sub.close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        (entry,) = readers(feed).entries
        assert (entry.slot, entry.label, entry.pid) == (slot, "parent", os.getpid())
        with Subscriber(feed) as other:
            assert other._reg is not None and other._reg.slot != slot


def test_a_registry_that_more_users_may_write_than_the_feed_is_refused_and_renewed(feed: str) -> None:
    Publisher.create(feed, mode=0o644).close()
    os.chmod(registry.path(feed), 0o666)  # anyone could shrink it, and kill registered subscribers
    with Subscriber(feed) as sub:
        assert not sub.registered and "lets more users write it" in (sub.registry_reason or "")
    with Publisher.open(feed), Subscriber(feed) as sub:  # the next publisher makes it right
        assert stat.S_IMODE(os.stat(registry.path(feed)).st_mode) == 0o644
        assert sub.registered


def test_removing_a_feed_leaves_a_newer_feeds_registry_alone(feed: str) -> None:
    with Publisher.create(feed) as pub:
        registry.remove(feed, pub.geometry.incarnation ^ 2)  # an older incarnation's removal, late
        assert os.path.exists(registry.path(feed))
        registry.remove(feed, pub.geometry.incarnation)
        assert not os.path.exists(registry.path(feed))


def test_hostile_entries_are_counted_and_never_break_a_tool_or_a_subscriber(feed: str) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        real = start_time(os.getpid()) or 0
        me = os.getpid()
        _forge(feed, 0, gen=2, pid=me, start=real, state=7)  # no such state
        _forge(feed, 1, gen=2, pid=me, start=real, seq=10**6)  # a change the feed never made
        _forge(feed, 2, gen=2, pid=me, start=real, label_len=200)  # longer than the field
        _forge(feed, 3, gen=2, pid=1 << 40, start=0)  # no such pid on any system
        _forge(feed, 4, gen=2, pid=me, start=real, label_len=3)
        with open(registry.path(feed), "r+b") as f:
            f.seek(R.entry_offset(4) + R.E["label"])
            f.write(b"\x1b[2J")  # a terminal escape as a label
        _forge(feed, 7, gen=3, pid=me, start=real)  # being claimed: nobody's yet
        found = readers(feed)
        assert found.entries == [] and found.invalid == 5
        # Random bytes over every entry: still no exception, and every subscriber still works.
        with open(registry.path(feed), "r+b") as f:
            f.seek(R.HEADER_SIZE)
            f.write(os.urandom(R.SLOTS * R.SLOT_SIZE))
        found = readers(feed)
        assert found.available and all(r.label is None or r.label.isprintable() for r in found.entries)
        out = subprocess.run(cli("status", feed), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        with Subscriber(feed) as sub:
            it = sub.updates(timeout=10)
            pub.publish("A", 2.0)
            assert next(it).price == 2.0


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("magic", "no registry magic"),
        ("version", "layout version 9"),
        ("slots", "damaged"),
        ("incarnation", "earlier feed of this name"),
        ("truncate", "damaged"),
        ("fifo", "not a regular file"),
        ("symlink", "cannot open the registry"),
        ("missing", "has no registry"),
        ("readonly", None),
    ],
)
def test_a_broken_registry_leaves_subscribers_working_unregistered_and_tools_saying_why(
    feed: str, damage: str, reason: str
) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        where = registry.path(feed)
        if damage in ("magic", "version", "slots", "incarnation"):
            value = {"magic": 1, "version": 9, "slots": 1 << 20, "incarnation": 12345}[damage]
            with open(where, "r+b") as f:
                f.seek(R.H[damage])
                f.write(value.to_bytes(8, "little"))
        elif damage == "truncate":
            os.truncate(where, 10)
        elif damage in ("fifo", "symlink", "missing"):
            os.unlink(where)
            if damage == "fifo":
                os.mkfifo(where)
            elif damage == "symlink":
                os.symlink("/dev/zero", where)
        elif damage == "readonly":
            os.chmod(where, 0o400)
        started = time.monotonic()
        if damage == "readonly":
            # Root may write whatever the mode says: check as another process would, via a
            # read-only mapping (a subscriber that may not write it, in the other-user test).
            assert oct(stat.S_IMODE(os.stat(where).st_mode)) == "0o400"
            return
        with Subscriber(feed) as sub:
            assert time.monotonic() - started < 5  # never blocks on the name (a FIFO included)
            assert not sub.registered and reason in (sub.registry_reason or "")
            found = sub.readers()
            assert not found.available and reason in (found.reason or "")
            it = sub.updates(timeout=10)
            pub.publish("A", 2.0)
            assert next(it).price == 2.0
        out = subprocess.run(cli("status", feed, "--json"), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert reason in json.loads(out.stdout)["registry"]["reason"]
    if damage in ("fifo", "symlink"):
        registry.remove(feed)


def test_a_publisher_taking_over_keeps_the_registry_and_renews_a_stale_one(feed: str) -> None:
    Publisher.create(feed).close()
    with Subscriber(feed, label="stays") as sub, Publisher.open(feed):
        assert [r.label for r in sub.readers().entries] == ["stays"]  # kept, with its entry
    os.unlink(registry.path(feed))  # as a feed made by a publisher that knows no registry
    with Subscriber(feed) as sub:
        assert not sub.registered
    with Publisher.open(feed), Subscriber(feed) as sub:  # the next publisher gives it one
        assert sub.registered


def test_a_recreated_feed_gets_a_new_registry_and_its_followers_register_again(feed: str) -> None:
    pub = Publisher.create(feed)
    with Subscriber(feed, label="follower") as sub:
        it = sub.updates(timeout=10)
        pub.publish("A", 1.0)
        assert next(it).price == 1.0
        pub.unlink()
        pub.close()
        assert not os.path.exists(registry.path(feed))
        with Publisher.create(feed) as again:
            again.publish("A", 5.0)
            events = [type(next(it)).__name__ for _ in range(2)]  # publisher gone, then Reset
            assert events == ["PublisherGone", "Reset"]
            assert next(it).price == 5.0  # the new feed's value
            assert sub.registered
            with Subscriber(feed, register=False) as look:
                assert [r.label for r in look.readers().entries] == ["follower"]


def test_registration_can_be_turned_off(feed: str, procs: List[Proc]) -> None:
    with Publisher.create(feed) as pub:
        off = follower(feed, "x", mode="off")
        procs.append(off)
        with Subscriber(feed, register=False) as sub:
            assert not sub.registered and sub.registry_reason == "registration turned off"
        p = Proc(cli("subscribe", feed, "--no-register", "--count", "1"))
        procs.append(p)
        wait_until(lambda: Subscriber(feed, register=False).readers().entries == [] or True, 5, "nothing")
        time.sleep(0.5)
        pub.publish("A", 1.0)
        assert p.finish(20)[0] == 0
        assert readers(feed).entries == []


def test_a_label_must_be_printable_text(feed: str) -> None:
    Publisher.create(feed).close()
    with pytest.raises(Exception, match="label must be 1 to 64 bytes of printable text"):
        Subscriber(feed, label="a\nb")
    out = subprocess.run(cli("subscribe", feed, "--label", "x" * 65), capture_output=True, text=True, timeout=60)
    assert out.returncode == 7 and "label must be" in out.stderr and "Traceback" not in out.stderr


def test_a_full_registry_leaves_a_subscriber_unregistered_and_working(feed: str) -> None:
    with Publisher.create(feed) as pub:
        fd = _hold(feed, range(R.SLOTS))  # anyone who may read it can hold every entry
        try:
            started = time.monotonic()
            with Subscriber(feed) as sub:
                assert time.monotonic() - started < 5  # nothing is waited for
                assert not sub.registered and "full" in (sub.registry_reason or "")
                it = sub.updates(timeout=10)
                pub.publish("A", 1.0)
                assert next(it).price == 1.0
        finally:
            os.close(fd)
        fd = _hold(feed, range(10))
        try:
            with Subscriber(feed) as sub:  # held entries are passed over, not waited for
                assert sub._reg is not None and sub._reg.slot == 10
        finally:
            os.close(fd)


HAMMER = textwrap.dedent(
    """
    import os, sys
    from pricefeed import Subscriber
    from pricefeed._registry import layout as R
    feed, rounds = sys.argv[1], int(sys.argv[2])
    wrong = registered = 0
    for _ in range(rounds):
        with Subscriber(feed) as sub:
            reg = sub._reg
            if reg is None:
                continue
            registered += 1
            for _ in range(20):  # nobody else may take our entry while we hold it
                if reg.cell[R.W["pid"]] != os.getpid():
                    wrong += 1
    print(registered, wrong, flush=True)
    """
)


def test_hammer_concurrent_claims_never_share_an_entry(feed: str, procs: List[Proc]) -> None:
    with Publisher.create(feed):
        workers = [Proc([sys.executable, "-c", HAMMER, feed, "150"]) for _ in range(6)]
        procs += workers
        total = 0
        for p in workers:
            registered, wrong = map(int, p.readline(120).split())
            assert wrong == 0
            total += registered
            assert p.finish(30)[0] == 0
        assert total == 6 * 150  # nobody was ever turned away: a held entry is passed over, not waited for
        found = readers(feed)
        assert found.entries == [] and found.invalid == 0


@pytest.fixture(scope="module")
def other_user() -> Iterator[Any]:
    from _users import make_other_user

    yield from make_other_user()


def test_a_subscriber_that_may_not_write_the_registry_works_unregistered(feed: str, other_user: Any) -> None:
    from _users import as_user

    with Publisher.create(feed, mode=0o644) as pub:
        pub.publish("A", 1.0)
        assert stat.S_IMODE(os.stat(registry.path(feed)).st_mode) == 0o644  # the feed's own mode

        def look() -> Dict[str, Any]:
            with Subscriber(feed) as sub:
                it = sub.updates(timeout=20, snapshot=True)
                first = next(it)
                return {
                    "registered": sub.registered,
                    "reason": sub.registry_reason,
                    "price": first.price,
                    "seen": [r.pid for r in sub.readers().entries],
                }

        done: Dict[str, Any] = {}
        t = threading.Thread(target=lambda: done.update(as_user(other_user, look)), daemon=True)
        t.start()
        t.join(60)
        assert not t.is_alive()
        assert done["registered"] is False and "no permission to write" in done["reason"]
        assert done["price"] == 1.0 and done["seen"] == []  # and it may read who is registered


def test_an_entry_left_half_claimed_by_a_killed_claimer_is_taken_again(feed: str) -> None:
    with Publisher.create(feed):
        # A claimer that took entry 0's lock and died with its identity half-written (odd gen).
        child = subprocess.Popen(
            [sys.executable, "-c", "import fcntl,os,struct,sys,time; fd=os.open(sys.argv[1],os.O_RDWR); "
             "fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack('hhxxxxqqixxxx', fcntl.F_WRLCK, 0, 64, 256, 0)); "
             "os.pwrite(fd, (1).to_bytes(8,'little') + (999999).to_bytes(8,'little'), 64); "
             "print('held', flush=True); time.sleep(60)", registry.path(feed)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "held"
            assert readers(feed).entries == []  # half-written: nobody's yet
            with Subscriber(feed) as sub:  # its lock is held: passed over
                assert sub._reg is not None and sub._reg.slot != 0
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
        with Subscriber(feed) as sub:  # the lock died with it: the entry is taken again
            assert sub.registered and sub._reg is not None and sub._reg.slot == 0


def test_the_recorder_registers_under_its_name(feed: str, procs: List[Proc], tmp_path: Any) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        recorder = Proc(cli("record", feed, str(tmp_path / "rec.pfr")))
        procs.append(recorder)
        wait_until(lambda: [r.label for r in readers(feed).entries] == ["pricefeed record"], 20, "the recorder")
        pub.end()
        assert recorder.finish(30)[0] == 0
    assert readers(feed).entries == []
