#!/usr/bin/env python3
"""What being in the subscriber registry costs a subscriber, beside one that is not.

    python3 scripts/bench/registry_cost.py            # about 15 s on 2 cores
    python3 scripts/bench/registry_cost.py --quick    # about 3 s
    python3 scripts/bench/registry_cost.py --json out.json

A registered subscriber stores its progress in its registry entry (every 32 changes while
changes keep coming, and at each wait). The cost that matters is on the path that takes a change
from a backlog, where nothing else hides it: per round, the publisher publishes N changes with
no subscriber iterating, then a registered and an unregistered subscriber (taking turns to go
first) each take all N. Also measured: opening and closing a subscriber (registering and
leaving), `readers()` on a registry with 0 and 100 live entries (what `status`, `top` and
`metrics` pay per look), and the wake-up latency (publish to the subscriber holding the change,
p50 of changes 2 ms apart) of a subscriber process alone on the feed, registered or not, in
alternating runs. Each figure is the median over rounds, printed beside its baseline
from the same run as a ratio, and written to JSON (`bench-registry.json` by default). Runs once
per implementation (the C accelerator, then the pure-Python reference). Exit 0, 1 if the run
broke, 130 if interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent.parent


def measure(rounds: int, n: int) -> Dict[str, float]:
    from pricefeed import Publisher, Subscriber

    feed = f"bench-{os.getpid()}-reg"
    out: Dict[str, List[float]] = {"taken_registered": [], "taken_unregistered": [], "open_close_registered": [],
                                   "open_close_unregistered": [], "readers_0": [], "readers_100": []}  # fmt: skip
    pub = Publisher.create(feed, ring_size=1 << 18, capacity=64)
    try:
        items = [(f"S{k % 50}", 0.0) for k in range(n)]
        for r in range(rounds):
            order = (True, False) if r % 2 else (False, True)
            for reg in order:
                sub = Subscriber(feed, register=reg)
                it = sub.updates(timeout=5)
                base = float(r * 2 * n + (n if reg else 0))
                pub.publish_many([(s, base + k) for k, (s, _) in enumerate(items)])
                t = time.perf_counter()
                for _ in range(n):
                    next(it)
                out["taken_registered" if reg else "taken_unregistered"].append((time.perf_counter() - t) / n * 1e9)
                it.close()
                sub.close()
            for reg in order:
                t = time.perf_counter()
                for _ in range(50):
                    Subscriber(feed, register=reg).close()
                out["open_close_registered" if reg else "open_close_unregistered"].append(
                    (time.perf_counter() - t) / 50 * 1e9
                )
            with Subscriber(feed, register=False) as look:
                t = time.perf_counter()
                look.readers()
                out["readers_0"].append((time.perf_counter() - t) * 1e9)
                held = [Subscriber(feed) for _ in range(100)]
                try:
                    t = time.perf_counter()
                    got = look.readers()
                    out["readers_100"].append((time.perf_counter() - t) * 1e9)
                    assert len(got.entries) == 100, got
                finally:
                    for s in held:
                        s.close()
    finally:
        pub.unlink()
        pub.close()
    return {k: statistics.median(v) for k, v in out.items()}


LATENCY_CHILD = """
import sys, time
from pricefeed import Subscriber
s = Subscriber(sys.argv[1], register=sys.argv[2] == "1")
it = s.updates()
print("ready", flush=True)
lat = sorted(time.time_ns() - q.time_ns for q in it)
print(lat[len(lat) // 2], flush=True)
"""


def latency(rounds: int, changes: int) -> Dict[str, float]:
    """p50 wake-up latency (ns), median over runs, registered and not: one subscriber process
    at a time, so that neither competes with the other for the two CPUs."""
    from pricefeed import Publisher

    feed = f"bench-{os.getpid()}-lat"
    got: Dict[str, List[float]] = {"latency_registered": [], "latency_unregistered": []}
    for r in range(rounds):
        for reg in ("1", "0") if r % 2 else ("0", "1"):
            pub = Publisher.create(feed)
            try:
                child = subprocess.Popen(
                    [sys.executable, "-c", LATENCY_CHILD, feed, reg], stdout=subprocess.PIPE, text=True
                )
                assert child.stdout is not None
                child.stdout.readline()
                for k in range(changes):
                    pub.publish("A", float(k))
                    time.sleep(0.002)
                pub.end()
                out, _ = child.communicate(timeout=60)
                got["latency_registered" if reg == "1" else "latency_unregistered"].append(float(out))
            finally:
                pub.unlink()
                pub.close()
    return {k: statistics.median(v) for k, v in got.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="bench-registry.json")
    ap.add_argument("--child", choices=["c", "python"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    rounds, n = (5, 50_000) if args.quick else (15, 200_000)
    if args.child:
        import pricefeed

        if pricefeed._protocol.implementation().name != args.child:
            print(f"{args.child} implementation not available", file=sys.stderr)
            return 1
        print(json.dumps({**measure(rounds, n), **latency(4 if args.quick else 10, 500 if args.quick else 1000)}))
        return 0
    results: Dict[str, Dict[str, float]] = {}
    for impl in ("c", "python"):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("PRICEFEED_PURE", None)
        if impl == "python":
            env["PRICEFEED_PURE"] = "1"
        cmd = [sys.executable, __file__, "--child", impl] + (["--quick"] if args.quick else [])
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if p.returncode:
            print(f"{impl}: {p.stderr.strip()}", file=sys.stderr)
            continue
        results[impl] = json.loads(p.stdout)
    if not results:
        return 1
    print(f"registry cost, median of {rounds} rounds ({n:,} changes per subscriber per round)")
    for impl, r in results.items():
        print(f"\n{'C accelerator' if impl == 'c' else 'pure Python'}:")
        pairs = [
            ("take a change from a backlog", "taken_registered", "taken_unregistered"),
            ("open + close a subscriber", "open_close_registered", "open_close_unregistered"),
            ("wake-up latency, p50", "latency_registered", "latency_unregistered"),
        ]
        for what, a, b in pairs:
            print(f"  {what:<30} registered {r[a]:>10,.0f} ns   unregistered {r[b]:>10,.0f} ns   x{r[a] / r[b]:.2f}")
        looks = f"{r['readers_0'] / 1e3:>10,.0f} µs / {r['readers_100'] / 1e3:,.0f} µs"
        print(f"  {'readers(), 0 / 100 entries':<30} {looks}")
    from pricefeed._bench.report import checkout, machine

    doc = {"environment": {**machine(), **checkout(str(ROOT))}, "rounds": rounds, "changes": n, "results": results}
    Path(args.json).write_text(json.dumps(doc, indent=1))
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
