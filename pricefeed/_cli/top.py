"""`pricefeed top`: the arguments and errors of the live view; the view is ``_observe.top``."""

from __future__ import annotations

import math
import shutil
import sys
from typing import Optional

import click

from .._errors import FeedNotFound
from .._observe import top as T
from .main import EXIT_TERMINATED, LS_HINT, _hint, _out, feed_argument, trust_options

#: How long --once measures the rates over when --interval is not given: a quarter of a second
#: holds too few changes of a quiet symbol to say much.
ONCE_SECONDS = 1.0


def _interval(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[float]:
    """--interval: a finite number of seconds in [MIN_INTERVAL, MAX_INTERVAL] (exit 2 otherwise)."""
    if value is None:
        return None
    rule = f"must be a number of seconds from {T.MIN_INTERVAL:g} to {T.MAX_INTERVAL:g}"
    try:
        seconds = float(value.strip())
    except ValueError:
        raise click.BadParameter(f"{rule}: got {value[:40]!r}") from None
    if not math.isfinite(seconds) or not T.MIN_INTERVAL <= seconds <= T.MAX_INTERVAL:
        raise click.BadParameter(f"{rule}: got {value[:40]!r}")
    return seconds


def _filter(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> str:
    if value is None:
        return ""
    if not value or len(value) > T.FILTER_MAX or not all("!" <= c <= "~" for c in value):
        raise click.BadParameter(
            f"must be 1 to {T.FILTER_MAX} printable ASCII characters without spaces (part of a symbol): "
            f"got {value[:40]!r}"
        )
    return value


@click.command(name="top")
@feed_argument()
@click.option("--interval", callback=_interval, metavar="S",
              help=f"Refresh every S seconds ({T.MIN_INTERVAL:g} to {T.MAX_INTERVAL:g}; default "
                   f"{T.DEFAULT_INTERVAL:g}). With --once: how long the rates are measured over (default "
                   f"{ONCE_SECONDS:g}).")  # fmt: skip
@click.option("--sort", type=click.Choice(T.SORTS), default="name", show_default=True,
              help="Order of the symbols: name (A-Z), rate (busiest first), age or seq (newest change "
                   "first).")  # fmt: skip
@click.option("--reverse", is_flag=True, help="The opposite order.")
@click.option("--filter", "filter_text", callback=_filter, metavar="TEXT",
              help="Show only the symbols that contain TEXT (any case).")  # fmt: skip
@click.option("--once", is_flag=True,
              help="Print one frame as plain text (every symbol and subscriber) and exit: for scripts, and "
                   "where there is no terminal.")  # fmt: skip
@trust_options(publisher=False)
def top(feed: str, interval: Optional[float], sort: str, reverse: bool, filter_text: str, once: bool,
        owner: Optional[str], allow_world_writable: bool) -> None:  # fmt: skip
    """A live view of FEED: its state and publisher, its subscribers with their lag, and every
    symbol with its last record, change rate and the age of its last change.

    Keys: q quits; n, r, a, s sort the symbols by name, rate, age or seq (again: reverse), R
    reverses; arrows, j/k, PgUp/PgDn scroll; / filters; p pauses; ? lists them all. It needs
    a terminal (any TERM curses knows; no colours, no mouse); --once prints one frame instead.
    A feed removed meanwhile stays on the screen as last seen, marked removed; one created
    anew under the name, by the same owner, is followed. q exits 0, Ctrl-C 130, SIGTERM 143,
    each leaving the terminal as it was.
    """
    if not once and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.UsageError("top needs a terminal (standard input and output); --once prints one frame as text")
    view = T.View(sort, reverse, filter_text)
    with _hint(FeedNotFound, LS_HINT):
        observer = T.Observer(feed, owner=owner, allow_world_writable=allow_world_writable)
    with observer:
        if once:
            width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
            for line in T.once(observer, view, ONCE_SECONDS if interval is None else interval, width):
                _out(line)
            return
        try:
            T.run_terminal(observer, view, T.DEFAULT_INTERVAL if interval is None else interval)
        except T.Stopped:
            raise click.exceptions.Exit(EXIT_TERMINATED) from None
