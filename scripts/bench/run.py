#!/usr/bin/env python3
"""pricefeed beside its peers and the physical limit, in one run: the comparison harness.

From a checkout (with pricefeed installed, or at least importable from the checkout):

    python3 scripts/bench/run.py                  # the full run: under 10 minutes on 2 cores
    python3 scripts/bench/run.py --quick          # about a minute, fewer samples
    python3 scripts/bench/run.py --only wake,fanout --json out.json --plot docs/img

It is ``pricefeed bench`` (pricefeed._bench: the same suites, options, table, JSON file and
exit codes, read its run.py for how to read the output) with more contenders: the wake
latency suite also measures the bare ctypes futex, multiprocessing.Pipe, a posix_ipc
semaphore, os.eventfd and, when installed (``pip install -e '.[baselines]'``), ZeroMQ and
iceoryx2; fan-out also measures the bare ctypes futex. The targets gain one about the peers,
and ``--plot DIR`` draws the PNGs (``pip install -e '.[plot]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

if __package__ in (None, ""):  # run as a file: the checkout, not this folder, goes on sys.path
    _here, _root = Path(__file__).resolve().parent, str(Path(__file__).resolve().parents[2])
    if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == _here:
        sys.path[0] = _root
    else:  # a Python that does not put the script's folder first (an embeddable one, say)
        sys.path.insert(0, _root)

from pricefeed._bench import report, wake
from pricefeed._bench.plan import Plan
from pricefeed._bench.run import SUITES, Harness
from scripts.bench import peers
from scripts.bench.plots import plot

Result = Dict[str, Any]


def _wake(plan: Plan, binary: Optional[str], notes: List[str]) -> Result:
    return wake.wake_latency(plan, binary, notes, peers.wake_contenders(binary, notes))


def _fanout(plan: Plan, binary: Optional[str], notes: List[str]) -> Result:
    return wake.fan_out(plan, binary, plan.fan_sizes, notes, lambda k: peers.fanout_contenders(binary, k))


def _plot_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plot", metavar="DIR", help="draw PNG plots into DIR (needs matplotlib)")


def _draw(args: argparse.Namespace, doc: Result) -> None:
    if args.plot:
        doc["notes"].append(plot(doc, args.plot))


PEERS = Harness(
    prog="scripts/bench/run.py",
    description=(__doc__ or "").split("\n\n")[0],
    suites={**SUITES, "wake": [("wake", _wake)], "fanout": [("fanout", _fanout)]},
    # The peers' target goes with the wake latency ones, first in the table.
    checks=(report.TARGETS[0], peers.kernel_target, *report.TARGETS[1:]),
    options=_plot_option,
    finish=_draw,
)


if __name__ == "__main__":
    sys.exit(PEERS.main())
