"""The plots of a run (``--plot DIR``): wake latency percentiles, and cost against scale.

Drawn with matplotlib (``pip install -e '.[plot]'``) from the document the run writes to
JSON, so they can be drawn again from a saved file. docs/img holds the ones docs/performance.md
shows.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional

from pricefeed._bench.report import lookup

__all__ = ["plot"]

Result = Dict[str, Any]


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
    series = lookup(doc, "results", "wake", "series")
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
                ys = [lookup(source, "series", f"{label}={p}", field, "p50") for p in points]
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
        ys = [lookup(fanout, "sizes", str(k), "series", name, "latency_ns", "p50") for k in sizes]
        ax.plot(sizes, [y / 1000 if y else math.nan for y in ys], marker="o", label=f"{name}: to the last")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("blocked subscribers")
    ax.set_ylabel("µs (p50)")
    ax.set_title("One change: time until the last has it")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
