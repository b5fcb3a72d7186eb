"""Wake-up latency and idle cost of each wait backend that works on this machine, side by side.

    python scripts/platform_latency.py [--changes 400] [--json out.json]

For each usable backend, a subscriber process waiting with that backend (``PRICEFEED_WAIT``)
receives changes published 1 to 3 ms apart (so it is asleep when each arrives), and reports the
time from ``publish()`` to the change in its hands (both ends read ``time.perf_counter_ns()``,
a clock shared by the processes of one machine on Linux and Windows). It then waits 2 s with
nothing changing and reports the CPU time that cost. Every figure is printed beside the first
backend's (the platform's kernel wait: the baseline, measured in the same run) as a ratio.
It runs on Linux, Windows (and under Wine) and wherever pricefeed runs: no fork, no /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

from pricefeed import Publisher
from pricefeed._wait import available

_CHILD = """
import sys, time
from pricefeed import Quote, Subscriber
feed, count = sys.argv[1], int(sys.argv[2])
with Subscriber(feed) as sub:
    print("ready", flush=True)
    lat = []
    for ev in sub.updates(timeout=30):
        if isinstance(ev, Quote):
            lat.append(time.perf_counter_ns() - ev.time_ns)
            if len(lat) == count:
                break
    print(" ".join(map(str, lat)), flush=True)
    cpu = time.process_time()
    try:
        for ev in sub.updates(timeout=2.0):
            pass
    except Exception:
        pass  # the Timeout: nothing changed, as meant
    print(time.process_time() - cpu, flush=True)
"""


def measure(backend: str, changes: int) -> Dict[str, Any]:
    feed = f"lat-{os.getpid()}-{backend[:6]}"
    pub = Publisher.create(feed)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, feed, str(changes)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PRICEFEED_WAIT=backend),
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {backend} subscriber did not start")
        time.sleep(0.2)
        rng = random.Random(1)
        for i in range(changes):
            time.sleep(rng.uniform(0.001, 0.003))
            pub.publish("X", float(i + 1), time_ns=time.perf_counter_ns())
        lat = sorted(int(x) / 1000 for x in child.stdout.readline().split())
        idle_cpu = float(child.stdout.readline())
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=60)
        pub.close()
        from pricefeed import remove

        remove(feed)
    if len(lat) != changes:
        raise RuntimeError(f"the {backend} subscriber saw {len(lat)} of {changes} changes")
    return {
        "backend": backend,
        "changes": changes,
        "p50_us": statistics.median(lat),
        "p99_us": lat[int(len(lat) * 0.99) - 1],
        "max_us": lat[-1],
        "idle_cpu_fraction": idle_cpu / 2.0,
    }


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=400)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    names = [n for n, ok in available().items() if ok]
    results = [measure(n, args.changes) for n in names]
    base = results[0]
    print(f"{platform.system()} {platform.release()} {platform.machine()}, Python {platform.python_version()}")
    print(
        f"{'backend':<10} {'p50 us':>9} {'p99 us':>9} {'max us':>9} {'idle CPU':>9}"
        f"   ratio to {base['backend']} (p50, p99)"
    )
    for r in results:
        print(
            f"{r['backend']:<10} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['max_us']:9.1f} "
            f"{r['idle_cpu_fraction']:8.2%}   {r['p50_us'] / base['p50_us']:.2f}x, {r['p99_us'] / base['p99_us']:.2f}x"
        )
    if args.json:
        report = {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "baseline": base["backend"],
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
