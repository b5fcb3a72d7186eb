"""Wake latency: pricefeed and its baselines, measured side by side in interleaved rounds.

A round sends ``n`` changes on one contender, paced ``low``..``high`` ns apart (uniform,
sleeping in between, so that each receiver is blocked when its change arrives); the next
round goes to the next contender, and so on: A, B, C, A, B, C, ... Every contender's
receivers stay blocked in their own wait while the others run. The figures per change are:

``last``  from t0 (taken just before the sending call) until the last receiver had the change
          (with one receiver: the wake latency)
``call``  how long the sending call itself took (the publisher's cost)

The suites here return plain dicts, ready for the JSON file and for report.py.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import links, procs, stats
from .cfutex import CFutex

__all__ = ["Contender", "Series", "interleave", "pause"]

Result = Dict[str, Any]


def pause(ns: int) -> None:
    """Wait ``ns``: sleep when it is long enough for a sleep to be precise, else spin."""
    if ns >= 150_000:
        time.sleep(ns / 1e9)
        return
    end = time.monotonic_ns() + ns
    while time.monotonic_ns() < end:
        pass


class Series:
    """The figures of one contender: per change, in the order sent, with round sizes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: List[int] = []
        self.call: List[int] = []
        self.rounds: List[int] = []
        self.lost = 0  # changes some receiver never reported
        self.wakeups: Optional[int] = None  # voluntary context switches of all receivers, if known
        self.aligned: List[Optional[int]] = []  # latency of change i at [i - 1]; None if lost
        self.extra: Dict[str, Any] = {}

    def as_dict(self) -> Result:
        return {
            "name": self.name,
            "latency_ns": stats.summarise(self.last),
            "distribution_ns": stats.distribution(self.last),
            "call_ns": stats.summarise(self.call),
            "round_p50_ns": stats.per_round_medians(self.last, self.rounds),
            "lost": self.lost,
            "wakeups_per_change": None if self.wakeups is None else self.wakeups / max(1, len(self.last) + self.lost),
            **self.extra,
        }


class Contender:
    """Something that can run a round of n paced changes and, at the end, give its Series."""

    name = "contender"

    def round(self, gaps: Sequence[int], seed: int) -> None:
        raise NotImplementedError

    def finish(self) -> Series:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class PythonContender(Contender):
    """A Link driven from this process: this process paces and sends, the receivers record."""

    def __init__(self, link: links.Link, name: Optional[str] = None) -> None:
        self.link = link
        self.name = name or link.name
        self.sent = 0
        self.calls: List[int] = []
        self.rounds: List[int] = []

    def round(self, gaps: Sequence[int], seed: int) -> None:
        send = self.link.send
        calls = self.calls
        i = self.sent
        for gap in gaps:
            pause(gap)
            i += 1
            calls.append(send(i))
        self.sent = i
        self.rounds.append(len(gaps))

    def finish(self) -> Series:
        received = self.link.finish(self.sent)
        series = Series(self.name)
        series.rounds = self.rounds
        series.call = self.calls
        for i in range(1, self.sent + 1):
            one = self.link.concerned(i)
            seen = [r.latency.get(i) for r in (received if one is None else received[one : one + 1])]
            latency = None if None in seen else max(v for v in seen if v is not None)
            series.aligned.append(latency)
            if latency is None:
                series.lost += 1
            else:
                series.last.append(latency)
        series.wakeups = sum(r.wakeups for r in received)
        memory = [r.extra["rss_growth_kib"] for r in received if "rss_growth_kib" in r.extra]
        if memory:
            series.extra["receiver_rss_growth_kib"] = sorted(memory)[len(memory) // 2]
        return series

    def close(self) -> None:
        self.link.close()


class CContender(Contender):
    """The C futex program: it paces and measures itself; we only pass the pacing."""

    def __init__(self, program: CFutex) -> None:
        self.program = program
        self.name = program.name
        self.series = Series(self.name)

    def round(self, gaps: Sequence[int], seed: int) -> None:
        low, high = min(gaps), max(gaps)
        last, call = self.program.run(len(gaps), low, high, seed)
        self.series.last.extend(last)
        self.series.call.extend(call)
        self.series.rounds.append(len(gaps))

    def finish(self) -> Series:
        return self.series

    def close(self) -> None:
        self.program.close()


Gaps = Callable[[random.Random], List[int]]


def uniform_gaps(n: int, low: int, high: int) -> Gaps:
    return lambda rng: [rng.randint(low, high) for _ in range(n)]


def interleave(
    makers: Sequence[Tuple[str, Callable[[], Contender]]], rounds: int, gaps: Gaps, seed: int, notes: List[str]
) -> Dict[str, Series]:
    """Open every contender that can be made, run ``rounds`` rounds of each in turn, and return
    each one's Series. A contender that fails is closed, noted, and left out."""
    rng = random.Random(seed)
    live: List[Contender] = []
    out: Dict[str, Series] = {}
    try:
        for name, make in makers:
            contender = _try(name, make, notes)
            if contender is not None:
                live.append(contender)
        for _ in range(rounds):
            for contender in list(live):
                try:
                    contender.round(gaps(rng), rng.getrandbits(31))
                except (OSError, procs.ChildFailed) as exc:
                    notes.append(f"{contender.name}: failed during a round, left out: {exc}")
                    live.remove(contender)
                    contender.close()
        for contender in live:
            try:
                out[contender.name] = contender.finish()
            except (OSError, procs.ChildFailed) as exc:
                notes.append(f"{contender.name}: failed at the end, left out: {exc}")
    finally:
        for contender in live:
            contender.close()
    return out


def _try(name: str, make: Callable[[], Contender], notes: List[str]) -> Optional[Contender]:
    try:
        return make()
    except Exception as exc:  # an optional baseline that does not work here must not end the run
        notes.append(f"{name}: could not be set up, left out: {type(exc).__name__}: {exc}")
        return None


def python(link_factory: Callable[[], links.Link], name: Optional[str] = None) -> Callable[[], Contender]:
    """A maker for a PythonContender; the link is opened when the contender is made."""

    def make() -> Contender:
        link = link_factory()
        try:
            link.open()
        except BaseException:
            link.close()
            raise
        return PythonContender(link, name)

    return make


def c_futex(binary: str, waiters: int = 1) -> Callable[[], Contender]:
    return lambda: CContender(CFutex(binary, waiters))
