"""Rates and costs: publish, publish_many, reads, and publish cost and memory against scale.

A rate test runs rounds of a fixed number of calls, one contender after the other (A, B, C,
A, B, C, ...), and reports the cost per operation as percentiles over the rounds, and the
rate at the median. The baselines are "floors": the same stores into shared memory that
pricefeed makes (slot, ring record, head, wake word) as single memoryview item stores, and the
same FUTEX_WAKE, with no checks, no seqlock and no validation: the least a Python publisher
can do. A read floor is a dict lookup and one ``struct.unpack_from`` per symbol.
"""

from __future__ import annotations

import ctypes
import struct
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import Gap, Publisher, Quote, Subscriber
from . import procs, resources, stats
from .links import RING, SYS_FUTEX, check_futex, rss_kib, syscall

__all__ = ["publish_rates", "reads", "publish_vs", "field_costs"]

Result = Dict[str, Any]
Round = Callable[[], Tuple[int, int]]  # runs one round: (operations, elapsed ns)
Closer = Callable[[], Optional[Result]]  # ends a contender; may return figures of its own
Maker = Callable[[], Tuple[Round, Closer]]
clock = time.perf_counter_ns
FOLLOWER_TIMEOUT = 60.0


# -- the feeds under test ------------------------------------------------------------------------
def _symbols(n: int) -> List[str]:
    return [f"S{k}" for k in range(n)]


class Feed:
    """A feed of ``symbols`` symbols with a first value each, and optionally one follower:
    a process that takes every change through ``updates()`` and counts changes and gaps."""

    def __init__(
        self,
        symbols: int,
        follower: bool = False,
        ring_size: Optional[int] = None,
        keep_name: bool = False,
        fields: Optional[str] = None,
    ) -> None:
        self.name = resources.feed_name("tp")
        self.symbols = _symbols(symbols)
        before = rss_kib()
        geometry: Dict[str, Any] = {"capacity": symbols + 1}
        if ring_size is not None:
            geometry["ring_size"] = ring_size
        self.pub = Publisher.create(self.name, fields=fields, **geometry)
        first: Any = 0.5 if fields is None else {name: 0 for name, _ in self.pub.fields}
        self.child: Optional[procs.Child] = None
        try:
            for start in range(0, symbols, 10_000):
                self.pub.publish_many([(s, first) for s in self.symbols[start : start + 10_000]])
            self.rss_growth_kib = rss_kib() - before
            if follower:
                self.child = procs.fork(f"follower of {self.name}", _follow(self.name))
                self.child.recv(30.0)
            if not keep_name:  # else the caller unlinks it once its own subscribers have attached
                self.pub.unlink()
        except BaseException:
            self.close()
            raise
        self._next = 1.0

    def prices(self, n: int) -> List[Tuple[str, float]]:
        """n (symbol, price) pairs cycling over the symbols, each price new for its symbol."""
        syms, k, base = self.symbols, len(self.symbols), self._next
        self._next += n
        return [(syms[j % k], base + j) for j in range(n)]

    def follower_report(self) -> Optional[Result]:
        """End the feed and return what the follower counted."""
        if self.child is None:
            return None
        self.pub.end()
        report: Result = self.child.result(FOLLOWER_TIMEOUT)
        self.child = None
        return report

    def close(self) -> None:
        if self.child is not None:
            self.child.kill()
        self.pub.close()
        resources.forget_feed(self.name)


def _follow(feed: str) -> Callable[[procs.Channel], object]:
    def body(channel: procs.Channel) -> object:
        changes = gaps = missed = 0
        with Subscriber(feed) as sub:
            events = sub.updates()
            channel.send("ready")
            for event in events:
                if isinstance(event, Gap):
                    gaps += 1
                    missed += event.missed
                elif isinstance(event, Quote):
                    changes += 1
        return {"changes": changes, "gaps": gaps, "missed": missed}

    return body


class Floor:
    """The least a Python publisher can do: pricefeed's stores, as single memoryview item
    stores, and one FUTEX_WAKE per call. ``waiter``: one process blocked on the word."""

    def __init__(self, symbols: int, waiter: bool = False) -> None:
        check_futex()
        self.index = {s: k for k, s in enumerate(_symbols(symbols))}
        self.ring_base = 8 * (symbols + 1)  # in 8-byte words: a header line, then 64-byte slots
        self.mm = resources.shared_memory("fl", 8 * self.ring_base + 32 * RING)
        self.q = memoryview(self.mm).cast("q")
        self.d = memoryview(self.mm).cast("d")
        self.word = memoryview(self.mm)[8:12].cast("I")
        self._anchor = ctypes.c_char.from_buffer(self.mm)
        self.address = ctypes.c_void_p(ctypes.addressof(self._anchor) + 8)
        self.seq = 0
        self.child = procs.fork("floor waiter", self._wait_forever()) if waiter else None
        if self.child is not None:
            self.child.recv(30.0)

    def _wait_forever(self) -> Callable[[procs.Channel], object]:
        word, address = self.word, self.address

        def body(channel: procs.Channel) -> object:
            channel.send("ready")
            while True:  # killed at the end
                syscall(SYS_FUTEX, address, 0, word[0], None, None, 0)

        return body

    def _store(self, symbol: str, price: float, t: int, seq: int) -> None:
        slot = 8 + 8 * self.index[symbol]
        self.d[slot] = price
        self.q[slot + 1] = t
        self.q[slot + 2] = seq
        record = self.ring_base + 4 * (seq % RING)
        self.q[record] = seq
        self.q[record + 1] = slot
        self.d[record + 2] = price
        self.q[record + 3] = t

    def publish(self, symbol: str, price: float) -> None:
        self.seq += 1
        self._store(symbol, price, time.time_ns(), self.seq)
        self._wake()

    def publish_many(self, items: Dict[str, float]) -> None:
        t = time.time_ns()
        for symbol, price in items.items():
            self.seq += 1
            self._store(symbol, price, t, self.seq)
        self._wake()

    def _wake(self) -> None:
        self.q[0] = self.seq
        self.word[0] = self.seq & 0xFFFFFFFF
        syscall(SYS_FUTEX, self.address, 1, 0x7FFFFFFF, None, None, 0)

    def close(self) -> None:
        if self.child is not None:
            self.child.kill()
        del self._anchor
        for view in (self.q, self.d, self.word):
            view.release()
        self.mm.close()


# -- the interleaved rounds ------------------------------------------------------------------------
def interleave(makers: Sequence[Tuple[str, Maker]], rounds: int, notes: List[str]) -> Dict[str, Result]:
    """Run ``rounds`` rounds of each contender in turn; per contender, the cost per operation
    as percentiles over the rounds (``ns_per_op``) and the rate at the median."""
    live: List[Tuple[str, Round, Closer]] = []
    per_op: Dict[str, List[float]] = {}
    out: Dict[str, Result] = {}
    try:
        for name, make in makers:
            try:
                run, close = make()
            except Exception as exc:
                notes.append(f"{name}: could not be set up, left out: {type(exc).__name__}: {exc}")
                continue
            live.append((name, run, close))
            per_op[name] = []
        for _ in range(rounds):
            for name, run, _close in live:
                ops, elapsed = run()
                per_op[name].append(elapsed / ops)
        while live:
            name, _run, close = live.pop(0)
            summary = stats.summarise(per_op[name])
            out[name] = {"ns_per_op": summary, "per_second": 1e9 / summary["p50"] if per_op[name] else None}
            extra = close()
            if extra:
                out[name].update(extra)
    finally:
        for _name, _run, close in live:
            try:
                close()
            except Exception as exc:
                notes.append(f"{_name}: clean-up failed: {exc}")
    return out


def _timed(call: Callable[[], int]) -> Tuple[int, int]:
    t = clock()
    ops = call()
    return ops, clock() - t


def _publish_maker(plan_calls: int, follower: bool) -> Maker:
    def make() -> Tuple[Round, Closer]:
        feed = Feed(1000, follower)
        publish = feed.pub.publish

        def run() -> Tuple[int, int]:
            pairs = feed.prices(plan_calls)

            def loop() -> int:
                for symbol, price in pairs:
                    publish(symbol, price)
                return len(pairs)

            return _timed(loop)

        return run, _closer(feed)

    return make


def batches_of(feed: Feed, batch: int, count: int) -> List[Dict[str, float]]:
    pairs = feed.prices(batch * count)
    return [dict(pairs[k * batch : (k + 1) * batch]) for k in range(count)]


def _publish_many_maker(batch: int, calls: int, follower: bool) -> Maker:
    def make() -> Tuple[Round, Closer]:
        feed = Feed(batch, follower)
        publish_many = feed.pub.publish_many

        def run() -> Tuple[int, int]:
            batches = batches_of(feed, batch, calls)

            def loop() -> int:
                for items in batches:
                    publish_many(items)
                return batch * len(batches)

            return _timed(loop)

        return run, _closer(feed)

    return make


def _closer(feed: Feed) -> Closer:
    def close() -> Optional[Result]:
        try:
            report = feed.follower_report()
            return {"follower": report} if report else None
        finally:
            feed.close()

    return close


def _floor_maker(symbols: int, calls: int, waiter: bool, batch: int = 0) -> Maker:
    def make() -> Tuple[Round, Closer]:
        floor = Floor(symbols, waiter)
        names = _symbols(symbols)
        price = [1.0]

        def run() -> Tuple[int, int]:
            base = price[0]
            price[0] += calls * max(1, batch)
            if batch:
                pairs = [(names[j % symbols], base + j) for j in range(batch * calls)]
                batches = [dict(pairs[k * batch : (k + 1) * batch]) for k in range(calls)]
                return _timed(lambda: _floor_many(floor, batches) * batch)
            pairs = [(names[j % symbols], base + j) for j in range(calls)]
            return _timed(lambda: _floor_single(floor, pairs))

        def close() -> Optional[Result]:
            floor.close()
            return None

        return run, close

    return make


def _floor_single(floor: Floor, pairs: List[Tuple[str, float]]) -> int:
    publish = floor.publish
    for symbol, price in pairs:
        publish(symbol, price)
    return len(pairs)


def _floor_many(floor: Floor, batches: List[Dict[str, float]]) -> int:
    for items in batches:
        floor.publish_many(items)
    return len(batches)


def publish_rates(calls: int, batch: int, rounds: int, notes: List[str]) -> Result:
    """(3) publish and publish_many, with no subscriber and with one, beside their floors."""
    batch_calls = max(1, calls // batch)
    makers: List[Tuple[str, Maker]] = [
        ("publish", _publish_maker(calls, False)),
        ("publish, 1 subscriber", _publish_maker(calls, True)),
        ("floor: store + FUTEX_WAKE", _floor_maker(1000, calls, False)),
        ("floor: store + FUTEX_WAKE, 1 waiter", _floor_maker(1000, calls, True)),
        (f"publish_many({batch})", _publish_many_maker(batch, batch_calls, False)),
        (f"publish_many({batch}), 1 subscriber", _publish_many_maker(batch, batch_calls, True)),
        (f"floor: {batch} stores + FUTEX_WAKE", _floor_maker(batch, batch_calls, False, batch)),
    ]
    results = interleave(makers, rounds, notes)
    pairs = {
        "publish": "floor: store + FUTEX_WAKE",
        "publish, 1 subscriber": "floor: store + FUTEX_WAKE, 1 waiter",
        f"publish_many({batch})": f"floor: {batch} stores + FUTEX_WAKE",
        f"publish_many({batch}), 1 subscriber": f"floor: {batch} stores + FUTEX_WAKE",
    }
    for name, floor in pairs.items():
        if name in results and floor in results:
            results[name]["baseline"] = floor
            results[name]["cost_ratio"] = stats.ratio(
                results[name]["ns_per_op"]["p50"], results[floor]["ns_per_op"]["p50"]
            )
    return {"symbols": 1000, "calls_per_round": calls, "batch": batch, "series": results}


# -- reads ---------------------------------------------------------------------------------------
_SLOT = struct.Struct("<dqq")


def reads(calls: int, snapshots: int, rounds: int, notes: List[str]) -> Result:
    """(6) get(symbol) and snapshot() of 1,000 symbols, beside a dict lookup plus an
    unpack_from per symbol from a shared mapping (no seqlock: the floor)."""
    feed = Feed(1000, keep_name=True)
    floor = Floor(1000)
    try:
        sub = Subscriber(feed.name)
        feed.pub.unlink()
    except BaseException:
        feed.close()
        floor.close()
        raise
    try:
        names = feed.symbols
        picks = [names[(k * 7919) % len(names)] for k in range(calls)]  # spread over the table
        get, snapshot = sub.get, sub.snapshot
        index, mm = floor.index, floor.mm

        def floor_get(symbol: str) -> Tuple[float, int, int]:
            return _SLOT.unpack_from(mm, 64 + 64 * index[symbol])

        def floor_snapshot() -> Dict[str, Tuple[float, int, int]]:
            return {s: _SLOT.unpack_from(mm, 64 + 64 * k) for s, k in index.items()}

        makers: List[Tuple[str, Maker]] = [
            ("get", _loop_maker(lambda: _each(get, picks))),
            ("floor: dict + unpack_from", _loop_maker(lambda: _each(floor_get, picks))),
            ("snapshot (1,000 symbols)", _loop_maker(lambda: _repeat(snapshot, snapshots))),
            ("floor: 1,000 x unpack_from", _loop_maker(lambda: _repeat(floor_snapshot, snapshots))),
        ]
        results = interleave(makers, rounds, notes)
    finally:
        sub.close()
        feed.close()
        floor.close()
    for name, base in (
        ("get", "floor: dict + unpack_from"),
        ("snapshot (1,000 symbols)", "floor: 1,000 x unpack_from"),
    ):
        if name in results and base in results:
            results[name]["baseline"] = base
            results[name]["cost_ratio"] = stats.ratio(
                results[name]["ns_per_op"]["p50"], results[base]["ns_per_op"]["p50"]
            )
    return {"symbols": 1000, "series": results}


def _each(call: Callable[[str], object], items: List[str]) -> int:
    for item in items:
        call(item)
    return len(items)


def _repeat(call: Callable[[], object], n: int) -> int:
    for _ in range(n):
        call()
    return n


def _loop_maker(body: Callable[[], int]) -> Maker:
    return lambda: ((lambda: _timed(body)), (lambda: None))


# -- scale ---------------------------------------------------------------------------------------
def publish_vs(label: str, points: Sequence[int], calls: int, rounds: int, notes: List[str]) -> Result:
    """(7) Cost of a single publish, and memory, at each point of a scale: ``label`` is
    "symbols" (a feed of that many symbols, publishing to each in turn) or "ring" (a feed of
    1,000 symbols with that ring size). Each point as a ratio to the first."""
    memory: Dict[str, Result] = {}

    def maker(point: int) -> Maker:
        def make() -> Tuple[Round, Closer]:
            feed = Feed(point) if label == "symbols" else Feed(1000, ring_size=point)
            memory[f"{label}={point}"] = {
                "segment_bytes": feed.pub.geometry.size,
                "publisher_rss_growth_kib": feed.rss_growth_kib,
            }
            publish = feed.pub.publish

            def run() -> Tuple[int, int]:
                pairs = feed.prices(calls)
                return _timed(lambda: _publish_all(publish, pairs))

            return run, _closer(feed)

        return make

    results = interleave([(f"{label}={p}", maker(p)) for p in points], rounds, notes)
    first = f"{label}={points[0]}"
    for name, r in results.items():
        r.update(memory.get(name, {}))
        if first in results:
            r["cost_ratio"] = stats.ratio(r["ns_per_op"]["p50"], results[first]["ns_per_op"]["p50"])
    return {"baseline": first, "points": list(points), "calls_per_round": calls, "series": results}


def _publish_all(publish: Callable[[str, float], bool], pairs: List[Tuple[str, float]]) -> int:
    for symbol, price in pairs:
        publish(symbol, price)
    return len(pairs)


# -- records of several fields -----------------------------------------------------------------
#: The schemas compared: the default, a top of book, the widest.
SCHEMAS = {
    "1 field": None,
    "4 fields": "bid:f64,ask:f64,bid_size:i64,ask_size:i64",
    "16 fields": ",".join(f"f{k}:{'f64' if k % 2 == 0 else 'i64'}" for k in range(16)),
}


def _records(feed: Feed, n: int, start: int) -> List[Tuple[str, Dict[str, Any]]]:
    """n (symbol, record) pairs cycling over the symbols, every field new in each."""
    syms, k = feed.symbols, len(feed.symbols)
    kinds = feed.pub.fields
    return [
        (syms[j % k], {name: (float(start + j) if kind == 1 else start + j) for name, kind in kinds}) for j in range(n)
    ]


def _field_publish_maker(fields: Optional[str], calls: int) -> Maker:
    def make() -> Tuple[Round, Closer]:
        feed = Feed(1000, fields=fields)
        publish = feed.pub.publish
        counter = [1]

        def run() -> Tuple[int, int]:
            start = counter[0]
            counter[0] += calls
            if fields is None:  # the one-field call as it is written: a positional price
                pairs = [(s, float(v)) for s, v in feed.prices(calls)]

                def loop() -> int:
                    for symbol, price in pairs:
                        publish(symbol, price)
                    return len(pairs)

            elif fields == SCHEMAS["4 fields"]:  # the call as it is written: the fields named
                quads = [(s, r["bid"], r["ask"], r["bid_size"], r["ask_size"]) for s, r in _records(feed, calls, start)]

                def loop() -> int:
                    for symbol, bid, ask, bid_size, ask_size in quads:
                        publish(symbol, bid=bid, ask=ask, bid_size=bid_size, ask_size=ask_size)
                    return len(quads)

            else:  # sixteen fields: a record built elsewhere, as a dict
                records = _records(feed, calls, start)

                def loop() -> int:
                    for symbol, record in records:
                        publish(symbol, **record)
                    return len(records)

            return _timed(loop)

        return run, _closer(feed)

    return make


def _field_get_maker(fields: Optional[str], calls: int) -> Maker:
    def make() -> Tuple[Round, Closer]:
        feed = Feed(1000, keep_name=True, fields=fields)
        sub = Subscriber(feed.name)
        feed.pub.unlink()
        picks = [feed.symbols[(k * 7919) % 1000] for k in range(calls)]
        get = sub.get

        def close() -> Optional[Result]:
            sub.close()
            feed.close()
            return None

        return (lambda: _timed(lambda: _each(get, picks))), close

    return make


def field_costs(calls: int, reads: int, rounds: int, notes: List[str]) -> Result:
    """Cost of a publish that sets every field, and of a get(), for feeds of 1, 4 and 16
    fields, each as a ratio to the one-field feed measured in the same rounds. Each publish
    is written as a program would: a positional price; four fields named in the call; sixteen
    from a dict (``**record``, which copies it)."""
    makers: List[Tuple[str, Maker]] = []
    for label, fields in SCHEMAS.items():
        makers.append((f"publish, {label}", _field_publish_maker(fields, calls)))
        makers.append((f"get, {label}", _field_get_maker(fields, reads)))
    results = interleave(makers, rounds, notes)
    for op in ("publish", "get"):
        base = f"{op}, 1 field"
        for label in SCHEMAS:
            name = f"{op}, {label}"
            if name in results and base in results:
                results[name]["baseline"] = base
                results[name]["cost_ratio"] = stats.ratio(
                    results[name]["ns_per_op"]["p50"], results[base]["ns_per_op"]["p50"]
                )
    return {"schemas": {k: v or "price:f64" for k, v in SCHEMAS.items()}, "series": results}
