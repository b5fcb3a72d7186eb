"""asyncio: ``aupdates``, ``aget`` and ``asnapshot`` keep every promise of their blocking twins,
never block the loop, and every async subscription of a loop shares one waiter.

Each mode of the loop's waiter runs (``PRICEFEED_LOOP_WAIT`` caps it: the io_uring ring where
the machine has it, the one waiting thread, the executor), on asyncio's loop and on uvloop's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import LINUX, Proc, check_follower, unlink_feed, wait_until, worker

from pricefeed import Gap, InvalidInput, Publisher, PublisherGone, Quote, Reset, Subscriber, Timeout
from pricefeed._roles import loopwait
from pricefeed._wait import select

try:
    import uvloop  # noqa: F401

    HAVE_UVLOOP = True
except ImportError:
    HAVE_UVLOOP = False


def _modes() -> List[str]:
    """The waiter's modes this machine can run."""
    backend = select()
    modes = ["executor"]
    if backend.futex_words and backend.can_wait_many():
        modes.append("thread")
    ring = backend.ring()
    if ring is not None:
        ring.close()
        modes.append("ring")
    return modes


MODES = _modes()
needs_uvloop = pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed (pip install 'pricefeed[async]')")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(loopwait.ENV, request.param)
    return str(request.param)


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


# -- the promises of updates(), through aupdates() ----------------------------------------------
@pytest.mark.parametrize("loop", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_exactly_once_lapped_and_conflating(feed: str, procs: List[Proc], tmp_path: Path, mode: str, loop: str) -> None:
    """30,000 changes (repeats mixed in) to three async followers in processes of their own: one
    keeps up, one is lapped on purpose, one conflates. No duplicate, increasing order, every
    change delivered or counted in a gap, the values true, the final views equal; and the loop
    kept ticking while they waited."""
    if loop == "uvloop" and mode == "executor" and len(MODES) > 1:
        pytest.skip("uvloop runs with the modes of the kernel wait; the executor mode runs on asyncio's loop")
    total = 30_000
    Publisher.create(feed, capacity=64, ring_size=1024).close()
    outs = [tmp_path / f"sub{i}.json" for i in range(3)]
    env = {loopwait.ENV: mode}
    subs = [
        Proc(worker("afollow", feed, outs[0], 0, 0, 0, loop), env=env),
        Proc(worker("afollow", feed, outs[1], 500, 50, 0, loop), env=env),  # pauses 50 ms every 500 items
        Proc(worker("afollow", feed, outs[2], 200, 50, 1, loop), env=env),  # conflates, pausing
    ]
    procs.extend(subs)
    for s in subs:
        assert s.readline() == "ready"
    log_path = tmp_path / "log.json"
    pub = Proc(worker("exactly_publish", feed, total, 7, log_path))
    procs.append(pub)
    assert pub.readline() == "ready"
    pub.json_line(timeout=120)
    published = json.loads(log_path.read_text())
    reports = [s.json_line(timeout=180) for s in subs]
    stats = [
        check_follower(json.loads(out.read_text()), published["log"], published["final"], total) for out in outs[:2]
    ]
    assert stats[1]["gaps"] >= 1, f"the slow follower was never lapped: {stats[1]}"
    by_seq = {seq: (sym, price) for seq, sym, price in published["log"]}
    rows = json.loads(outs[2].read_text())
    assert not [r for r in rows if r[0] == "g"], "a conflating follower reports no gaps"
    seqs = [r[1] for r in rows if r[0] == "c"]
    assert seqs == sorted(set(seqs)) and all(by_seq[r[1]] == (r[2], r[3]) for r in rows if r[0] == "c")
    final: Dict[str, float] = {}
    for r in rows:
        if r[0] == "c":
            final[r[2]] = r[3]
    assert final == published["final"]
    for report in reports:
        # The loop's 10 ms ticker ran while the subscription waited: it never blocked the loop.
        assert report["ticks"] >= report["seconds"] * 100 * 0.3, report


def test_on_fields_snapshot_symbols_and_timeout(feed: str, mode: str) -> None:
    """on=, symbols, snapshot and timeout behave as in updates(), checked over 3,000 changes of a
    four-field feed published from another thread while the loop awaits."""
    pub = Publisher.create(feed, fields=[("bid", 1), ("ask", 1), ("bsz", 2), ("asz", 2)], ring_size=8192)
    pub.publish("ES", bid=1.0, ask=2.0)
    pub.publish("NQ", bid=5.0, ask=6.0)
    import random
    import threading

    rng = random.Random(3)
    log: List[tuple] = []

    def publish() -> None:
        for i in range(3000):
            sym = rng.choice(["ES", "NQ", "CL"])
            fields = rng.choice([{"bid": float(i)}, {"ask": float(i)}, {"bsz": i}, {"bid": float(i), "asz": i}])
            if pub.publish(sym, **fields):
                log.append((pub.head, sym, tuple(fields)))
            if i % 300 == 0:
                time.sleep(0.002)

    async def main() -> Dict[str, Any]:
        with Subscriber(feed) as sub:
            bids = sub.aupdates(["ES", "CL"], on=["bid"], snapshot=True, timeout=0.5)
            everything = sub.aupdates(timeout=0.5)
            first = await bids.__anext__()  # the snapshot is read at the first item
            t = threading.Thread(target=publish)
            t.start()

            async def take(it: Any) -> List[Quote]:
                out = []
                try:
                    async for q in it:
                        out.append(q)
                except Timeout:
                    pass
                return out

            got = await asyncio.gather(take(bids), take(everything))
            t.join(timeout=30)
            return {"bids": [first, *got[0]], "all": got[1]}

    got = run(main())
    pub.close()
    head_at_start = 2
    assert [q.symbol for q in got["bids"][:1]] == ["ES"], "snapshot first: ES (CL did not exist yet)"
    wanted = [s for s, sym, f in log if sym in ("ES", "CL") and "bid" in f]
    assert [q.seq for q in got["bids"][1:]] == wanted
    assert (
        [q.seq for q in got["all"]]
        == [s for s, _, _ in log]
        == list(range(head_at_start + 1, head_at_start + len(log) + 1))
    )


def test_bad_arguments_refused_at_the_call(feed: str) -> None:
    Publisher.create(feed).close()
    with Subscriber(feed) as sub:
        with pytest.raises(InvalidInput, match="timeout"):
            sub.aupdates(timeout=-1)
        with pytest.raises(InvalidInput, match="after"):
            sub.aupdates(after=10**9)


def test_after_resumes_from_a_saved_cursor(feed: str, mode: str) -> None:
    """aupdates(after=N) gives the changes after N that the ring holds; one saved too long ago
    is a Gap and the catch-up, as for a follower that fell behind."""
    with Publisher.create(feed, ring_size=8) as pub:
        for i in range(5):
            pub.publish("A", float(i))

        async def take(after: int, n: int) -> List[Any]:
            with Subscriber(feed) as sub:
                out = []
                async for ev in sub.aupdates(after=after, timeout=0.3):
                    out.append(ev)
                    if len(out) == n:
                        break
                return out

        got = run(take(2, 3))
        assert [q.seq for q in got] == [3, 4, 5]
        for i in range(20):
            pub.publish("B", float(i))
        got = run(take(2, 2))
        assert isinstance(got[0], Gap) and got[0].first_seq == 3
        assert {q.symbol for q in got[1:]} <= {"A", "B"}


def test_fault_events_reach_async_followers(feed: str, procs: List[Proc], mode: str) -> None:
    """A publisher killed hard is PublisherGone; the feed removed and created anew is Reset."""
    Publisher.create(feed).close()
    holder = Proc(worker("hold_publisher", feed), stdin=-1)
    procs.append(holder)
    assert holder.readline() == "ready"

    async def main() -> List[str]:
        seen: List[str] = []
        with Subscriber(feed) as sub:
            async for ev in sub.aupdates(timeout=20):
                seen.append(type(ev).__name__)
                if isinstance(ev, PublisherGone):
                    unlink_feed(feed)
                    with Publisher.create(feed) as again:
                        again.publish("X", 1.0)
                if isinstance(ev, Reset) or len(seen) > 10:
                    break
        return seen

    async def kill_later() -> List[str]:
        task = asyncio.ensure_future(main())
        await asyncio.sleep(0.3)
        holder.kill()
        return await task

    seen = run(kill_later())
    assert seen[:1] == ["PublisherGone"] and "Reset" in seen


def test_aget_and_asnapshot(feed: str) -> None:
    with Publisher.create(feed) as pub:
        pub.publish_many([("A", 1.5), ("B", 2.5)])

        async def main() -> Any:
            with Subscriber(feed) as sub:
                return await sub.aget("A"), await sub.aget("nope"), await sub.asnapshot()

        a, missing, snap = run(main())
    assert a.price == 1.5 and missing is None and {s: q.price for s, q in snap.items()} == {"A": 1.5, "B": 2.5}


def test_aopen_waits_for_the_feed_without_blocking_the_loop(feed: str) -> None:
    """aopen(wait=True) lets the loop run while the feed does not exist, then follows it from its
    creation (the first change is not missed); with a number it gives up with FeedNotFound."""
    from pricefeed import FeedNotFound

    async def main() -> Any:
        ticks = 0

        async def create_later() -> None:
            nonlocal ticks
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks += 1
            with Publisher.create(feed) as pub:
                pub.publish("A", 1.0)

        maker = asyncio.ensure_future(create_later())
        sub = await Subscriber.aopen(feed, wait=True)
        with sub:
            first = await sub.aupdates(timeout=5).__anext__()
        await maker
        with pytest.raises(FeedNotFound):
            await Subscriber.aopen(feed + "-none", wait=0.1)
        return ticks, first

    ticks, first = run(main())
    assert ticks == 20 and (first.symbol, first.price, first.seq) == ("A", 1.0, 1)


# -- one waiter per loop, and nothing left behind --------------------------------------------------
def _many(feed: str, n: int, mode: str, loop: str, ending: str = "return") -> Proc:
    return Proc(worker("async_many", feed, n, loop, ending), stdin=-1, env={loopwait.ENV: mode})


def _ask(p: Proc, command: str) -> Any:
    p.stdin.write(command + "\n")
    p.stdin.flush()
    return p.json_line(timeout=30)


def test_no_wait_is_left_armed_for_nobody(feed: str, mode: str) -> None:
    """A subscription whose slices time out, then is cancelled and closed, leaves no wait armed
    in the loop's waiter (a ring wait left behind would be mistaken for one of a later
    subscription mapped at the same address); another subscription keeps the waiter alive."""
    if mode != "ring":
        pytest.skip("only the ring keeps waits of its own")

    async def main() -> None:
        with Publisher.create(feed) as pub, Subscriber(feed) as keeper:
            pub.publish("A", 1.0)
            kept = asyncio.ensure_future(keeper.aupdates(["A"]).__anext__())
            for _ in range(3):
                with Subscriber(feed) as sub:
                    task = asyncio.ensure_future(sub.aupdates(["B"]).__anext__())
                    await asyncio.sleep(0.6)  # two watch slices pass with nothing new
                    task.cancel()
                    await asyncio.wait([task], timeout=5)
            await asyncio.sleep(0.05)
            waiter = next(iter(loopwait._waiters.values()))[1]
            assert len(waiter._sleepers) == 1, waiter._sleepers  # the keeper's, nobody else's
            pub.publish("A", 2.0)
            assert (await asyncio.wait_for(kept, 5)).price == 2.0

    run(main())


@pytest.mark.skipif(not LINUX, reason="threads, descriptors and CPU time are read from /proc")
@pytest.mark.parametrize("loop", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_hundred_subscriptions_one_waiter(feed: str, procs: List[Proc], mode: str, loop: str) -> None:
    """100 async subscriptions in one loop: at most one thread of pricefeed's (none with the
    ring), no CPU while idle, each change to its subscription exactly once; cancelling one
    leaves the others working; ending the loop gives back every thread, descriptor and mapping."""
    if mode == "executor":
        pytest.skip("the executor mode is a thread per sleeping subscription by design (docs/protocol.md)")
    n = 100
    with Publisher.create(feed, capacity=256) as pub:
        pub.publish_many([(f"S{k}", 0.5) for k in range(n)])
        p = _many(feed, n, mode, loop)
        procs.append(p)
        assert p.readline(timeout=60) == "ready"
        first = _ask(p, "look")
        assert first["ours"] == ([] if mode == "ring" else ["pricefeed-loop-waiter"]), first
        assert first["modes"] == [mode], first  # one waiter for the hundred
        time.sleep(1.0)
        idle = _ask(p, "look")
        assert idle["cpu"] - first["cpu"] <= 5, f"{idle['cpu'] - first['cpu']} ticks of CPU in 1 s idle"
        for round_ in range(3):
            for k in range(n):
                pub.publish(f"S{k}", float(round_ * 1000 + k))
        wait_until(lambda: all(len(v) == 3 for v in _ask(p, "got").values()), 30, "every change delivered")
        got = _ask(p, "got")
        for k in range(n):
            assert [price for _, price in got[str(k)]] == [float(r * 1000 + k) for r in range(3)]
        assert _ask(p, "cancel 7") == {"cancelled": True}
        pub.publish("S7", 9.0)
        pub.publish("S8", 9.0)
        wait_until(lambda: len(_ask(p, "got")["8"]) == 4, 30, "the others still work after a cancel")
        assert len(_ask(p, "got")["7"]) == 3
        p.stdin.write("end\n")
        p.stdin.flush()
        final = p.json_line(timeout=30)
    after, before = final["after"], final["before"]
    assert after["ours"] == [] and after["rings"] == 0 and after["feed_maps"] == 0, final
    assert after["fds"] == before["fds"] and after["threads"] == before["threads"], final


@pytest.mark.skipif(not LINUX, reason="threads, descriptors and mappings are read from /proc")
@pytest.mark.parametrize("loop", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_ctrl_c_leaves_nothing_behind(feed: str, procs: List[Proc], mode: str, loop: str) -> None:
    """Ctrl-C (SIGINT) while 20 subscriptions sleep: the loop ends, and every thread,
    descriptor and mapping they held is given back."""
    with Publisher.create(feed, capacity=64) as pub:
        pub.publish_many([(f"S{k}", 0.5) for k in range(20)])
        p = _many(feed, 20, mode, loop, ending="interrupt")
        procs.append(p)
        assert p.readline(timeout=60) == "ready"
        p.stdin.write("end\n")
        p.stdin.flush()
        assert p.json_line() == {"waiting": "ctrl-c"}
        time.sleep(0.2)
        os.kill(p.pid, signal.SIGINT)
        final = p.json_line(timeout=30)
    assert final["interrupted"] is True
    after, before = final["after"], final["before"]
    assert after["ours"] == [] and after["rings"] == 0 and after["feed_maps"] == 0, final
    assert after["fds"] == before["fds"] and after["threads"] == before["threads"], final


def test_waiter_shared_and_released_in_process(feed: str, mode: str) -> None:
    """In one process: one waiter per loop whatever the number of subscriptions, gone with the
    last; a subscription closed under a sleeping iterator ends it with an error, not a hang."""

    async def main() -> None:
        with Publisher.create(feed) as pub:
            pub.publish("A", 1.0)
            subs = [Subscriber(feed) for _ in range(5)]
            its = [s.aupdates(timeout=5) for s in subs]
            tasks = [asyncio.ensure_future(it.__anext__()) for it in its]
            await asyncio.sleep(0.1)
            assert len(loopwait._waiters) == 1
            waiter = next(iter(loopwait._waiters.values()))[1]
            assert waiter.users == 5 and waiter.mode == mode
            pub.publish("A", 2.0)
            got = await asyncio.gather(*tasks)
            assert [q.seq for q in got] == [2] * 5
            for it in its:
                await it.aclose()  # type: ignore[attr-defined]
            assert loopwait._waiters == {}
            for s in subs:
                s.close()

    run(main())
    assert not any(t.startswith("pricefeed-loop") for t in _thread_names())


def _thread_names() -> List[str]:
    import threading

    return [t.name for t in threading.enumerate()]


def test_cancelled_sleep_forgets_its_wait(feed: str, mode: str) -> None:
    """A task cancelled while its subscription sleeps, 200 times (20 in executor mode, whose
    cancelled sleep holds its thread to the end of its slice: 0.25 s a round): each later sleep
    still wakes, and the waiter's bookkeeping does not grow."""
    rounds = 20 if mode == "executor" else 200

    async def main() -> None:
        with Publisher.create(feed) as pub, Subscriber(feed) as sub:
            pub.publish("A", 0.0)
            it = sub.aupdates(timeout=5)
            for i in range(rounds):
                task = asyncio.ensure_future(it.__anext__())
                await asyncio.sleep(0)
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, StopAsyncIteration):
                    pass
                it = sub.aupdates(timeout=5)
                nxt = asyncio.ensure_future(it.__anext__())
                await asyncio.sleep(0)
                pub.publish("A", float(i + 1))
                q = await asyncio.wait_for(nxt, 5)
                assert q.price == float(i + 1)
                await it.aclose()  # type: ignore[attr-defined]
                it = sub.aupdates(timeout=5)
            await it.aclose()  # type: ignore[attr-defined]
            assert loopwait._waiters == {}

    run(main())


def test_unknown_loop_wait_mode_is_refused(feed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pricefeed import UnsupportedPlatform

    Publisher.create(feed).close()
    monkeypatch.setenv(loopwait.ENV, "spin")

    async def main() -> None:
        with Subscriber(feed) as sub:
            async for _ in sub.aupdates(timeout=0.1):
                pass

    with pytest.raises(UnsupportedPlatform, match="PRICEFEED_LOOP_WAIT"):
        run(main())


def test_a_busy_feed_lets_the_loop_run_other_tasks(feed: str) -> None:
    """Changes that come faster than they are taken never let aupdates() sleep (here: the
    snapshot of 3,000 symbols); it must still give the loop's other tasks a turn every
    YIELD_EVERY items, or a consumer's own sender and network client starve."""
    from pricefeed._roles.subscriber import YIELD_EVERY

    with Publisher.create(feed, capacity=4096) as pub:
        pub.publish_many({f"S{k}": float(k) for k in range(3000)})

        async def main() -> List[int]:
            ticks = 0
            stop = False

            async def other_task() -> None:
                nonlocal ticks
                while not stop:
                    ticks += 1
                    await asyncio.sleep(0)

            other = asyncio.ensure_future(other_task())
            seen: List[int] = []
            with Subscriber(feed) as sub:
                async for _q in sub.aupdates(snapshot=True, timeout=5):
                    seen.append(ticks)
                    if len(seen) == 3000:
                        break
            stop = True
            await asyncio.wait_for(other, 5)
            return seen

        seen = asyncio.run(asyncio.wait_for(main(), 30))
    runs, run = [], 1
    for a, b in zip(seen, seen[1:]):
        run = run + 1 if a == b else 1
        runs.append(run)
    assert max(runs) <= YIELD_EVERY + 1, f"the loop's other task waited {max(runs)} items"
