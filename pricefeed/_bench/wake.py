"""The latency suites: wake latency, bursts, fan-out, targeted wake-ups, latency against scale.

Each suite returns a dict for the JSON file; each series in it is named after its contender,
and carries its ratio to the suite's baseline, measured in the same interleaved rounds. The
baseline of wake latency and fan-out is the physical limit (``futex_baseline``); a harness
that compares pricefeed with other transports passes them in as ``more`` contenders.
"""

from __future__ import annotations

import inspect
import os
import random
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import Subscriber
from . import links, procs, stats
from .latency import Contender, Gaps, Series, c_futex, interleave, pause, python, uniform_gaps
from .plan import Plan

__all__ = [
    "Maker",
    "futex_baseline",
    "with_receivers",
    "wake_latency",
    "bursts",
    "fan_out",
    "targeted_wakeups",
    "latency_vs",
    "spin_option",
    "async_wake",
]

Result = Dict[str, Any]
Maker = Tuple[str, Callable[[], Contender]]


def _with_ratios(series: Dict[str, Series], baseline: Optional[str]) -> Result:
    """Each series as a dict, with its p50 and p99 as ratios to the baseline's."""
    out: Result = {}
    base = series.get(baseline) if baseline else None
    for name, s in series.items():
        d = s.as_dict()
        if base is not None:
            for p in ("p50", "p99"):
                d[f"{p}_ratio"] = stats.ratio(d["latency_ns"].get(p), base.as_dict()["latency_ns"].get(p))
        out[name] = d
    return out


def futex_baseline(binary: Optional[str], receivers: int = 1) -> Maker:
    """The physical limit of a blocking wake-up: the C futex where a C compiler built it, else
    the bare ctypes futex (the least a Python receiver can do)."""
    if binary:
        return "C futex", c_futex(binary, receivers)
    return links.FutexLink.name, python(with_receivers(links.FutexLink, receivers))


def wake_latency(plan: Plan, binary: Optional[str], notes: List[str], more: Sequence[Maker] = ()) -> Result:
    """(1) One blocked receiver per contender: pricefeed beside the futex baseline, and
    ``more`` contenders if given (a harness that compares pricefeed with its peers)."""
    baseline = futex_baseline(binary)
    makers: List[Maker] = [("pricefeed", python(links.PricefeedLink)), baseline, *more]
    gaps = uniform_gaps(plan.latency_per_round, plan.gap_low, plan.gap_high)
    series = interleave(makers, plan.latency_rounds, gaps, seed=1, notes=notes)
    name = baseline[0] if baseline[0] in series else None
    return {
        "baseline": name,
        "pacing_ns": [plan.gap_low, plan.gap_high],
        "series": _with_ratios(series, name),
    }


def async_wake(plan: Plan, notes: List[str]) -> Result:
    """(8) One blocked receiver per contender, as in (1), for asyncio: ``aupdates()`` on
    asyncio's loop and on uvloop's beside the blocking ``updates()`` (the baseline, in the same
    rounds), and the floor of any event loop woken by the kernel here: a bare asyncio loop
    watching an io_uring futex wait. Which waiter ``aupdates()`` used is noted."""
    from .._roles import loopwait
    from .._wait import select

    makers: List[Maker] = [
        ("pricefeed", python(links.PricefeedLink)),
        ("pricefeed aupdates (asyncio)", python(lambda: links.AsyncPricefeedLink("asyncio"))),
        ("pricefeed aupdates (uvloop)", python(lambda: links.AsyncPricefeedLink("uvloop"))),
        (links.RingFloorLink.name, python(links.RingFloorLink)),
    ]
    gaps = uniform_gaps(plan.latency_per_round, plan.gap_low, plan.gap_high)
    series = interleave(makers, plan.latency_rounds, gaps, seed=8, notes=notes)
    backend = select()
    ring = backend.ring()
    if ring is not None:
        ring.close()
        mode = "ring"
    else:
        mode = "thread" if backend.futex_words and backend.can_wait_many() else "executor"
    cap = os.environ.get(loopwait.ENV)
    if cap and loopwait.MODES.index(cap) < loopwait.MODES.index(mode):
        mode = cap
    return {
        "baseline": "pricefeed" if "pricefeed" in series else None,
        "loop_wait": mode,
        "pacing_ns": [plan.gap_low, plan.gap_high],
        "series": _with_ratios(series, "pricefeed" if "pricefeed" in series else None),
    }


def spin_option() -> Optional[Tuple[str, Any]]:
    """The keyword of updates() that sets a spin-before-block budget, if this pricefeed has one,
    with a 50 µs budget in its unit (a name ending _us: µs; _ns: ns; else seconds, like timeout)."""
    for name in inspect.signature(Subscriber.updates).parameters:
        if "spin" in name:
            value: Any = 50 if name.endswith("_us") else 50_000 if name.endswith("_ns") else 50e-6
            return name, value
    return None


def _burst_gaps(plan: Plan) -> Gaps:
    def gaps(rng: random.Random) -> List[int]:
        out = []
        for _ in range(plan.bursts_per_round):
            out.append(rng.randint(*plan.burst_pause))
            out += [rng.randint(*plan.burst_gap) for _ in range(plan.burst_size - 1)]
        return out

    return gaps


def bursts(plan: Plan, notes: List[str]) -> Result:
    """(2) Bursty traffic: the first change of a burst finds the receiver blocked, the others
    arrive 10-40 µs after the one before, inside a spin budget if the receiver has one."""
    makers: List[Maker] = [("pricefeed", python(links.PricefeedLink))]
    spin = spin_option()
    if spin is None:
        notes.append("spin-before-block: not available in this pricefeed (no 'spin' option in updates())")
    else:
        name, value = spin
        label = f"pricefeed {name}={value}"
        makers.append((label, python(lambda: links.PricefeedLink(options={name: value}), label)))
    makers.append((links.FutexLink.name, python(links.FutexLink)))
    series = interleave(makers, plan.burst_rounds, _burst_gaps(plan), seed=2, notes=notes)
    out: Result = {
        "spin_option": None if spin is None else {"name": spin[0], "value": spin[1]},
        "burst": {"size": plan.burst_size, "gap_ns": list(plan.burst_gap), "pause_ns": list(plan.burst_pause)},
        "series": {},
    }
    for name, s in series.items():
        first = [v for i, v in enumerate(s.aligned) if v is not None and i % plan.burst_size == 0]
        inside = [v for i, v in enumerate(s.aligned) if v is not None and i % plan.burst_size != 0]
        out["series"][name] = {
            "first_of_burst_ns": stats.summarise(first),
            "inside_burst_ns": stats.summarise(inside),
            "lost": s.lost,
        }
    return out


def fan_out(
    plan: Plan,
    binary: Optional[str],
    sizes: Sequence[int],
    notes: List[str],
    more: Callable[[int], Sequence[Maker]] = lambda k: (),
) -> Result:
    """(5, 7) k blocked receivers and one change at a time: time until the last has it, and
    the cost of the sender's call, for pricefeed and the futex baseline (and ``more(k)``)."""
    out: Result = {"baseline": futex_baseline(binary)[0], "sizes": {}}
    for k in sizes:
        makers: List[Maker] = [("pricefeed", python(with_receivers(links.PricefeedLink, k))), futex_baseline(binary, k)]
        makers += more(k)
        gaps = uniform_gaps(plan.fan_count(k), *plan.fan_gap(k))
        series = interleave(makers, plan.fan_rounds, gaps, seed=3 + k, notes=notes)
        out["sizes"][str(k)] = {"pacing_ns": list(plan.fan_gap(k)), "series": _with_ratios(series, out["baseline"])}
    return out


def with_receivers(kind: Callable[..., links.Link], k: int) -> Callable[[], links.Link]:
    """A factory of ``kind`` links with ``k`` receivers."""
    return lambda: kind(receivers=k)


def targeted_wakeups(plan: Plan, notes: List[str]) -> Result:
    """(targets) k receivers, each following its own symbol, and changes spread over the k
    symbols: how many times were the receivers woken, against the changes that concern them?

    Wake-ups are read from each receiver's /proc/PID/status (voluntary context switches). A
    subscriber may also wake on a timer while idle (to notice a dead publisher, say): that rate
    is measured first, over an idle second, and taken off, so the figure counts the wake-ups
    the changes caused."""
    k = plan.targeted_receivers
    link = links.PricefeedLink(receivers=k, symbols=k, own_symbol=True)
    try:
        link.open()
        pids = link.pids()
        idle_seconds = 1.0
        before_idle = procs.voluntary_switches(pids)
        time.sleep(idle_seconds)
        before = procs.voluntary_switches(pids)
        started = time.monotonic()
        rng = random.Random(4)
        low, high = plan.fan_gap(k)
        for i in range(1, plan.targeted_changes + 1):
            pause(rng.randint(low, high))
            link.send(i)
        elapsed = time.monotonic() - started
        after = procs.voluntary_switches(pids)
        received = link.finish(plan.targeted_changes)
    finally:
        link.close()
    idle_rate = (before - before_idle) / idle_seconds
    driven = max(0.0, after - before - idle_rate * elapsed)
    counted = [r.extra.get("woken") for r in received]
    if all(isinstance(c, int) for c in counted):
        # The subscribers' own count of waits that a change (not a timer) ended: exact, where
        # the context switches above, less an idle rate, are only an estimate.
        # The end of the feed wakes every receiver once more: that one is not a change's.
        driven = float(max(0, sum(c for c in counted if isinstance(c, int)) - k))
        notes.append(
            "targeted wake-ups: counted by each subscriber (waits ended by a word, not by a timer), "
            "less the one wake-up each gets from the end of the feed"
        )
    changes = plan.targeted_changes
    owners = [received[i % k].latency.get(i) for i in range(1, changes + 1)]  # change i concerns receiver i % k
    latency = [v for v in owners if v is not None]
    return {
        "receivers": k,
        "changes": changes,
        "wakeups": round(driven),
        "wakeups_per_concerning_change": driven / changes,
        "idle_wakeups_per_second_per_receiver": idle_rate / k,
        "latency_ns": stats.summarise(latency),
        "lost": changes - len(latency),
    }


def latency_vs(
    plan: Plan, label: str, points: Sequence[int], factory: Callable[[int], links.PricefeedLink], notes: List[str]
) -> Result:
    """(7) Wake latency and memory of pricefeed at each point of a scale (symbols, ring size),
    the points interleaved, each as a ratio to the first point."""
    feeds: Dict[str, int] = {}

    def maker(point: int) -> Maker:
        name = f"{label}={point}"

        def make() -> Contender:
            link = factory(point)
            feeds[name] = link.pub.geometry.size
            return python(lambda: link, name)()

        return name, make

    gaps = uniform_gaps(plan.scale_per_round, plan.gap_low, plan.gap_high)
    series = interleave([maker(p) for p in points], plan.scale_rounds, gaps, seed=5, notes=notes)
    first = f"{label}={points[0]}"
    out = _with_ratios(series, first)
    for name, d in out.items():
        d["segment_bytes"] = feeds.get(name)
    return {"baseline": first, "points": list(points), "series": out}
