"""Programs the tests run as real processes: python tests/_workers.py NAME ARGS...

Each prints "ready" on stdout once it is attached, then does its work and reports with one
JSON line (or a JSON file where the output is large).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from pricefeed import Gap, Publisher, Quote, Subscriber
from pricefeed import _protocol as protocol
from pricefeed._values import EVENT_NAMES


@contextmanager
def feed_reader(name: str) -> Iterator[protocol.reader.FeedReader]:
    """The protocol's reader of feed ``name``, on a read-only mapping (as a subscriber maps it),
    of the implementation this process runs: for tests that look at words no role shows."""
    from pricefeed._segment.attach import attach

    seg, geometry = attach(name, writable=False)
    reader = protocol.implementation().Reader(seg.view, geometry, seg.address)
    try:
        yield reader
    finally:
        reader.release()
        seg.close()


def hammer_publish(feed: str, count: str) -> None:
    """Publish `count` values whose halves must agree: price == time_ns, for two symbols."""
    with Publisher.open(feed) as pub:
        print("ready", flush=True)
        for k in range(1, int(count) + 1):
            pub.publish("A" if k & 1 else "B", float(k), time_ns=k)
        pub.end()
    print(json.dumps({"published": int(count)}), flush=True)


def hammer_read(feed: str, reads: str) -> None:
    """Check at least `reads` consistent reads, and go on until the publisher ends the feed
    (so the reads race the writer all along, however the two are scheduled): never
    price != time_ns, never going backwards."""
    torn = backwards = distinct = 0
    last = {"A": 0, "B": 0}
    with Subscriber(feed) as sub:
        print("ready", flush=True)
        get = sub.get
        n = int(reads)
        i = 0
        while i < n or not sub.ended:
            for sym in ("A", "B"):
                q = get(sym)
                i += 1
                if q is None:
                    continue
                if q.price != float(q.time_ns):
                    torn += 1
                if q.time_ns < last[sym]:
                    backwards += 1
                elif q.time_ns > last[sym]:
                    distinct += 1
                    last[sym] = q.time_ns
    print(json.dumps({"reads": i, "torn": torn, "backwards": backwards, "distinct": distinct}), flush=True)


def hammer_records(feed: str, reads: str) -> None:
    """Read ring records at the head of a feed whose tiny ring is rewritten as fast as the
    publisher can (hammer_publish: change k sets price k and time k, so seq == k): a record
    is either reported lapped (None) or holds exactly the change asked for."""
    torn = got = lapped = 0
    with feed_reader(feed) as r:
        print("ready", flush=True)
        n = int(reads)
        i = 0
        while i < n or not r.closed():
            i += 1
            head = r.head()
            for seq in (head, head - 3):  # the newest, and the next to be overwritten in a ring of 4
                if seq < 1:
                    continue
                rec = r.read_record(seq)
                if rec is None:
                    lapped += 1
                elif rec[1] != (float(seq),) or rec[2] != seq:
                    torn += 1
                else:
                    got += 1
    print(json.dumps({"reads": i, "torn": torn, "got": got, "lapped": lapped}), flush=True)


def exactly_publish(feed: str, changes: str, seed: str, log_path: str) -> None:
    """Publish until `changes` changes happened, with repeated values mixed in, single and
    batched; log every change as [seq, symbol, price]; end the feed."""
    rng = random.Random(int(seed))
    symbols = [f"S{i}" for i in range(40)]
    current: dict = {}  # what this, the only publisher, has set
    log = []
    repeats = 0
    with Publisher.open(feed) as pub:
        print("ready", flush=True)
        target = int(changes)
        while pub.head < target:
            if rng.random() < 0.2:
                n = min(rng.randint(2, 30), target - pub.head)
                batch = [(rng.choice(symbols), float(rng.randint(1, 50))) for _ in range(n)]
                before = pub.head
                changed = pub.publish_many(batch)
                seq = before
                for sym, price in batch:
                    if current.get(sym) == price:
                        repeats += 1
                        continue
                    current[sym] = price
                    seq += 1
                    log.append([seq, sym, price])
                assert seq == pub.head == before + changed, (seq, pub.head, before, changed)
            else:
                sym = rng.choice(symbols)
                price = float(rng.randint(1, 50))
                if pub.publish(sym, price):
                    assert current.get(sym) != price
                    current[sym] = price
                    log.append([pub.head, sym, price])
                else:
                    assert current.get(sym) == price
                    repeats += 1
        pub.end()
    with open(log_path, "w") as f:
        json.dump({"log": log, "final": current}, f)
    print(json.dumps({"changes": len(log), "repeats": repeats}), flush=True)


def follow(feed: str, out_path: str, every: str = "0", pause_ms: str = "50", conflate: str = "0") -> None:
    """Follow every change until the feed ends; write ["c", seq, symbol, price, time_ns],
    ["g", missed, first, last] and ["e", event name, fields] rows to out_path. With every=N,
    pause pause_ms every N items, to be lapped on purpose."""
    n_every, pause = int(every), int(pause_ms) / 1000
    rows = []
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=120, conflate=conflate == "1")
        print("ready", flush=True)
        for n, ev in enumerate(it, 1):
            if isinstance(ev, Gap):
                rows.append(["g", ev.missed, ev.first_seq, ev.last_seq])
            elif isinstance(ev, Quote):
                rows.append(["c", ev.seq, ev.symbol, ev.price, ev.time_ns])
            else:
                rows.append(["e", EVENT_NAMES[type(ev)], list(ev)])
            if n_every and n % n_every == 0:
                time.sleep(pause)
    with open(out_path, "w") as f:
        json.dump(rows, f)
    print(json.dumps({"rows": len(rows)}), flush=True)


def wait_one(feed: str) -> None:
    """Block for one change and report it."""
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=120)
        print("ready", flush=True)
        q = next(it)
        print(json.dumps({"seq": q.seq, "symbol": q.symbol, "price": q.price, "t": time.time_ns()}), flush=True)


def count_wakeups(feed: str, symbol: str) -> None:
    """Follow one symbol until the feed ends; report its prices and how often it was woken."""
    with Subscriber(feed) as sub:
        it = sub.updates([symbol], timeout=120)
        print("ready", flush=True)
        prices = [q.price for q in it if isinstance(q, Quote)]
        print(json.dumps({"prices": prices, "wakeups": sub.wakeups}), flush=True)


def hold_publisher(feed: str) -> None:
    """Hold the publisher role until stdin closes."""
    with Publisher.open_or_create(feed):
        print("ready", flush=True)
        sys.stdin.read()


def churn_publish(feed: str, seed: str) -> None:
    """Take the feed over and publish self-checking changes as fast as possible until killed:
    the price is the change's own sequence + 0.5, the time its sequence, the symbol S{seq % 37}.
    A change that a takeover republishes keeps its price but gets a later sequence and time."""
    rng = random.Random(int(seed))
    with Publisher.open(feed) as pub:
        print(json.dumps({"repaired": pub.repaired, "head": pub.head}), flush=True)
        while True:
            if rng.random() < 0.1:
                batch = []
                for k in range(rng.randint(2, 20)):
                    s = pub.head + 1 + k
                    batch.append((f"S{s % 37}", s + 0.5))
                pub.publish_many(batch, time_ns=0)
            else:
                s = pub.head + 1
                pub.publish(f"S{s % 37}", s + 0.5, time_ns=s)


def flood_publish(feed: str, seconds: str) -> None:
    """Take the feed over and publish batches of 100 changes (S0..S99, each a growing number)
    as fast as possible for ``seconds``, then end the feed; report how many changes were made."""
    with Publisher.open(feed) as pub:
        print(json.dumps({"started": True}), flush=True)
        stop = time.monotonic() + float(seconds)
        n = 0
        while time.monotonic() < stop:
            n += 1
            pub.publish_many({f"S{k}": float(n) for k in range(100)})
        pub.end()
        print(json.dumps({"changes": pub.head}), flush=True)


def _sleep_until(start: str) -> None:
    delay = float(start) - time.time()
    if delay > 0:
        time.sleep(delay)


def _fd_on(fd: str, path: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(path)
    except OSError:
        return False


def race_take(feed: str, start: str) -> None:
    """At `start` (epoch seconds), try to take the feed over; report, then hold it until stdin closes."""
    from pricefeed import PricefeedError

    _sleep_until(start)
    try:
        pub = Publisher.open(feed)
    except PricefeedError as exc:
        print(json.dumps({"held": False, "error": type(exc).__name__}), flush=True)
        return
    from pricefeed._segment import segment_path

    # The segment this publisher holds, as the kernel sees its descriptors; and whether the
    # feed's name still leads to it.
    fds = [fd for fd in os.listdir("/proc/self/fd") if _fd_on(fd, segment_path(feed))]
    held = {(st.st_dev, st.st_ino) for st in (os.stat(f"/proc/self/fd/{fd}") for fd in fds)}
    assert len(held) == 1, f"the publisher's descriptors lead to {len(held)} segments, not one"
    inode = list(held.pop())
    try:
        now = os.stat(segment_path(feed))
        linked = [now.st_dev, now.st_ino] == inode
    except FileNotFoundError:
        linked = False
    print(json.dumps({"held": True, "inode": inode, "linked": linked}), flush=True)
    sys.stdin.read()
    pub.close()


def race_remove(feed: str, start: str) -> None:
    """At `start`, remove the feed if it is stale."""
    from pricefeed import PricefeedError, remove

    _sleep_until(start)
    try:
        print(json.dumps({"removed": remove(feed, stale_only=True)}), flush=True)
    except PricefeedError as exc:
        print(json.dumps({"removed": False, "error": type(exc).__name__}), flush=True)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def soak_publish(feed: str, changes: str) -> None:
    """Publish `changes` self-checking changes in batches of 100: change s sets S{s % 64} to s + 0.5."""
    total = int(changes)
    rss = []
    with Publisher.open(feed) as pub:
        print("ready", flush=True)
        while pub.head < total:
            first = pub.head + 1
            n = min(100, total - pub.head)
            pub.publish_many([(f"S{s % 64}", s + 0.5) for s in range(first, first + n)])
            if pub.head % 1_000_000 < 100:
                rss.append(_rss_kib())
        pub.end()
    print(json.dumps({"head": total, "rss_kib": rss}), flush=True)


def soak_follow(feed: str) -> None:
    """Follow a soak feed to its end, checking every change as it comes; report a summary."""
    last = delivered = missed = bad = 0
    rss = []
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=300)
        print("ready", flush=True)
        for ev in it:
            if isinstance(ev, Gap):
                missed += ev.missed
            elif isinstance(ev, Quote):
                if ev.seq <= last:
                    bad += 1
                last = ev.seq
                delivered += 1
                intended = int(ev.price - 0.5)
                if ev.symbol != f"S{intended % 64}" or (intended != ev.seq and ev.time_ns < 10**18):
                    bad += 1
                if delivered % 1_000_000 == 0:
                    rss.append(_rss_kib())
    print(json.dumps({"delivered": delivered, "missed": missed, "bad": bad, "last": last, "rss_kib": rss}), flush=True)


# -- records: several fields that change together ----------------------------------------------
#: The widest schema, both types in turn: a slot of three cache lines, a record of three.
WIDE = ",".join(f"f{k}:{'f64' if k % 2 == 0 else 'i64'}" for k in range(16))
#: A top of book.
BOOK = "bid:f64,ask:f64,bid_size:i64,ask_size:i64"


def _encoded(k: int, fields: tuple) -> dict:
    """Every field of the schema holding k (as a float or as an int, by its type)."""
    return {name: (float(k) if kind == 1 else k) for name, kind in fields}


def _torn(q: Quote) -> bool:
    """A quote whose fields do not all hold the same number (its time_ns too): a mix of two
    changes."""
    values = list(q.fields.values())
    return any(v != values[0] for v in values) or values[0] != q.time_ns


def wide_publish(feed: str, count: str) -> None:
    """Publish `count` changes to two symbols, change k writing k into every field (and the
    time), singly and in batches of records; then end the feed."""
    with Publisher.open(feed) as pub:
        fields = pub.fields
        print("ready", flush=True)
        k = 0
        n = int(count)
        while k < n:
            if k % 64 < 48:
                k += 1
                pub.publish("A" if k & 1 else "B", time_ns=k, **_encoded(k, fields))
            else:  # a batch of 8 records: each record whole, with the batch's one time stamp
                k += 8
                pub.publish_many([("A" if j & 1 else "B", _encoded(k, fields)) for j in range(8)], time_ns=k)
        pub.end()
    print(json.dumps({"published": pub.head}), flush=True)


def wide_read(feed: str, reads: str) -> None:
    """get() both symbols at least `reads` times and until the feed ends: every quote's
    fields agree (the seqlock path), and never go backwards."""
    torn = backwards = distinct = 0
    last = {"A": 0, "B": 0}
    with Subscriber(feed) as sub:
        print("ready", flush=True)
        get = sub.get
        n = int(reads)
        i = 0
        while i < n or not sub.ended:
            for sym in ("A", "B"):
                q = get(sym)
                i += 1
                if q is None:
                    continue
                torn += _torn(q)
                if q.time_ns < last[sym]:
                    backwards += 1
                elif q.time_ns > last[sym]:
                    distinct += 1
                    last[sym] = q.time_ns
    print(json.dumps({"reads": i, "torn": torn, "backwards": backwards, "distinct": distinct}), flush=True)


def wide_follow(feed: str, pause_every: str) -> None:
    """Follow until the end (pausing 20 ms every `pause_every` items, 0: never, to be lapped
    on purpose): every quote from the ring, and every quote of a catch-up (read from the slot
    table after a lap), has its fields agree; sequences only grow."""
    torn = quotes = gaps = disorder = 0
    last = 0
    every = int(pause_every)
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=120)
        print("ready", flush=True)
        for n, ev in enumerate(it, 1):
            if isinstance(ev, Gap):
                gaps += 1
            elif isinstance(ev, Quote):
                quotes += 1
                torn += _torn(ev)
                disorder += ev.seq <= last
                last = ev.seq
            if every and n % every == 0:
                time.sleep(0.02)
    print(json.dumps({"quotes": quotes, "gaps": gaps, "torn": torn, "disorder": disorder}), flush=True)


def wide_records(feed: str, reads: str) -> None:
    """Read ring records at the head of a feed whose tiny ring is rewritten as fast as the
    publisher can: a record is reported lapped (None) or holds every field of one change."""
    torn = got = lapped = 0
    with feed_reader(feed) as r:
        print("ready", flush=True)
        n = int(reads)
        i = 0
        while i < n or not r.closed():
            i += 1
            head = r.head()
            for seq in (head, head - 3):  # the newest, and the next to be overwritten in a ring of 4
                if seq < 1:
                    continue
                rec = r.read_record(seq)
                if rec is None:
                    lapped += 1
                    continue
                _, values, time_ns, _ = rec
                if any(v != values[0] for v in values) or values[0] != time_ns:
                    torn += 1
                else:
                    got += 1
    print(json.dumps({"reads": i, "torn": torn, "got": got, "lapped": lapped}), flush=True)


def fields_publish(feed: str, changes: str, seed: str, log_path: str) -> None:
    """Publish random subsets of a top of book's fields until `changes` changes happened
    (most of them not touching bid; repeats, which are no change, mixed in), singly and in
    batches; log each change as [seq, symbol, changed mask, values]; end the feed."""
    rng = random.Random(int(seed))
    symbols = [f"S{i}" for i in range(20)]
    current: dict = {}
    log = []
    with Publisher.open(feed) as pub:
        names = [name for name, _ in pub.fields]
        print("ready", flush=True)
        target = int(changes)

        def record() -> dict:
            # bid in one record out of eight; the others change ask and the sizes.
            chosen = [n for n in names[1:] if rng.random() < 0.5] or [rng.choice(names[1:])]
            if rng.random() < 0.125:
                chosen.append("bid")
            return {n: (float(rng.randint(1, 4)) if n in ("bid", "ask") else rng.randint(1, 4)) for n in chosen}

        def apply(sym: str, rec: dict) -> None:
            before = current.get(sym)
            values = dict(before) if before else {n: (0.0 if n in ("bid", "ask") else 0) for n in names}
            values.update(rec)
            mask = sum(1 << k for k, n in enumerate(names) if before is None or before[n] != values[n])
            if mask:
                current[sym] = values
                log.append([len(log) + 1, sym, mask, [values[n] for n in names]])

        while pub.head < target:
            if rng.random() < 0.2:
                batch = [(rng.choice(symbols), record()) for _ in range(min(rng.randint(2, 20), target - pub.head))]
                for sym, rec in batch:
                    apply(sym, rec)
                pub.publish_many(batch)
            else:
                sym, rec = rng.choice(symbols), record()
                apply(sym, rec)
                pub.publish(sym, **rec)
            assert pub.head == len(log), (pub.head, len(log))
        pub.end()
    with open(log_path, "w") as f:
        json.dump({"log": log, "final": current}, f)
    print(json.dumps({"changes": len(log)}), flush=True)


def fields_follow(feed: str, out_path: str, on: str, conflate: str = "0", pause_every: str = "0") -> None:
    """Follow with updates(on=...) until the end; write ["c", seq, symbol, changed, values]
    and ["g", missed, first, last] rows to out_path."""
    rows = []
    every = int(pause_every)
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=120, on=on.split(",") if on else None, conflate=conflate == "1")
        print("ready", flush=True)
        for n, ev in enumerate(it, 1):
            if isinstance(ev, Gap):
                rows.append(["g", ev.missed, ev.first_seq, ev.last_seq])
            elif isinstance(ev, Quote):
                rows.append(["c", ev.seq, ev.symbol, ev.changed_mask, list(ev.fields.values())])
            if every and n % every == 0:
                time.sleep(0.02)
    with open(out_path, "w") as f:
        json.dump(rows, f)
    print(json.dumps({"rows": len(rows)}), flush=True)


def _run_loop(loop: str, main):  # type: ignore[no-untyped-def]
    """Run coroutine function ``main`` on asyncio's default loop, or on uvloop's."""
    import asyncio

    if loop == "uvloop":
        import uvloop

        return uvloop.run(main()) if hasattr(uvloop, "run") else uvloop.install() or asyncio.run(main())
    return asyncio.run(main())


def afollow(feed: str, out_path: str, every: str = "0", pause_ms: str = "50", conflate: str = "0",
            loop: str = "asyncio") -> None:  # fmt: skip
    """``follow`` with ``aupdates`` in an event loop (``loop``: asyncio or uvloop), beside an idle
    task that ticks, to show the loop is never blocked while the subscription waits."""
    import asyncio

    n_every, pause = int(every), int(pause_ms) / 1000
    rows: list = []
    ticks = [0]

    async def main() -> None:
        async def tick() -> None:
            while True:
                await asyncio.sleep(0.01)
                ticks[0] += 1

        ticker = asyncio.ensure_future(tick())
        with Subscriber(feed) as sub:
            it = sub.aupdates(timeout=120, conflate=conflate == "1")
            print("ready", flush=True)
            n = 0
            async for ev in it:
                n += 1
                if isinstance(ev, Gap):
                    rows.append(["g", ev.missed, ev.first_seq, ev.last_seq])
                elif isinstance(ev, Quote):
                    rows.append(["c", ev.seq, ev.symbol, ev.price, ev.time_ns])
                else:
                    rows.append(["e", EVENT_NAMES[type(ev)], list(ev)])
                if n_every and n % n_every == 0:
                    await asyncio.sleep(pause)
        ticker.cancel()

    started = time.monotonic()
    _run_loop(loop, main)
    with open(out_path, "w") as f:
        json.dump(rows, f)
    print(json.dumps({"rows": len(rows), "ticks": ticks[0], "seconds": time.monotonic() - started}), flush=True)


def _resources(feed: str) -> dict:
    """This process's threads (all, and pricefeed's by name), descriptors, and mappings of
    ``feed`` and of io_uring rings, from /proc."""
    import threading

    from pricefeed._segment import segment_name

    with open("/proc/self/maps") as f:
        maps = [line.rstrip() for line in f]
    return {
        "threads": len(os.listdir("/proc/self/task")),
        "comms": sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")),
        "ours": sorted(t.name for t in threading.enumerate() if t.name.startswith("pricefeed")),
        "fds": len(os.listdir("/proc/self/fd")),
        "feed_maps": sum(1 for m in maps if m.endswith(segment_name(feed))),
        "rings": sum(1 for m in maps if "io_uring" in m),
    }


def _cpu_ticks() -> int:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def async_many(feed: str, count: str, loop: str = "asyncio", ending: str = "return") -> None:
    """``count`` async subscriptions in one loop, each to symbol S<k> of ``feed`` with its own
    Subscriber. Commands on stdin, one per line, each answered by one JSON line:
    ``look`` (resources and CPU ticks), ``cancel K`` (cancel subscription K's task),
    ``got`` (what each subscription received: {k: [[seq, price], ...]}), ``end``. With
    ending=return the loop then ends normally; with ending=interrupt the process waits for
    Ctrl-C (SIGINT) inside the loop. Either way it reports its resources after the loop ended."""
    import asyncio

    k_count = int(count)

    async def nothing() -> None:
        await asyncio.sleep(0)

    _run_loop(loop, nothing)  # what a loop keeps after it ran (uvloop keeps some) is not ours
    before = _resources(feed)
    got: dict = {k: [] for k in range(k_count)}

    async def main() -> None:
        subs = [Subscriber(feed) for _ in range(k_count)]
        try:

            async def one(k: int) -> None:
                async for q in subs[k].aupdates([f"S{k}"]):
                    if isinstance(q, Quote):
                        got[k].append([q.seq, q.price])

            tasks = [asyncio.ensure_future(one(k)) for k in range(k_count)]
            await asyncio.sleep(0.2)
            # Commands come through the loop, not a thread, so that every thread counted is one
            # the subscriptions made.
            commands = asyncio.StreamReader()
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(commands), os.fdopen(os.dup(0), "rb", buffering=0)
            )  # a copy of stdin, which closing the transport closes
            print("ready", flush=True)
            while True:
                line = (await commands.readline()).decode().split()
                if not line or line[0] == "end":
                    break
                if line[0] == "look":
                    from pricefeed._roles.loopwait import _waiters

                    modes = [w.mode for _, w in _waiters.values()]
                    print(json.dumps({**_resources(feed), "cpu": _cpu_ticks(), "modes": modes}), flush=True)
                elif line[0] == "cancel":
                    task = tasks[int(line[1])]
                    task.cancel()
                    await asyncio.wait([task], timeout=5)
                    print(json.dumps({"cancelled": task.cancelled()}), flush=True)
                elif line[0] == "got":
                    print(json.dumps(got), flush=True)
            transport.close()
            if ending == "interrupt":
                print(json.dumps({"waiting": "ctrl-c"}), flush=True)
                await asyncio.sleep(60)
        finally:
            for sub in subs:
                sub.close()

    interrupted = False
    try:
        _run_loop(loop, main)
    except KeyboardInterrupt:
        interrupted = True
    # A joined thread's last instructions run after join() returns: give the OS a moment.
    deadline = time.monotonic() + 2
    while _resources(feed)["threads"] > before["threads"] and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps({"before": before, "after": _resources(feed), "interrupted": interrupted}), flush=True)


#: The schema of the recorder's tests: two floats and an integer.
RECORDED = "bid:f64,ask:f64,size:i64"
RECORDED_SYMBOLS = 100


def recorded_change(k: int) -> tuple:
    """Change k of the recorder's tests (seq k on a new feed): symbol S<k % 100>; every fourth
    sets the bid alone, the others every field, each value new."""
    symbol = f"S{k % RECORDED_SYMBOLS}"
    if k % 4 == 0:
        return symbol, {"bid": k + 0.25}
    return symbol, {"bid": k + 0.25, "ask": k + 0.5, "size": -k}


def record_publish(feed: str, count: str, batch: str = "1000") -> None:
    """Publish recorded_change(1..count) as fast as possible, in publish_many batches of
    `batch`; end the feed; report the rate."""
    n, size = int(count), int(batch)
    with Publisher.open(feed) as pub:
        print("ready", flush=True)
        start = time.perf_counter()
        k = 1
        while k <= n:
            top = min(k + size, n + 1)
            pub.publish_many([recorded_change(j) for j in range(k, top)])
            k = top
        seconds = time.perf_counter() - start
        pub.end()
    print(json.dumps({"published": n, "seconds": seconds, "head": n}), flush=True)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
