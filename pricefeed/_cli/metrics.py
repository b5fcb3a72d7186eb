"""`pricefeed metrics`: a feed's state in the Prometheus text format, printed once or served over
HTTP. The metrics and the server are ``pricefeed._observe.metrics``; this module only reads the
arguments and maps the way the server stopped to an exit code."""

from __future__ import annotations

from typing import Optional, Tuple

import click

from .._errors import FeedNotFound
from .input import parse_symbol
from .main import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    LS_HINT,
    _hint,
    _parsed,
    _plural,
    _reporter,
    feed_argument,
    trust_options,
)


def _address(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[Tuple[str, int]]:
    """--serve's HOST:PORT: an option of the command itself, so a bad one is a usage error (exit 2)."""
    if value is None:
        return None
    from .._observe.metrics import parse_address

    try:
        return parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(name="metrics")
@feed_argument("feeds", nargs=-1, required=True, metavar="FEED...")
@click.option(
    "--serve",
    "address",
    metavar="HOST:PORT",
    callback=_address,
    help="Serve the metrics over HTTP at /metrics on this address until Ctrl-C or SIGTERM, instead of "
    "printing them once: 127.0.0.1:9464, [::1]:9464, or :9464 for every IPv4 interface; port 0 takes "
    "any free port (the address is reported on standard error).",
)
@click.option(
    "--symbol",
    "symbols",
    multiple=True,
    metavar="SYMBOL",
    callback=_parsed(parse_symbol),
    help="Also give this symbol's field values, last change and time (repeatable; one symbol each, since "
    "a symbol may hold a comma).",
)
@click.option(
    "--all-symbols",
    is_flag=True,
    help="Also give every symbol's field values, last change and time: (fields + 2) series per symbol.",
)
@trust_options(publisher=False)
def metrics(
    feeds: Tuple[str, ...],
    address: Optional[Tuple[str, int]],
    symbols: Tuple[str, ...],
    all_symbols: bool,
    owner: Optional[str],
    allow_world_writable: bool,
) -> None:
    """Print the state of each FEED in the Prometheus text format: head sequence (as a counter
    of changes), symbols, capacity, publisher, last change, subscribers with their lag, and the
    values of the symbols asked for; or, with --serve, serve it at /metrics, reading the feeds
    afresh at every scrape. A FEED missing exits 3 when printing; when serving, it shows as
    pricefeed_up 0 until it can be read, and stderr says why; it runs until Ctrl-C (exit 130)
    or SIGTERM (143). Needs the metrics extra: pip install 'pricefeed[metrics]'."""
    from .._observe.metrics import FeedCollector, SymbolChoice, render, serve

    choice = SymbolChoice(every=all_symbols, names=tuple(dict.fromkeys(symbols)))
    # Printing once says nothing on stderr but an error; serving reports each feed's changes of state.
    report = _reporter("metrics")
    collector = FeedCollector(feeds, owner, allow_world_writable, choice, strict=address is None,
                              report=None if address is None else report)  # fmt: skip
    if address is None:
        try:
            with _hint(FeedNotFound, LS_HINT):
                collector.open()
                text = render(collector).decode()
            click.echo(text, nl=False)
        finally:
            collector.close()
        return
    reason = serve(collector, address[0], address[1], report)
    click.echo(f"pricefeed metrics: {reason} after {_plural(collector.scrapes, 'scrape')}", err=True)
    raise click.exceptions.Exit(EXIT_TERMINATED if reason == "terminated" else EXIT_INTERRUPTED)
