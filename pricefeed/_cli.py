"""The ``pricefeed`` command: it translates arguments into library calls and errors into exit codes.

One place, ``main()``, maps errors to exits: a PricefeedError exits with its class's
``exit_code`` and a one-line message on stderr; Ctrl-C exits 130; usage errors exit 2 (click).
No traceback reaches the user. docs/cli.md documents every code, and a test keeps it in step
with the classes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

import click

from . import _layout as L
from ._accel import ACCELERATED
from ._admin import feed_names, remove
from ._errors import FeedNotFound, InvalidInput, PricefeedError, UnsupportedPlatform
from ._publisher import Publisher
from ._segment import check_name
from ._subscriber import Event, FeedStatus, Subscriber
from ._values import EVENT_NAMES, Quote, check_price, check_symbol

EXIT_INTERRUPTED = 130


def exit_code_table() -> str:
    """The exit-code table of docs/cli.md, made from the error classes themselves."""
    from . import _errors

    rows = [(0, "—", "Success (for `subscribe`: the count was reached, or the feed ended).")]
    rows.append((2, "—", "Usage error: an unknown command or option, a missing argument."))
    for name in _errors.__all__:
        cls = getattr(_errors, name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        rows.append((cls.exit_code, f"`{name}`", doc))
    rows.append((EXIT_INTERRUPTED, "—", "Interrupted by Ctrl-C (SIGINT)."))
    rows.sort(key=lambda r: r[0])
    lines = ["| code | error | when |", "|---:|---|---|"]
    lines += [f"| {code} | {name} | {doc} |" for code, name, doc in rows]
    return "\n".join(lines)


def _parse_mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise click.BadParameter(f"mode must be octal digits such as 0600 or 0644: got {text!r}") from None


def _quote_json(q: Quote) -> Dict[str, Any]:
    return {"symbol": q.symbol, "price": q.price, "seq": q.seq, "time_ns": q.time_ns}


def _quote_text(q: Quote) -> str:
    return f"{q.seq:>10} {q.symbol:<12} {q.price!r}"


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


_creation = [
    click.option("--capacity", type=int, default=L.DEFAULT_CAPACITY, show_default=True,
                 help="Most symbols the feed can hold."),
    click.option("--ring", "ring_size", type=int, default=L.DEFAULT_RING, show_default=True,
                 help="Changes kept for subscribers that fall behind (a power of 2)."),
    click.option("--mode", default="0600", show_default=True,
                 help="Permissions of the segment, octal (the umask does not apply)."),
]  # fmt: skip


def creation_options(f: Any) -> Any:
    for option in reversed(_creation):
        f = option(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_name="pricefeed",
    message=f"%(prog)s %(version)s (layout {L.LAYOUT_VERSION}, C accelerator {'on' if ACCELERATED else 'off'})",
)
def cli() -> None:
    """Shared-memory price feeds with change notification.

    A publisher writes prices into FEED; subscribers wake once per change. Exit codes are
    listed in docs/cli.md.
    """


@cli.command()
@click.argument("feed")
@creation_options
def create(feed: str, capacity: int, ring_size: int, mode: str) -> None:
    """Create FEED, empty, with no publisher."""
    Publisher.create(feed, capacity, ring_size, _parse_mode(mode)).close()


def _parse_assignment(text: str) -> Tuple[str, float]:
    symbol, sep, price = text.rpartition("=")
    if not sep:
        raise InvalidInput(f"expected SYMBOL=PRICE, such as AAPL=187.5: got {text!r}")
    return _parse_pair(symbol, price)


def _parse_pair(symbol: str, price: str) -> Tuple[str, float]:
    check_symbol(symbol)
    try:
        value = float(price)
    except ValueError:
        raise InvalidInput(f"price for symbol {symbol!r} must be a number: got {price!r}") from None
    return symbol, check_price(value, symbol)


@cli.command()
@click.argument("feed")
@click.argument("values", nargs=-1, required=True, metavar="SYMBOL=PRICE... | -")
@creation_options
@click.option("--strict", is_flag=True, help="With -, stop at the first bad line.")
@click.option("--end", "end_feed", is_flag=True, help="End the feed for good when done (subscribers finish).")
def publish(feed: str, values: Tuple[str, ...], capacity: int, ring_size: int, mode: str,
            strict: bool, end_feed: bool) -> None:  # fmt: skip
    """Publish prices to FEED, creating it if it is missing.

    Either SYMBOL=PRICE pairs, published as one batch (all or nothing), or - to read a stream
    of "SYMBOL PRICE" lines from standard input, each published as it arrives. A bad line is
    reported with its number and skipped (the exit code is then 7), or with --strict stops
    the stream.
    """
    stream = values == ("-",)
    batch: List[Tuple[str, float]] = [] if stream else [_parse_assignment(v) for v in values]
    with Publisher.open_or_create(feed, capacity, ring_size, _parse_mode(mode)) as pub:
        if stream:
            bad = _publish_stream(pub, sys.stdin, strict)
        else:
            pub.publish_many(batch)
            bad = 0
        if end_feed:
            pub.end()
    if bad:
        raise InvalidInput(f"{bad} bad line{'s' if bad != 1 else ''} skipped (see above)")


def _publish_stream(pub: Publisher, lines: IO[str], strict: bool) -> int:
    bad = 0
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            parts = text.split()
            if len(parts) == 1 and "=" in text:
                symbol, price = _parse_assignment(text)
            elif len(parts) == 2:
                symbol, price = _parse_pair(parts[0], parts[1])
            else:
                raise InvalidInput(f"expected 'SYMBOL PRICE', such as 'AAPL 187.5': got {text!r}")
            pub.publish(symbol, price)
        except InvalidInput as exc:
            if strict:
                raise InvalidInput(f"line {number}: {exc}") from None
            bad += 1
            click.echo(f"pricefeed: line {number}: {exc}", err=True)
    return bad


@cli.command()
@click.argument("feed")
@click.argument("symbols", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after N changes.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up (exit 12) after S seconds without a change.")
@click.option("--conflate", is_flag=True, help="Only the newest value of each symbol when falling behind.")
@click.option("--snapshot", is_flag=True, help="Start with the current value of every symbol.")
@click.option(
    "--exec",
    "command",
    metavar="CMD",
    help="Run CMD (with sh; cmd.exe on Windows) once per change instead of printing it.",
)
@click.option("--wait", is_flag=True, help="If FEED does not exist yet, wait for it.")
@click.option("--spin-us", type=click.FloatRange(min=0, max=10_000), default=0, show_default=True,
              help="Poll for this many µs before sleeping: catches bursts without a wake-up.")  # fmt: skip
@click.option("--exit-on-reset", is_flag=True, help="Exit (code 13) if FEED is removed and created anew.")
def subscribe(feed: str, symbols: Tuple[str, ...], as_json: bool, count: Optional[int],
              timeout: Optional[float], conflate: bool, snapshot: bool, command: Optional[str],
              wait: bool, exit_on_reset: bool, spin_us: float) -> None:  # fmt: skip
    """Print each change of FEED (or of SYMBOLS only) once, in order, as it happens.

    --exec runs CMD once per change with PRICEFEED_FEED, PRICEFEED_SYMBOL, PRICEFEED_PRICE,
    PRICEFEED_SEQ and PRICEFEED_TIME_NS in its environment, waiting for each run to finish.
    Gaps (the subscriber fell behind) are printed as events; after one come the latest
    values of the symbols that changed meanwhile.
    """
    seen = 0
    if wait and check_name(feed) not in feed_names():
        click.echo(f"pricefeed: waiting for feed {feed!r} to appear", err=True)
    with Subscriber(feed, wait=wait) as sub:
        events = sub.updates(
            symbols or None,
            timeout=timeout,
            conflate=conflate,
            snapshot=snapshot,
            reattach=not exit_on_reset,
            spin=spin_us / 1e6,
        )
        for event in events:
            if not isinstance(event, Quote):
                _print_event(event, as_json, to_stderr=command is not None)
                continue
            if command is not None:
                _run(command, feed, event)
            elif as_json:
                _out(json.dumps(_quote_json(event)))
            else:
                _out(_quote_text(event))
            seen += 1
            if count is not None and seen >= count:
                return
    if command is None:
        _print_event(None, as_json, to_stderr=False, feed=feed)


def _print_event(event: Optional[Event], as_json: bool, to_stderr: bool, feed: str = "") -> None:
    """An event line: JSON {"event": name, ...fields}, or a comment line in text mode.
    ``None`` stands for the end of the feed."""
    name = "ended" if event is None else EVENT_NAMES[type(event)]
    fields: Dict[str, Any] = {"feed": feed} if event is None else event._asdict()
    if as_json:
        line = json.dumps({"event": name, **fields})
    else:
        line = "# " + " ".join([name.replace("_", " ")] + [f"{k}={v}" for k, v in fields.items()])
    if to_stderr:
        click.echo(line, err=True)
    else:
        _out(line)


def _run(command: str, feed: str, q: Quote) -> None:
    env = dict(os.environ)
    env.update(
        PRICEFEED_FEED=feed,
        PRICEFEED_SYMBOL=q.symbol,
        PRICEFEED_PRICE=repr(q.price),
        PRICEFEED_SEQ=str(q.seq),
        PRICEFEED_TIME_NS=str(q.time_ns),
    )
    code = subprocess.call(command, shell=True, env=env)
    if code != 0:
        click.echo(f"pricefeed: --exec command exited {code} for seq {q.seq} ({q.symbol})", err=True)


@cli.command()
@click.argument("feed")
@click.argument("symbol")
@click.option("--json", "as_json", is_flag=True, help="Print symbol, price, seq and time_ns as JSON.")
def get(feed: str, symbol: str, as_json: bool) -> None:
    """Print SYMBOL's current price in FEED."""
    with Subscriber(feed) as sub:
        q = sub[symbol]
    _out(json.dumps(_quote_json(q)) if as_json else repr(q.price))


@cli.command()
@click.argument("feed")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per symbol, one per line.")
def snapshot(feed: str, as_json: bool) -> None:
    """Print every symbol's current price in FEED."""
    with Subscriber(feed) as sub:
        values = sub.snapshot()
    for q in values.values():
        _out(json.dumps(_quote_json(q)) if as_json else _quote_text(q))


def _status_dict(s: FeedStatus) -> Dict[str, Any]:
    d = s._asdict()
    d["last_change_age_s"] = None if s.last_change_ns is None else max(0.0, (time.time_ns() - s.last_change_ns) / 1e9)
    d["publisher_gone"] = not s.publisher_alive
    d["state"] = "ended" if s.ended else ("live" if s.publisher_alive else "publisher gone")
    return d


@cli.command()
@click.argument("feed")
@click.option("--json", "as_json", is_flag=True)
def status(feed: str, as_json: bool) -> None:
    """Show FEED's head sequence, symbols, capacity, publisher and last change."""
    with Subscriber(feed) as sub:
        d = _status_dict(sub.status())
    if as_json:
        _out(json.dumps(d))
        return
    age = d["last_change_age_s"]
    pid = d["publisher_pid"]
    rows = [
        ("feed", feed),
        ("state", d["state"]),
        ("publisher", f"pid {pid} ({'alive' if d['publisher_alive'] else 'gone'})" if pid else "none yet"),
        ("head seq", d["head_seq"]),
        ("symbols", f"{d['symbols']} of {d['capacity']}"),
        ("ring size", d["ring_size"]),
        ("last change", "never" if age is None else f"{age:.3f} s ago"),
        ("size", f"{d['size']} bytes"),
    ]
    for key, value in rows:
        _out(f"{key:<12} {value}")


@cli.command(name="ls")
@click.option("--json", "as_json", is_flag=True)
def ls_(as_json: bool) -> None:
    """List every feed on this machine with its state."""
    for name in feed_names():
        try:
            with Subscriber(name) as sub:
                d = _status_dict(sub.status())
            d["name"] = name
        except PricefeedError as exc:
            d = {"name": name, "state": "unreadable", "error": str(exc)}
        if as_json:
            _out(json.dumps(d))
        elif d["state"] == "unreadable":
            _out(f"{name:<28} unreadable: {d['error']}")
        else:
            pid = f" (pid {d['publisher_pid']})" if d["publisher_alive"] else ""
            _out(f"{name:<28} {d['state'] + pid:<22} {d['symbols']:>7} symbols  head {d['head_seq']}")


@cli.command()
@click.argument("feeds", nargs=-1)
@click.option("--stale", is_flag=True, help="Remove feeds with no live publisher (all of them if no FEED is given).")
@click.option("--force", is_flag=True, help="Remove even a feed whose publisher is alive.")
def rm(feeds: Tuple[str, ...], stale: bool, force: bool) -> None:
    """Remove FEEDS. A feed with a live publisher is kept unless --force."""
    if not feeds and not stale:
        raise click.UsageError("name at least one FEED, or use --stale")
    for name in feeds or tuple(feed_names()):
        try:
            removed = remove(name, force=force, stale_only=stale)
        except FeedNotFound:
            if stale and not feeds:
                continue  # vanished while we looked
            raise
        if stale and not removed:
            click.echo(f"pricefeed: kept {name!r}: its publisher is alive", err=True)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: Tuple[str, ...]) -> None:
    """Measure pricefeed beside the alternatives (pricefeed bench --help for its options)."""
    if not sys.platform.startswith("linux"):
        raise UnsupportedPlatform(
            "pricefeed bench runs on Linux only (it forks, pins CPUs and reads /proc); "
            "scripts/platform_latency.py measures wake-ups on any platform"
        )
    from ._bench.run import main as bench_main

    code = bench_main(list(args))
    if code:
        raise click.exceptions.Exit(code)


@cli.command()
@click.option("--seconds", type=click.FloatRange(min=0.5, max=3600), default=5.0, show_default=True)
def demo(seconds: float) -> None:
    """A random-walk publisher and a live subscriber, for a few seconds, in this terminal."""
    from ._demo import run_demo

    run_demo(seconds, _out)


@cli.command()
@click.option(
    "--backend",
    "backends",
    multiple=True,
    metavar="NAME",
    help="Check this wait backend (repeatable; default: every one that works here).",
)
@click.option("--check", "only", metavar="NAME", help="Run only this check.")
@click.option("--list", "list_only", is_flag=True, help="List the backends and the checks, and exit.")
def selftest(backends: Tuple[str, ...], only: Optional[str], list_only: bool) -> None:
    """Check pricefeed's wait backends and a feed end to end on this machine (exit 1 on a failure).

    The same conformance suite the project's tests run, shipped with the package: run it first
    on a platform the project does not test itself (docs/platforms.md)."""
    from ._conformance import CHECKS
    from ._conformance import run as run_checks
    from ._wait import available

    if list_only:
        for name, ok in available().items():
            _out(f"backend  {name:<10} {'works here' if ok else 'not usable here'}")
        for check in CHECKS:
            _out(f"check    {check.name:<28} {check.about}")
        return
    code = run_checks(list(backends) or None, only=only)
    if code:
        raise click.exceptions.Exit(code)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI and return its exit code (the one place errors become exits)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="pricefeed", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except PricefeedError as exc:
        click.echo(f"pricefeed: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`| head`): stop quietly, as cat does.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0


def run() -> None:
    sys.exit(main())
