"""Delivery throughput: the highest change rate one subscriber follows without a gap.

The sender offers changes at a set rate, in batches of 100 (``publish_many``), for a set
time; then it sends a marker. The receiver counts what it got until the marker and reports.
A rate is *followed* when the receiver got every change, with no Gap, had the marker within
10 ms of its sending (no backlog left), and the sender really offered at least 95% of the
rate. The rates go up in steps, each step run on pricefeed then on the baseline (interleaved);
a contender stops after failing two steps in a row.

Baseline: ``multiprocessing.Pipe`` carrying the same batches, 24 bytes a change. A pipe never
drops, it blocks the sender instead, so there a rate is missed when the sender is held back.
"""

from __future__ import annotations

import math
import os
import struct
import time
from multiprocessing import Pipe
from typing import Any, Callable, Dict, List, Optional

from .. import Gap, Quote, Subscriber
from . import procs
from .throughput import Feed, batches_of

__all__ = ["delivery"]

Result = Dict[str, Any]
now = time.monotonic_ns
BATCH = 100
LAG_LIMIT_NS = 10_000_000
MARK = "MARK"
_RECORD = struct.Struct("<qdq")  # slot, price, time: what a change costs to carry
_MARK = struct.Struct("<qq")  # step, t0


def _wait_until(due: int) -> None:
    left = due - now()
    if left > 300_000:
        time.sleep((left - 150_000) / 1e9)
    while now() < due:
        pass


def _offer(send: Callable[[Any], object], items: List[Any], rate: int) -> int:
    """Send ``items`` (batches of BATCH) at ``rate`` changes a second; returns the ns it took."""
    interval = int(BATCH * 1e9 / rate)
    start = due = now()
    for item in items:
        _wait_until(due)
        send(item)
        due += interval
    return now() - start


class _PricefeedStep:
    name = "pricefeed"

    def __init__(self) -> None:
        self.feed = Feed(1000, keep_name=True)
        try:
            self.child = procs.fork("delivery subscriber", self._body(self.feed.name))
            self.child.recv(30.0)
            self.feed.pub.unlink()
        except BaseException:
            self.feed.close()
            raise

    @staticmethod
    def _body(feed: str) -> Callable[[procs.Channel], object]:
        def body(channel: procs.Channel) -> object:
            changes = gaps = missed = 0
            with Subscriber(feed) as sub:
                events = sub.updates()
                channel.send("ready")
                for event in events:
                    if isinstance(event, Gap):
                        gaps += 1
                        missed += event.missed
                    elif not isinstance(event, Quote):
                        continue  # PublisherGone and the like: no change
                    elif event.symbol == MARK:
                        lag = now() - event.time_ns
                        channel.send({"changes": changes, "gaps": gaps, "missed": missed, "lag_ns": lag})
                        changes = gaps = missed = 0
                    else:
                        changes += 1
            return None

        return body

    def step(self, rate: int, seconds: float, number: int) -> Result:
        batches = batches_of(self.feed, BATCH, max(1, math.ceil(rate * seconds / BATCH)))
        elapsed = _offer(self.feed.pub.publish_many, batches, rate)
        self.feed.pub.publish(MARK, float(number), time_ns=now())
        report: Result = self.child.recv(30.0 + seconds * 10)
        return _judge(report, BATCH * len(batches), elapsed, rate)

    def close(self) -> None:
        self.child.kill()
        self.feed.close()


class _PipeStep:
    name = "multiprocessing.Pipe"

    def __init__(self) -> None:
        self.rx, self.tx = Pipe(duplex=False)
        os.set_blocking(self.tx.fileno(), False)  # see procs.send_patiently
        self.child = procs.fork("delivery pipe receiver", self._body())
        self.child.recv(30.0)

    def _body(self) -> Callable[[procs.Channel], object]:
        rx = self.rx

        def body(channel: procs.Channel) -> object:
            channel.send("ready")
            changes = 0
            while True:
                data = rx.recv_bytes()
                if len(data) == _MARK.size:
                    lag = now() - _MARK.unpack(data)[1]
                    channel.send({"changes": changes, "gaps": 0, "missed": 0, "lag_ns": lag})
                    changes = 0
                    continue
                for _record in _RECORD.iter_unpack(data):
                    changes += 1

        return body

    def step(self, rate: int, seconds: float, number: int) -> Result:
        count = max(1, math.ceil(rate * seconds / BATCH))
        t = time.time_ns()
        messages = [b"".join(_RECORD.pack(j, float(k * BATCH + j), t) for j in range(BATCH)) for k in range(count)]
        elapsed = _offer(self._send, messages, rate)
        self._send(_MARK.pack(number, now()))
        report: Result = self.child.recv(30.0 + seconds * 10)
        return _judge(report, BATCH * count, elapsed, rate)

    def _send(self, message: bytes) -> None:
        # A message is at most PIPE_BUF (4096) bytes, so each write is whole or nothing.
        procs.send_patiently(lambda: self.tx.send_bytes(message), self.tx.fileno())

    def close(self) -> None:
        self.child.kill()
        self.rx.close()
        self.tx.close()


def _judge(report: Result, sent: int, elapsed: int, rate: int) -> Result:
    offered = sent * 1e9 / max(1, elapsed)
    followed = (
        report["gaps"] == 0
        and report["changes"] == sent
        and report["lag_ns"] <= LAG_LIMIT_NS
        and offered >= 0.95 * rate
    )
    # What the receiver took per second: everything, by the time the marker reached it.
    delivered = report["changes"] * 1e9 / max(1, elapsed + report["lag_ns"])
    return {
        "sent": sent,
        "offered_per_second": offered,
        "delivered_per_second": delivered,
        **report,
        "followed": followed,
    }


def delivery(rates: List[int], seconds: float, notes: List[str]) -> Result:
    """(4) Step the offered rate up on pricefeed and on the Pipe baseline, interleaved."""
    contenders: List[Any] = []
    failures: Dict[str, int] = {}
    steps: List[Result] = []
    try:
        for make in (_PricefeedStep, _PipeStep):
            try:
                contenders.append(make())
                failures[make.name] = 0
            except Exception as exc:
                notes.append(f"delivery, {make.name}: could not be set up, left out: {exc}")
        for number, rate in enumerate(rates, 1):
            row: Result = {"rate": rate}
            for c in contenders:
                if failures[c.name] >= 2:
                    continue
                result = c.step(rate, seconds, number)
                failures[c.name] = 0 if result["followed"] else failures[c.name] + 1
                row[c.name] = result
            steps.append(row)
            if all(n >= 2 for n in failures.values()):
                break
    finally:
        for c in contenders:
            c.close()
    best: Dict[str, Optional[int]] = {}
    for name in failures:
        followed = [row["rate"] for row in steps if row.get(name, {}).get("followed")]
        best[name] = max(followed) if followed else None
    return {"batch": BATCH, "seconds_per_step": seconds, "steps": steps, "highest_followed": best}
