"""``pricefeed demo``: a random-walk publisher in a child process and a subscriber here.

The child creates the feed and is its first and only publisher; the subscriber waits for the
feed to appear, so it sees every change from the first and no takeover event. Each change is
printed with its latency, from the publisher's time stamp to the moment the line is printed.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from typing import Callable

from .._errors import FeedNotFound, PricefeedError, Timeout
from .._roles.admin import remove
from .._roles.publisher import Publisher
from .._roles.subscriber import APPEAR_POLL, Subscriber
from .._values import Quote

SYMBOLS = {"AAPL": 187.0, "MSFT": 415.0, "EURUSD": 1.085, "BTCUSD": 67000.0, "ES": 5200.0}
#: How long the subscriber waits for the child to create the feed.
START_SECONDS = 30.0
PRICE_WIDTH = 12

FOOTER = (
    "latency: from the publisher's time stamp to this line's print, Python's print included. The",
    f"  first lines waited for the feed to appear (the subscriber looks every {APPEAR_POLL * 1000:g} ms); after",
    "  them, each change wakes a CPU left idle for 50 to 150 ms: a cold wake-up. `pricefeed bench`",
    "  measures the wake-up of a blocked subscriber itself, in microseconds.",
)


def simulate(feed: str, seconds: float, seed: int) -> None:
    """The publisher side: create the feed, then a random walk of a few symbols, a change every
    50 to 150 ms; end the feed when done."""
    rng = random.Random(seed)
    prices = dict(SYMBOLS)
    with Publisher.create(feed, capacity=16, ring_size=256) as pub:
        pub.publish_many(prices)
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            time.sleep(rng.uniform(0.05, 0.15))
            symbol = rng.choice(list(prices))
            step = prices[symbol] * rng.gauss(0, 0.0005)
            prices[symbol] = round(prices[symbol] + step, 5 if prices[symbol] < 10 else 2)
            pub.publish(symbol, prices[symbol])  # a step that rounds to nothing is no change
        pub.end()


def child_main(feed: str, seconds: float, seed: int) -> None:
    """The child's entry point: Ctrl-C in the terminal reaches it too, and stops it quietly."""
    try:
        simulate(feed, seconds, seed)
    except KeyboardInterrupt:
        sys.exit(130)


def run_demo(seconds: float, out: Callable[[str], None]) -> None:
    feed = f"demo-{os.getpid()}"
    _remove_quietly(feed)  # one left behind by an earlier demo that had this pid
    code = f"from pricefeed._cli.demo import child_main; child_main({feed!r}, {seconds!r}, {os.getpid()})"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        out(f"demo: feed {feed!r}, publisher pid {child.pid}, {seconds:g} s; Ctrl-C stops it")
        with _wait_for(feed, child) as sub:
            changes = _follow(sub, seconds, out)
    finally:
        _stop(child)
        _remove_quietly(feed)
    for line in FOOTER:
        out(line)
    out(f"demo: done, {changes} change{'' if changes == 1 else 's'}; feed removed")


def _wait_for(feed: str, child: subprocess.Popen[bytes]) -> Subscriber:
    try:
        return Subscriber(feed, wait=START_SECONDS)
    except FeedNotFound:
        raise PricefeedError(
            f"the demo's publisher (pid {child.pid}) did not create its feed within {START_SECONDS:g} s"
        ) from None


def _follow(sub: Subscriber, seconds: float, out: Callable[[str], None]) -> int:
    """Print each change until the publisher ends the feed; the number of changes printed."""
    out(f"{'seq':>6}  {'symbol':<8} {'price':>{PRICE_WIDTH}}  {'latency':>10}")
    changes = 0
    try:
        for event in sub.updates(timeout=seconds + 5):
            if not isinstance(event, Quote):
                out(f"# {event!r}")
                continue
            latency_us = (time.time_ns() - event.time_ns) / 1000
            out(f"{event.seq:>6}  {event.symbol:<8} {event.price!r:>{PRICE_WIDTH}}  {latency_us:>7.0f} µs")
            changes += 1
    except Timeout:
        out("demo: the publisher stopped without ending the feed")
    return changes


def _stop(child: subprocess.Popen[bytes]) -> None:
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=5)


def _remove_quietly(feed: str) -> None:
    try:
        remove(feed, force=True)
    except FeedNotFound:
        pass
