"""What the benchmark shows: the machine, the table, the targets, the JSON file, the plots.

Every function here reads the plain dicts the suites return (the same that go into the JSON
file), so the table can be printed again from a saved file.
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

__all__ = ["machine", "render", "targets", "write_json", "plot"]

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


# -- tables --------------------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1, indent: str = "  ") -> List[str]:
    """Aligned columns: the first ``left`` to the left (names), the rest to the right (figures)."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    out = []
    for row in (headers, *rows):
        cells = [str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        out.append(indent + "  ".join(cells).rstrip())
    return out


def _get(d: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(d, dict) or step not in d:
            return None
        d = d[step]
    return d


def _wake(r: Result) -> List[str]:
    base = r.get("baseline") or "none (no C compiler)"
    low, high = (x // 1000 for x in r["pacing_ns"])
    title = (
        "1. Wake latency: from the start of publish() until the change is in the receiver's hands, "
        f"receiver blocked, changes {low}-{high} µs apart; ratios to {base} (and p50 to the bare ctypes futex)"
    )
    bare = _get(r, "series", links.FutexLink.name, "latency_ns", "p50")
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
        pub = _get(publish, "series", name) or {}
        lat = _get(latency, "series", name) or {}
        cost = [us(_get(pub, "ns_per_op", "p50")), times(pub.get("cost_ratio"))]
        wake = [us(_get(lat, "latency_ns", "p50")), us(_get(lat, "latency_ns", "p99")), times(lat.get("p50_ratio"))]
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
def _target(text: str, value: Optional[float], limit: float, measured: str, below: bool = True) -> Target:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {"target": text, "measured": "-", "value": None, "status": "not measured"}
    ok = value <= limit if below else value >= limit
    return {"target": text, "measured": measured, "value": value, "limit": limit, "status": "met" if ok else "not met"}


def _latency_targets(r: Result) -> List[Target]:
    pf = _get(r, "wake", "series", "pricefeed") or {}
    base = _get(r, "wake", "baseline")
    out = []
    for p in ("p50", "p99"):
        ratio = pf.get(f"{p}_ratio")
        theirs = _get(r, "wake", "series", base or "", "latency_ns", p)
        measured = f"{times(ratio)} ({us(_get(pf, 'latency_ns', p))} vs {us(theirs)} µs)" if ratio else ""
        out.append(_target(f"wake latency {p} <= 2.0x C futex {p}", ratio, 2.0, measured))
    mine = _get(pf, "latency_ns", "p50")
    kernel = {n: _get(r, "wake", "series", n, "latency_ns", "p50") for n in links.kernel_baselines()}
    theirs_p50 = {n: v for n, v in kernel.items() if v is not None}
    worst = max((mine / v for v in theirs_p50.values()), default=None) if mine else None
    detail = f"{us(mine)} vs " + ", ".join(f"{_short(n)} {us(v)}" for n, v in theirs_p50.items()) + " µs"
    missing = [_short(n) for n, v in kernel.items() if v is None]
    if missing:
        detail += f" ({', '.join(missing)}: not measured, see the notes)"
    text = "wake p50 below every kernel-delivered baseline (Pipe, semaphore, ZeroMQ, iceoryx2)"
    out.append(_target(text, worst, 0.999999, detail))
    return out


def _short(name: str) -> str:
    short = {
        links.PipeLink.name: "Pipe",
        links.SemaphoreLink.name: "semaphore",
        links.ZmqLink.name: "ZeroMQ",
        links.IceoryxLink.name: "iceoryx2",
    }
    return short.get(name, name)


def _spin_target(r: Result) -> Target:
    text = "with a spin budget, changes inside it seen with p50 < 1 µs"
    bursts = r.get("bursts")
    if bursts is None:
        return _target(text, None, 1000, "")
    if bursts.get("spin_option") is None:
        inside = _get(bursts, "series", "pricefeed", "inside_burst_ns", "p50")
        measured = f"no spin option yet (without one, inside a burst: {us(inside)} µs p50)"
        return {"target": text, "measured": measured, "value": None, "status": "not available"}
    spin: Result = next((s for n, s in bursts["series"].items() if n.startswith("pricefeed ")), {})
    value = _get(spin, "inside_burst_ns", "p50")
    return _target(text, value, 1000, f"{us(value)} µs")


def _rate_targets(r: Result) -> List[Target]:
    out = []
    series = _get(r, "publish", "series") or {}
    batch = _get(r, "publish", "batch")
    for label, name, limit in (
        ("single publish >= 400,000/s", "publish", 400_000),
        ("single publish >= 400,000/s, 1 subscriber", "publish, 1 subscriber", 400_000),
        ("publish_many >= 1.5M changes/s", f"publish_many({batch})", 1_500_000),
        ("publish_many >= 1.5M changes/s, 1 subscriber", f"publish_many({batch}), 1 subscriber", 1_500_000),
    ):
        value = _get(series, name, "per_second")
        out.append(_target(label, value, limit, rate(value), below=False))
    best = _get(r, "delivery", "highest_followed", "pricefeed")
    tested = max((s["rate"] for s in _get(r, "delivery", "steps") or []), default=None)
    measured = rate(best) if best else f"none of the rates tried (up to {rate(tested)})"
    target = _target("a subscriber follows >= 500,000 changes/s without a gap", best, 500_000, measured, below=False)
    if best is None and tested is not None:
        target.update(status="not met", value=0)
    out.append(target)
    return out


def _fanout_target(r: Result) -> Target:
    s = _get(r, "fanout", "sizes", "100", "series", "pricefeed") or {}
    ratio = s.get("p50_ratio")
    c = _get(r, "fanout", "sizes", "100", "series", "C futex", "latency_ns", "p50")
    measured = f"{times(ratio)} ({us(_get(s, 'latency_ns', 'p50'))} vs {us(c)} µs, p50)"
    return _target("fan-out to 100: time to the last <= 1.5x C futex", ratio, 1.5, measured if ratio else "")


def _read_targets(r: Result) -> List[Target]:
    get = _get(r, "reads", "series", "get", "ns_per_op", "p50")
    snap = _get(r, "reads", "series", "snapshot (1,000 symbols)", "ns_per_op", "p50")
    return [
        _target("get < 1.5 µs", get, 1500, f"{us(get)} µs"),
        _target("snapshot of 1,000 symbols < 1 ms", snap, 1_000_000, f"{us(snap)} µs"),
    ]


def _targeted_target(r: Result) -> Target:
    t = r.get("targeted") or {}
    value = t.get("wakeups_per_concerning_change")
    measured = f"{value:.1f} wake-ups per change ({t.get('wakeups')} for {t.get('changes')})" if value else ""
    return _target("100 subscribers on own symbols: wake-ups <= 2x the changes that concern them", value, 2.0, measured)


def targets(results: Result) -> List[Target]:
    """Each performance target, with the figure measured and "met", "not met", "not
    available" (the feature does not exist yet) or "not measured" (its suite did not run)."""
    return [
        *_latency_targets(results),
        _spin_target(results),
        *_rate_targets(results),
        _fanout_target(results),
        *_read_targets(results),
        _targeted_target(results),
    ]


# -- files ---------------------------------------------------------------------------------------
def write_json(doc: Result, path: str) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False, default=_jsonable)
        f.write("\n")


def _jsonable(value: object) -> object:
    raise TypeError(f"not JSON: {value!r}")


def plot(doc: Result, directory: str) -> str:
    """Draw the PNGs into ``directory`` if matplotlib can be imported; returns a note."""
    try:
        import matplotlib  # type: ignore[import-not-found,import-untyped,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return "--plot: matplotlib is not installed (pip install matplotlib), no plots drawn"
    os.makedirs(directory, exist_ok=True)
    drawn = [p for p in (_plot_latency(plt, doc, directory), _plot_scale(plt, doc, directory)) if p]
    return f"plots: {', '.join(drawn)}" if drawn else "--plot: nothing measured to plot"


def _plot_latency(plt: Any, doc: Result, directory: str) -> Optional[str]:
    series = _get(doc, "results", "wake", "series")
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, s in series.items():
        points = [(p, v / 1000) for p, v in s["distribution_ns"] if p < 100]
        ax.plot([100 / (100 - p) for p, _ in points], [v for _, v in points], marker=".", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000]
    ax.set_xticks(ticks, ["0", "50", "90", "99", "99.9", "99.99"])
    ax.set_xlabel("percentile")
    ax.set_ylabel("wake latency (µs)")
    ax.set_title("Wake latency, one blocked receiver")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path = os.path.join(directory, "latency_distribution.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_scale(plt: Any, doc: Result, directory: str) -> Optional[str]:
    r = doc["results"]
    panels = []
    for label in ("symbols", "ring"):
        pub, lat = r.get(f"publish_vs_{label}"), r.get(f"latency_vs_{label}")
        if pub or lat:
            panels.append((label, pub, lat))
    if "fanout" in r:
        panels.append(("subscribers", None, None))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (label, pub, lat) in zip(axes[0], panels):
        if label == "subscribers":
            _plot_fanout(ax, r["fanout"])
            continue
        points = (pub or lat)["points"]
        for source, field, name in ((pub, "ns_per_op", "publish"), (lat, "latency_ns", "wake p50")):
            if source:
                ys = [_get(source, "series", f"{label}={p}", field, "p50") for p in points]
                ax.plot(points, [y / 1000 if y else math.nan for y in ys], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("symbols in the feed" if label == "symbols" else "ring size (records)")
        ax.set_ylabel("µs (p50)")
        ax.set_title(f"Cost against {label}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    path = os.path.join(directory, "scale.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_fanout(ax: Any, fanout: Result) -> None:
    sizes = [int(k) for k in fanout["sizes"]]
    names = sorted({n for s in fanout["sizes"].values() for n in s["series"]})
    for name in names:
        ys = [_get(fanout, "sizes", str(k), "series", name, "latency_ns", "p50") for k in sizes]
        ax.plot(sizes, [y / 1000 if y else math.nan for y in ys], marker="o", label=f"{name}: to the last")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("blocked subscribers")
    ax.set_ylabel("µs (p50)")
    ax.set_title("One change: time until the last has it")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
