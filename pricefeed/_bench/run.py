"""The pricefeed benchmark: pricefeed beside the physical limit, measured in one run.

Run it wherever pricefeed is installed:

    pricefeed bench                         # the full run: under 10 minutes on 2 cores
    pricefeed bench --quick                 # about a minute at most, fewer samples
    pricefeed bench --only wake,publish --json out.json

It prints a table on stdout (progress goes to stderr) and writes every figure to a JSON file
(``bench-results.json`` by default). It never fails because a target is missed: the exit
status is 0 unless the run itself broke (1), or was interrupted (130 for Ctrl-C, 143 for
SIGTERM or SIGHUP).

How to read it:

* Every figure is measured in the same run as its baseline, in interleaved rounds (A, B, A,
  B, ...), so a slow minute on a shared machine hits both alike. Compare the ratios ("x"
  columns), which travel between runs and machines far better than the times.
* Wake latency runs from the start of ``publish()`` (or the baseline's sending call) to the
  moment the receiving process has the change: for pricefeed, when ``updates()`` yields it.
  Both ends read CLOCK_MONOTONIC, which is one clock for all processes on Linux.
* Baselines: for wake-ups, a C futex wake between two processes (the physical limit,
  compiled at run time), or where there is no C compiler the same in bare ctypes; for rates
  and reads, the "floor": the same stores and loads pricefeed makes, with no checks; for
  delivery, multiprocessing.Pipe carrying the same changes.
* The closing "Targets" table states, for each of pricefeed's performance targets, the
  figure measured and "met", "not met", "not available" (the feature is not in this
  pricefeed yet) or "not measured" (its suite did not run or failed; see the notes).

Every process it starts is killed by pid when it ends, Ctrl-C included; every shared-memory
name it creates (feeds ``bench-<pid>-*``, segments ``/bench-<pid>-*``) is removed.

The comparison with other transports (ZeroMQ, iceoryx2, Pipe, semaphores, eventfd) and the
plots are not part of the package: a checkout's scripts/bench runs them through ``Harness``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import delivery, procs, report, resources, throughput, wake
from .cfutex import compile_program
from .links import PricefeedLink
from .plan import FULL, QUICK, Plan

__all__ = ["Harness", "Suite", "SUITES", "PRICEFEED", "main"]

Result = Dict[str, Any]
#: A suite: (plan, path of the C futex program or None, notes) -> its figures.
Suite = Callable[[Plan, Optional[str], List[str]], Result]


def _scale(label: str) -> Tuple[Suite, Suite]:
    def publish(plan: Plan, binary: Optional[str], notes: List[str]) -> Result:
        points = plan.scale_symbols if label == "symbols" else plan.scale_rings
        return throughput.publish_vs(label, points, plan.publish_calls // 2, plan.throughput_rounds, notes)

    def latency(plan: Plan, binary: Optional[str], notes: List[str]) -> Result:
        if label == "symbols":
            return wake.latency_vs(plan, label, plan.scale_symbols, lambda n: PricefeedLink(symbols=n), notes)
        return wake.latency_vs(plan, label, plan.scale_rings, lambda n: PricefeedLink(ring_size=n), notes)

    return publish, latency


#: Each group --only accepts, and the suites it runs: (key in the JSON file, suite).
SUITES: Mapping[str, Sequence[Tuple[str, Suite]]] = {
    "wake": [("wake", lambda p, b, n: wake.wake_latency(p, b, n))],
    "bursts": [("bursts", lambda p, b, n: wake.bursts(p, n))],
    "publish": [
        ("publish", lambda p, b, n: throughput.publish_rates(p.publish_calls, p.batch, p.throughput_rounds, n))
    ],
    "delivery": [("delivery", lambda p, b, n: delivery.delivery(list(p.delivery_rates), p.delivery_seconds, n))],
    "fanout": [("fanout", lambda p, b, n: wake.fan_out(p, b, p.fan_sizes, n))],
    "targeted": [("targeted", lambda p, b, n: wake.targeted_wakeups(p, n))],
    "reads": [("reads", lambda p, b, n: throughput.reads(p.read_calls, p.snapshot_calls, p.read_rounds, n))],
    "fields": [
        (
            "fields",
            lambda p, b, n: throughput.field_costs(p.publish_calls // 2, p.read_calls, p.throughput_rounds, n),
        )
    ],
    "async": [("async", lambda p, b, n: wake.async_wake(p, n))],
    "scale": [
        ("publish_vs_symbols", _scale("symbols")[0]),
        ("latency_vs_symbols", _scale("symbols")[1]),
        ("publish_vs_ring", _scale("ring")[0]),
        ("latency_vs_ring", _scale("ring")[1]),
    ],
}


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Harness:
    """A benchmark command: its name, its suites and its targets. ``pricefeed bench`` is
    PRICEFEED; a harness that measures more passes its own suites and target checks, and
    ``finish`` to add to the document (plots, say) before it is written."""

    prog: str
    description: str
    suites: Mapping[str, Sequence[Tuple[str, Suite]]]
    checks: Sequence[report.Check]
    options: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    finish: Callable[[argparse.Namespace, Result], None] = lambda args, doc: None

    def parse(self, argv: Optional[Sequence[str]]) -> argparse.Namespace:
        groups = ", ".join(self.suites)
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        parser.add_argument("--quick", action="store_true", help="a shorter run, with fewer samples")
        parser.add_argument("--json", default="bench-results.json", metavar="PATH", help="where to write every figure")
        parser.add_argument("--only", metavar="SUITES", help=f"comma-separated subset of: {groups} (default: all)")
        self.options(parser)
        args = parser.parse_args(argv)
        chosen = args.only.split(",") if args.only else list(self.suites)
        unknown = [s for s in chosen if s not in self.suites]
        if unknown:
            parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {groups}")
        args.suites = chosen
        return args

    def run_suites(self, plan: Plan, chosen: Sequence[str], results: Result, notes: List[str]) -> None:
        """Run each chosen suite into ``results``; a suite that breaks is noted, not fatal."""
        with tempfile.TemporaryDirectory(prefix=f"bench-{os.getpid()}-") as tmp:
            binary, note = compile_program(tmp)
            notes.append(note)
            for group in chosen:
                for key, suite in self.suites[group]:
                    started, load = time.monotonic(), os.getloadavg()[0]
                    progress(f"  {key} ...")
                    try:
                        results[key] = suite(plan, binary, notes)
                        # Other work on the machine moves every figure: keep how busy it was.
                        results[key]["load_average_1min"] = [round(load, 2), round(os.getloadavg()[0], 2)]
                        results[key]["seconds"] = round(time.monotonic() - started, 1)
                    except Exception as exc:  # one broken suite must not cost the figures of the others
                        notes.append(f"{key}: the suite failed and is left out: {type(exc).__name__}: {exc}")
                    finally:
                        procs.kill_all()  # nothing of a suite outlives it
                    progress(f"  {key} done in {time.monotonic() - started:.0f} s")

    def main(self, argv: Optional[Sequence[str]] = None) -> int:
        args = self.parse(argv)
        plan = QUICK if args.quick else FULL
        procs.install_signal_handlers()
        procs.set_timer_slack(1000)
        doc: Result = {
            "plan": plan.name,
            "machine": report.machine(),
            "results": {},
            "notes": [],
            "started": time.time(),
        }
        started = time.monotonic()
        status = 0
        progress(f"pricefeed benchmark, {plan.name} run: {', '.join(args.suites)}")
        try:
            self.run_suites(plan, args.suites, doc["results"], doc["notes"])
        except KeyboardInterrupt:
            doc["notes"].append("interrupted (Ctrl-C): the figures are those of the suites that finished")
            status = 130
        except procs.Stopped as exc:
            doc["notes"].append(f"stopped by {exc}: the figures are those of the suites that finished")
            status = 143
        finally:
            killed = procs.kill_all()
            removed = resources.cleanup()
            if killed:
                doc["notes"].append(f"killed {killed} child process(es) still running at the end")
            if removed:
                doc["notes"].append(f"removed what was left in shared memory: {', '.join(removed)}")
        doc["duration_s"] = time.monotonic() - started
        doc["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        doc["targets"] = report.targets(doc["results"], self.checks)
        self.finish(args, doc)
        report.write_json(doc, args.json)
        print(report.render(doc))
        print(f"\nfigures written to {args.json}")
        return status


PRICEFEED = Harness("pricefeed bench", (__doc__ or "").split("\n\n")[0], SUITES, report.TARGETS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``pricefeed bench``."""
    return PRICEFEED.main(argv)
