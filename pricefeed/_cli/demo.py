"""``pricefeed demo``: a random-walk publisher in a child process and a subscriber here.

The feed is a top of book: each symbol has a bid, an ask and their sizes (fields
bid:f64,ask:f64,bid_size:i64,ask_size:i64), the bid always below the ask and the sizes
positive. A change sets some of them: the prices move (and their sizes with them), or one
size changes alone; the subscriber marks the fields each change set.

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
from typing import Any, Callable, Dict, List

from .._errors import FeedNotFound, PricefeedError, Timeout
from .._roles.admin import remove
from .._roles.publisher import Publisher
from .._roles.subscriber import APPEAR_POLL, Subscriber
from .._values import Quote

#: The demo feed's fields.
FIELDS = "bid:f64,ask:f64,bid_size:i64,ask_size:i64"
#: Each symbol's tick (its prices are whole ticks), the decimals a tick has, its first bid and
#: the usual size of an order.
BOOKS = {
    "AAPL": (0.01, 2, 187.0, 100),
    "MSFT": (0.01, 2, 415.0, 100),
    "EURUSD": (0.00005, 5, 1.085, 1_000_000),
    "BTCUSD": (0.5, 1, 67000.0, 2),
    "ES": (0.25, 2, 5200.0, 20),
}
#: How long the subscriber waits for the child to create the feed.
START_SECONDS = 30.0
PRICE_WIDTH = 11
SIZE_WIDTH = 9

FOOTER = (
    "*: the fields the change set; the others kept their values (one change, one sequence number).",
    "latency: from the publisher's time stamp to this line's print, Python's print included. The",
    f"  first lines waited for the feed to appear (the subscriber looks every {APPEAR_POLL * 1000:g} ms); after",
    "  them, each change wakes a CPU left idle for 50 to 150 ms: a cold wake-up. `pricefeed bench`",
    "  measures the wake-up of a blocked subscriber itself, in microseconds.",
)


class _Book:
    """One symbol's top of book, in whole ticks: the bid, the spread (1 to 3 ticks: the bid
    stays below the ask) and the sizes (at least 1)."""

    def __init__(self, symbol: str, rng: random.Random) -> None:
        self.tick, self.decimals, first, self.lot = BOOKS[symbol]
        self.rng = rng
        self.bid = round(first / self.tick)
        self.spread = 1
        self.bid_size = self._size()
        self.ask_size = self._size()

    def _size(self) -> int:
        return max(1, round(self.rng.expovariate(1 / self.lot)))

    def _price(self, ticks: int) -> float:
        return round(ticks * self.tick, self.decimals)

    def quote(self) -> Dict[str, Any]:
        return {
            "bid": self._price(self.bid),
            "ask": self._price(self.bid + self.spread),
            "bid_size": self.bid_size,
            "ask_size": self.ask_size,
        }

    def step(self) -> Dict[str, Any]:
        """Move the book one random step; the fields to publish (some may keep their value)."""
        if self.rng.random() < 0.5:  # the prices move, and their sizes with them
            self.bid += self.rng.choice((-2, -1, 1, 2))
            self.spread = self.rng.choice((1, 1, 1, 2, 3))
            self.bid_size, self.ask_size = self._size(), self._size()
            return self.quote()
        if self.rng.random() < 0.5:  # an order joins or leaves one side
            self.bid_size = self._size()
            return {"bid_size": self.bid_size}
        self.ask_size = self._size()
        return {"ask_size": self.ask_size}


def simulate(feed: str, seconds: float, seed: int) -> None:
    """The publisher side: create the feed, then a random walk of a few symbols' top of book,
    a change every 50 to 150 ms; end the feed when done."""
    rng = random.Random(seed)
    books = {symbol: _Book(symbol, rng) for symbol in BOOKS}
    with Publisher.create(feed, capacity=16, ring_size=256, fields=FIELDS) as pub:
        pub.publish_many({symbol: book.quote() for symbol, book in books.items()})
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            time.sleep(rng.uniform(0.05, 0.15))
            symbol = rng.choice(list(books))
            pub.publish(symbol, **books[symbol].step())  # a step that sets nothing new is no change
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
        return Subscriber(feed, wait=START_SECONDS, label="pricefeed demo")
    except FeedNotFound:
        raise PricefeedError(
            f"the demo's publisher (pid {child.pid}) did not create its feed within {START_SECONDS:g} s"
        ) from None


def _follow(sub: Subscriber, seconds: float, out: Callable[[str], None]) -> int:
    """Print each change until the publisher ends the feed; the number of changes printed."""
    names = ("bid", "ask", "bid_size", "ask_size")
    widths = (PRICE_WIDTH, PRICE_WIDTH, SIZE_WIDTH, SIZE_WIDTH)
    out(f"{'seq':>6}  {'symbol':<8}" + "".join(f" {n:>{w}} " for n, w in zip(names, widths)) + f" {'latency':>9}")
    changes = 0
    try:
        for event in sub.updates(timeout=seconds + 5):
            if not isinstance(event, Quote):
                out(f"# {event!r}")
                continue
            latency_us = (time.time_ns() - event.time_ns) / 1000
            values = event.fields
            changed = set(event.changed)
            cells: List[str] = [
                f" {values[n]!r:>{w}}{'*' if n in changed else ' '}" for n, w in zip(names, widths) if n in values
            ]
            out(f"{event.seq:>6}  {event.symbol:<8}" + "".join(cells) + f" {latency_us:>6.0f} µs")
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
