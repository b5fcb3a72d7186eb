"""``pricefeed demo``: a random-walk publisher in a child process and a subscriber here."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from typing import Callable

from ._admin import remove
from ._errors import FeedNotFound, Timeout
from ._publisher import Publisher
from ._subscriber import Subscriber
from ._values import Quote

SYMBOLS = {"AAPL": 187.0, "MSFT": 415.0, "EURUSD": 1.085, "BTCUSD": 67000.0, "ES": 5200.0}


def simulate(feed: str, seconds: float, seed: int) -> None:
    """The publisher side: a random walk of a few symbols, a change every 50 to 150 ms."""
    rng = random.Random(seed)
    prices = dict(SYMBOLS)
    with Publisher.open(feed) as pub:
        pub.publish_many(prices)
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            time.sleep(rng.uniform(0.05, 0.15))
            symbol = rng.choice(list(prices))
            step = prices[symbol] * rng.gauss(0, 0.0005)
            prices[symbol] = round(prices[symbol] + step, 5 if prices[symbol] < 10 else 2)
            pub.publish(symbol, prices[symbol])
        pub.end()


def run_demo(seconds: float, out: Callable[[str], None]) -> None:
    feed = f"demo-{os.getpid()}"
    Publisher.create(feed, capacity=16, ring_size=256).close()
    child = None
    try:
        with Subscriber(feed) as sub:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"from pricefeed._demo import simulate; simulate({feed!r}, {seconds!r}, {os.getpid()})",
                ]
            )
            out(f"demo: feed {feed!r}, publisher pid {child.pid}, {seconds:g} s; Ctrl-C stops it")
            out(f"{'seq':>10} {'symbol':<8} {'price':>12}  {'latency':>10}")
            try:
                for event in sub.updates(timeout=seconds + 5):
                    if not isinstance(event, Quote):
                        out(f"# {event!r}")
                        continue
                    lat = (time.time_ns() - event.time_ns) / 1000
                    out(f"{event.seq:>10} {event.symbol:<8} {event.price:>12.5g}  {lat:>7.0f} µs")
            except Timeout:
                out("demo: the publisher stopped without ending the feed")
            out(f"demo: done, {sub.head} changes; feed removed")
    finally:
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        try:
            remove(feed, force=True)
        except FeedNotFound:
            pass
