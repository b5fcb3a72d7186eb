"""What the benchmark shows: the machine, the table, the targets, the JSON file.

Every function here reads the plain dicts the suites return (the same that go into the JSON
file), so the table can be printed again from a saved file. The targets are data: ``TARGETS``
lists the checks, each reading the results and stating its targets, and ``targets()`` runs
them, so a harness that measures more (peers, in a checkout's scripts/bench) adds its own.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pricefeed

from . import links, stats
from .stats import rate, times, us

__all__ = ["Target", "TARGETS", "checkout", "lookup", "machine", "render", "target", "targets", "write_json"]

Result = Dict[str, Any]
Target = Dict[str, Any]


# -- the machine ---------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine() -> Result:
    """The facts a reader needs to compare this run with another."""
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(affinity(0)) if affinity else os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pricefeed": pricefeed.__version__,
        "clock": time.get_clock_info("monotonic").implementation,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def checkout(root: str) -> Result:
    """Which commit of a checkout ran, and whether its tracked files were changed: for the
    scripts in scripts/bench, run from one (None where git cannot say)."""
    import subprocess

    def git(*words: str) -> str:
        return subprocess.run(
            ["git", "-C", root, *words], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()

    try:
        commit: Optional[str] = git("rev-parse", "HEAD") or None
        dirty: Optional[bool] = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = None, None
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pricefeed_commit": commit,
        "pricefeed_tree_modified": dirty,
        "pricefeed_env": {k: v for k, v in os.environ.items() if k.startswith("PRICEFEED_")},
        "cpu_pinning": "none",
    }


# -- tables --------------------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1, indent: str = "  ") -> List[str]:
    """Aligned columns: the first ``left`` to the left (names), the rest to the right (figures)."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    out = []
    for row in (headers, *rows):
        cells = [str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        out.append(indent + "  ".join(cells).rstrip())
    return out


def lookup(d: Any, *path: str) -> Any:
    """``d[path[0]][path[1]]...``, or None where a step is missing."""
    for step in path:
        if not isinstance(d, dict) or step not in d:
            return None
        d = d[step]
    return d


def _wake(r: Result) -> List[str]:
    base = r.get("baseline") or "none (the baseline failed: see the notes)"
    low, high = (x // 1000 for x in r["pacing_ns"])
    title = (
        "1. Wake latency: from the start of publish() until the change is in the receiver's hands, "
        f"receiver blocked, changes {low}-{high} µs apart; ratios to {base} (and p50 to the bare ctypes futex)"
    )
    bare = lookup(r, "series", links.FutexLink.name, "latency_ns", "p50")
    rows = []
    for name, s in r["series"].items():
        lat = s["latency_ns"]
        wakes = s.get("wakeups_per_change")
        percentiles = [us(lat.get(p)) for p in ("p50", "p90", "p99", "p99.9", "max")]
        ratios = [times(s.get("p50_ratio")), times(s.get("p99_ratio")), times(stats.ratio(lat.get("p50"), bare))]
        wakes_text = "-" if wakes is None else f"{wakes:.2f}"
        rows.append([name, f"{int(lat['n'])}", *percentiles, *ratios, us(s["call_ns"].get("p50")), wakes_text])
    headers = ["contender", "n", "p50", "p90", "p99", "p99.9", "max", "p50 x", "p99 x", "p50 x ctypes"]
    return [title, *_table([*headers, "send call", "wakes/chg"], rows)]


def _async(r: Result) -> List[str]:
    base = r.get("baseline") or "none (the baseline failed: see the notes)"
    low, high = (x // 1000 for x in r["pacing_ns"])
    title = (
        f"9. asyncio wake latency: aupdates() (loop waiter: {r.get('loop_wait')}) beside the blocking updates() "
        f"({base}), changes {low}-{high} µs apart; the io_uring line is the floor of any loop woken by the kernel"
    )
    rows = []
    for name, s in r["series"].items():
        lat = s["latency_ns"]
        percentiles = [us(lat.get(p)) for p in ("p50", "p90", "p99", "max")]
        rows.append([name, f"{int(lat['n'])}", *percentiles, times(s.get("p50_ratio")), times(s.get("p99_ratio"))])
    return [title, *_table(["contender", "n", "p50", "p90", "p99", "max", "p50 x", "p99 x"], rows)]


def _bursts(r: Result) -> List[str]:
    b = r["burst"]
    spin = r.get("spin_option")
    budget = "not available" if spin is None else f"{spin['name']}={spin['value']}"
    title = (
        f"2. Bursts of {b['size']} changes {b['gap_ns'][0] // 1000}-{b['gap_ns'][1] // 1000} µs apart, "
        f"{b['pause_ns'][0] // 1000}-{b['pause_ns'][1] // 1000} µs between bursts; spin-before-block: {budget}"
    )
    rows = []
    for name, s in r["series"].items():
        first, inside = s["first_of_burst_ns"], s["inside_burst_ns"]
        cells = [us(first.get("p50")), us(first.get("p99")), us(inside.get("p50")), us(inside.get("p99"))]
        rows.append([name, *cells, str(s["lost"])])
    return [title, *_table(["contender", "first p50", "first p99", "inside p50", "inside p99", "lost"], rows)]


def _rates(title: str, r: Result, ratio_label: str = "x floor") -> List[str]:
    rows = []
    for name, s in r["series"].items():
        ns = s["ns_per_op"]
        follower = s.get("follower")
        seen = "" if not follower else f"{follower['changes']} got, {follower['gaps']} gaps"
        cells = [us(ns.get("p50")), us(ns.get("min")), us(ns.get("max")), rate(s.get("per_second"))]
        rows.append([name, *cells, times(s.get("cost_ratio")), seen])
    headers = ["contender", "per op p50", "min", "max", "rate at p50", ratio_label, "subscriber"]
    return [title, *_table(headers, rows)]


def _delivery(r: Result) -> List[str]:
    names = list(r["highest_followed"])
    title = (
        f"4. Delivery: changes offered in batches of {r['batch']}, {r['seconds_per_step']:g} s a step; followed = "
        "every change, no Gap, the marker within 10 ms; got = changes taken per second"
    )
    headers = ["rate"]
    for name in names:
        headers += [f"{name}: offered", "got", "gaps", "lag ms", "followed"]
    rows = []
    for step in r["steps"]:
        row = [rate(step["rate"])]
        for name in names:
            s = step.get(name)
            if s is None:
                row += ["-"] * 5
                continue
            row += [rate(s["offered_per_second"]), rate(s["delivered_per_second"]), str(s["gaps"])]
            row += [f"{s['lag_ns'] / 1e6:.1f}", "yes" if s["followed"] else "NO"]
        rows.append(row)
    best = ["highest followed"]
    for name in names:
        best += [rate(r["highest_followed"][name]), "", "", "", ""]
    return [title, *_table(headers, [*rows, best])]


def _fanout(r: Result) -> List[str]:
    title = (
        "5. Fan-out (and 7, scale with subscribers): k blocked receivers and one change: time until the last "
        f"one has it, the sender's call, each receiver's memory; ratios to {r.get('baseline') or 'none'}"
    )
    rows = []
    for k, size in r["sizes"].items():
        for name, s in size["series"].items():
            lat, call = s["latency_ns"], s["call_ns"]
            last = [us(lat.get("p50")), us(lat.get("p99")), us(lat.get("max")), times(s.get("p50_ratio"))]
            cost = [us(call.get("p50")), us(call.get("p99")), _kib(s.get("receiver_rss_growth_kib"))]
            rows.append([k, name, f"{int(lat['n'])}", *last, *cost])
    headers = ["k", "contender", "n", "last p50", "last p99", "last max", "p50 x", "call p50", "call p99", "rss/sub"]
    return [title, *_table(headers, rows)]


def _kib(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value / 1024:.1f}MiB" if value >= 1024 else f"{value:.0f}KiB"


def _bytes(value: Optional[float]) -> str:
    return "-" if value is None else _kib(value / 1024)


def _targeted(r: Result) -> List[str]:
    if "error" in r:
        return [f"   targeted wake-ups: {r['error']}"]
    return [
        f"5b. Targeted wake-ups: {r['receivers']} receivers, each following its own symbol",
        f"  {r['wakeups']} wake-ups for {r['changes']} changes, each of concern to one receiver: "
        f"{r['wakeups_per_concerning_change']:.1f} per change (its receiver had it after "
        f"{us(r['latency_ns'].get('p50'))} µs, p50); besides, each idle receiver woke "
        f"{r['idle_wakeups_per_second_per_receiver']:.1f} times a second on its own",
    ]


def _scale(label: str, publish: Optional[Result], latency: Optional[Result]) -> List[str]:
    points = (publish or latency or {}).get("points", [])
    rows = []
    for p in points:
        name = f"{label}={p}"
        pub = lookup(publish, "series", name) or {}
        lat = lookup(latency, "series", name) or {}
        cost = [us(lookup(pub, "ns_per_op", "p50")), times(pub.get("cost_ratio"))]
        wake = [us(lookup(lat, "latency_ns", "p50")), us(lookup(lat, "latency_ns", "p99")), times(lat.get("p50_ratio"))]
        memory = [_bytes(pub.get("segment_bytes") or lat.get("segment_bytes"))]
        memory += [_kib(pub.get("publisher_rss_growth_kib")), _kib(lat.get("receiver_rss_growth_kib"))]
        rows.append([f"{p:,}", *cost, *wake, *memory])
    headers = [label, "publish", "x first", "wake p50", "wake p99", "x first", "segment", "pub rss+", "sub rss+"]
    return _table(headers, rows)


def _busy(section: Result) -> str:
    """How busy the machine was while a section ran: its 1-minute load average, before and after."""
    load = section.get("load_average_1min")
    return f" [load {load[0]:g} to {load[1]:g}]" if load else ""


def render(doc: Result) -> str:
    """The whole report as text: machine, every section measured, the targets, the notes."""
    m, r = doc["machine"], doc["results"]
    lines = [
        f"pricefeed benchmark, {doc['plan']} run, {doc['duration_s']:.0f} s",
        f"machine: {m['usable_cores']} of {m['cores']} cores, {m['cpu']}, {m['memory_gib']} GiB, {m['kernel']} "
        f"({m['arch']}), {m['python']}, pricefeed {m['pricefeed']}",
        f"load average {m['load_average_at_start']} at the start, {doc.get('load_average_at_end')} at the end "
        "(other work on the machine moves absolute times; [load a to b] marks each section)",
        "times in µs unless marked; a ratio (x) divides by the baseline measured in the same interleaved rounds",
        "",
    ]
    sections: List[Tuple[str, Callable[[], List[str]]]] = [
        ("wake", lambda: _wake(r["wake"])),
        ("bursts", lambda: _bursts(r["bursts"])),
        ("publish", lambda: _rates("3. Publish: cost per change (1,000 symbols), beside the floors", r["publish"])),
        ("delivery", lambda: _delivery(r["delivery"])),
        ("fanout", lambda: _fanout(r["fanout"])),
        ("targeted", lambda: _targeted(r["targeted"])),
        ("reads", lambda: _rates("6. Reads (1,000 symbols), beside the floors", r["reads"])),
        (
            "fields",
            lambda: _rates("8. Records: publish every field, get, by schema size", r["fields"], "x 1 field"),
        ),
        ("async", lambda: _async(r["async"])),
    ]
    for key, draw in sections:
        if key in r:
            title, *rest = draw()
            lines += [title + _busy(r[key]), *rest, ""]
    for label, title in (("symbols", "7. Scale: number of symbols"), ("ring", "7. Scale: ring size")):
        pub, lat = r.get(f"publish_vs_{label}"), r.get(f"latency_vs_{label}")
        if pub or lat:
            busy = _busy(lat or pub or {})
            lines += [f"{title} (publish cost and wake latency; x first = ratio to the smallest){busy}"]
            lines += [*_scale(label, pub, lat), ""]
    lines += ["Targets"]
    rows = [[t["status"], t["target"], t["measured"]] for t in doc["targets"]]
    lines += _table(["status", "target", "measured"], rows, left=3)
    if doc["notes"]:
        lines += ["", "Notes"] + [f"  - {n}" for n in doc["notes"]]
    return "\n".join(lines)


# -- targets -------------------------------------------------------------------------------------
Check = Callable[[Result], List[Target]]


def target(text: str, value: Optional[float], limit: float, measured: str, below: bool = True) -> Target:
    """One target: "met" when ``value`` is at most ``limit`` (at least, if not ``below``),
    "not measured" when there is no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {"target": text, "measured": "-", "value": None, "status": "not measured"}
    ok = value <= limit if below else value >= limit
    return {"target": text, "measured": measured, "value": value, "limit": limit, "status": "met" if ok else "not met"}


def _c_ratio(section: Optional[Result], series: Optional[Result], p: str) -> Optional[float]:
    """The series' ratio at ``p`` to the C futex, or None where the baseline was another."""
    return series.get(f"{p}_ratio") if series and lookup(section, "baseline") == "C futex" else None


def _latency_targets(r: Result) -> List[Target]:
    pf = lookup(r, "wake", "series", "pricefeed") or {}
    out = []
    for p in ("p50", "p99"):
        ratio = _c_ratio(r.get("wake"), pf, p)
        theirs = lookup(r, "wake", "series", "C futex", "latency_ns", p)
        measured = f"{times(ratio)} ({us(lookup(pf, 'latency_ns', p))} vs {us(theirs)} µs)" if ratio else ""
        out.append(target(f"wake latency {p} <= 2.0x C futex {p}", ratio, 2.0, measured))
    return out


def _spin_target(r: Result) -> List[Target]:
    text = "with a spin budget, changes inside it seen with p50 < 1 µs"
    bursts = r.get("bursts")
    if bursts is None:
        return [target(text, None, 1000, "")]
    if bursts.get("spin_option") is None:
        inside = lookup(bursts, "series", "pricefeed", "inside_burst_ns", "p50")
        measured = f"no spin option yet (without one, inside a burst: {us(inside)} µs p50)"
        return [{"target": text, "measured": measured, "value": None, "status": "not available"}]
    spin: Result = next((s for n, s in bursts["series"].items() if n.startswith("pricefeed ")), {})
    value = lookup(spin, "inside_burst_ns", "p50")
    return [target(text, value, 1000, f"{us(value)} µs")]


def _rate_targets(r: Result) -> List[Target]:
    out = []
    series = lookup(r, "publish", "series") or {}
    batch = lookup(r, "publish", "batch")
    for label, name, limit in (
        ("single publish >= 400,000/s", "publish", 400_000),
        ("single publish >= 400,000/s, 1 subscriber", "publish, 1 subscriber", 400_000),
        ("publish_many >= 1.5M changes/s", f"publish_many({batch})", 1_500_000),
        ("publish_many >= 1.5M changes/s, 1 subscriber", f"publish_many({batch}), 1 subscriber", 1_500_000),
    ):
        value = lookup(series, name, "per_second")
        out.append(target(label, value, limit, rate(value), below=False))
    best = lookup(r, "delivery", "highest_followed", "pricefeed")
    tested = max((s["rate"] for s in lookup(r, "delivery", "steps") or []), default=None)
    measured = rate(best) if best else f"none of the rates tried (up to {rate(tested)})"
    follows = target("a subscriber follows >= 500,000 changes/s without a gap", best, 500_000, measured, below=False)
    if best is None and tested is not None:
        follows.update(status="not met", value=0)
    out.append(follows)
    return out


def _fanout_target(r: Result) -> List[Target]:
    s = lookup(r, "fanout", "sizes", "100", "series", "pricefeed") or {}
    ratio = _c_ratio(r.get("fanout"), s, "p50")
    c = lookup(r, "fanout", "sizes", "100", "series", "C futex", "latency_ns", "p50")
    measured = f"{times(ratio)} ({us(lookup(s, 'latency_ns', 'p50'))} vs {us(c)} µs, p50)"
    return [target("fan-out to 100: time to the last <= 1.5x C futex", ratio, 1.5, measured if ratio else "")]


def _read_targets(r: Result) -> List[Target]:
    get = lookup(r, "reads", "series", "get", "ns_per_op", "p50")
    snap = lookup(r, "reads", "series", "snapshot (1,000 symbols)", "ns_per_op", "p50")
    return [
        target("get < 1.5 µs", get, 1500, f"{us(get)} µs"),
        target("snapshot of 1,000 symbols < 1 ms", snap, 1_000_000, f"{us(snap)} µs"),
    ]


def _field_targets(r: Result) -> List[Target]:
    out = []
    for op in ("publish", "get"):
        ratio = lookup(r, "fields", "series", f"{op}, 4 fields", "cost_ratio")
        one = lookup(r, "fields", "series", f"{op}, 1 field", "ns_per_op", "p50")
        four = lookup(r, "fields", "series", f"{op}, 4 fields", "ns_per_op", "p50")
        measured = f"{times(ratio)} ({us(four)} vs {us(one)} µs)" if ratio else ""
        out.append(target(f"{op} of a 4-field record <= 1.3x a 1-field one", ratio, 1.3, measured))
    return out


def _targeted_target(r: Result) -> List[Target]:
    t = r.get("targeted") or {}
    value = t.get("wakeups_per_concerning_change")
    measured = f"{value:.1f} wake-ups per change ({t.get('wakeups')} for {t.get('changes')})" if value else ""
    text = "100 subscribers on own symbols: wake-ups <= 2x the changes that concern them"
    return [target(text, value, 2.0, measured)]


def _async_target(r: Result) -> List[Target]:
    out = []
    for loop in ("asyncio", "uvloop"):
        s = lookup(r, "async", "series", f"pricefeed aupdates ({loop})") or {}
        ratio = s.get("p50_ratio") if lookup(r, "async", "baseline") == "pricefeed" else None
        blocking = lookup(r, "async", "series", "pricefeed", "latency_ns", "p50")
        measured = f"{times(ratio)} ({us(lookup(s, 'latency_ns', 'p50'))} vs {us(blocking)} µs)" if ratio else ""
        out.append(target(f"aupdates ({loop}) wake latency p50 <= 1.5x the blocking iterator's", ratio, 1.5, measured))
    return out


#: pricefeed's performance targets, in the order the table lists them.
TARGETS: Sequence[Check] = (
    _latency_targets,
    _spin_target,
    _rate_targets,
    _fanout_target,
    _read_targets,
    _field_targets,
    _targeted_target,
    _async_target,
)


def targets(results: Result, checks: Sequence[Check] = TARGETS) -> List[Target]:
    """Each performance target, with the figure measured and "met", "not met", "not
    available" (the feature does not exist yet) or "not measured" (its suite did not run)."""
    return [t for check in checks for t in check(results)]


# -- files ---------------------------------------------------------------------------------------
def write_json(doc: Result, path: str) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False, default=_jsonable)
        f.write("\n")


def _jsonable(value: object) -> object:
    raise TypeError(f"not JSON: {value!r}")
