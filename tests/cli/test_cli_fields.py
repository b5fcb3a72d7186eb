"""Feeds of several fields on the command line: --fields, publishing named fields (arguments,
stream lines, JSON lines) and every way a value can be refused, and what subscribe, get,
snapshot and status show. Real `python -m pricefeed` processes, and the line grammar itself
on plain strings."""

from __future__ import annotations

import json
import locale
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import Proc, blocked_in_futex, cli, posix_only, wait_until

from pricefeed import InvalidInput, Subscriber
from pricefeed._cli.input import MAX_LINE, QUOTE_CHARS, Schema, parse_line, quote
from pricefeed._protocol import layout as L
from pricefeed._values import parse_fields

BOOK = "bid:f64,ask:f64,bid_size:i64,ask_size:i64"
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
I64_RULE = "must be a whole number (i64) such as 12 or -3"


def run(*args: object, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    """The command with ``stdin`` as its input byte for byte (no newline translation, which
    Windows' text mode would add), and its output as text with \n line ends."""
    p = subprocess.run(cli(*args), input=stdin.encode(), capture_output=True, timeout=timeout)
    encoding = locale.getpreferredencoding(False)  # what text mode would decode with (cp1252 on Windows)
    out, err = (b.decode(encoding).replace("\r\n", "\n") for b in (p.stdout, p.stderr))
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def ok(*args: object, stdin: str = "") -> subprocess.CompletedProcess:
    p = run(*args, stdin=stdin)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    return p


def state(feed: str) -> Tuple[int, Dict[str, Dict[str, object]]]:
    """The feed's head sequence and every symbol's fields."""
    with Subscriber(feed) as sub:
        return sub.head, {symbol: q.fields for symbol, q in sub.snapshot().items()}


def book(feed: str) -> None:
    """A feed of four fields, ES and NQ published."""
    ok("create", feed, "--fields", BOOK)
    ok("publish", feed, "ES", "bid=5201.25", "ask=5201.5", "bid_size=12", "ask_size=3", "NQ", "bid=18000.25")


# -- --fields ------------------------------------------------------------------------------------
def test_create_with_fields_and_status_shows_the_schema(feed: str) -> None:
    ok("create", feed, "--fields", BOOK, "--capacity", "8")
    with Subscriber(feed) as sub:
        assert sub.fields == (("bid", 1), ("ask", 1), ("bid_size", 2), ("ask_size", 2))
    text = ok("status", feed).stdout.splitlines()
    assert f"fields       {BOOK}" in text
    st = json.loads(ok("status", feed, "--json").stdout)
    assert st["fields"] == [
        {"name": "bid", "type": "f64"},
        {"name": "ask", "type": "f64"},
        {"name": "bid_size", "type": "i64"},
        {"name": "ask_size", "type": "i64"},
    ]
    assert (st["capacity"], st["head_seq"]) == (8, 0)
    listed = next(json.loads(line) for line in ok("ls", "--json").stdout.splitlines() if f'"{feed}"' in line)
    assert listed["fields"] == st["fields"]


def test_a_default_feed_has_one_price_field(feed: str) -> None:
    ok("publish", feed, "A=1")
    assert "fields       price:f64" in ok("status", feed).stdout.splitlines()
    assert json.loads(ok("status", feed, "--json").stdout)["fields"] == [{"name": "price", "type": "f64"}]


def test_names_and_types_may_be_spaced_and_a_bare_name_is_f64(feed: str) -> None:
    ok("create", feed, "--fields", " last , size : i64")
    with Subscriber(feed) as sub:
        assert sub.fields == (("last", L.TYPE_F64), ("size", L.TYPE_I64))


RULE = "fields must be 1 to 16 NAME:TYPE separated by commas, such as bid:f64,ask:f64,bid_size:i64"


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        ("", "a NAME is 1 to 23 characters, an ASCII letter then letters, digits or _: not ''"),
        ("bid:f32", "field 'bid' has type 'f32'"),
        ("bid:F64", "field 'bid' has type 'F64'"),
        ("1bid", "not '1bid'"),
        ("bid-size:i64", "not 'bid-size'"),
        ("bid,,ask", "not ''"),
        ("b" * 24, f"not '{'b' * 24}'"),
        ("symbol:f64", "field name 'symbol' is taken by every quote"),
        ("changed", "field name 'changed' is taken by every quote"),
        ("bid,Bid", "fields 'bid' and 'Bid' have the same name (ignoring case)"),
        (",".join(f"f{i}" for i in range(17)), "a schema has 1 to 16 fields: got 17"),
        ("bid:\x1b[2J", "field 'bid' has type '\\x1b[2J'"),
    ],
)
@pytest.mark.parametrize("command", ["create", "publish"])
def test_bad_fields_are_refused_with_the_rule_and_nothing_is_created(
    feed: str, command: str, spec: str, detail: str
) -> None:
    args = ["create", feed] if command == "create" else ["publish", feed, "A", "x=1"]
    p = run(*args, "--fields", spec)
    assert p.returncode == 7, p.stderr
    assert p.stderr.startswith(f"pricefeed: {RULE}"), p.stderr
    assert detail in p.stderr and p.stderr.endswith(f": got {quote(spec)}\n"), p.stderr
    assert len(p.stderr.splitlines()) == 1 and "\x1b" not in p.stderr
    with pytest.raises(FileNotFoundError):
        Subscriber(feed)


def test_a_huge_fields_value_is_quoted_short(feed: str) -> None:
    p = run("create", feed, "--fields", "x" * 10_000)
    assert p.returncode == 7 and len(p.stderr) < 600, p.stderr
    assert p.stderr.endswith("...' (10000 characters)\n"), p.stderr


def test_publish_creates_the_feed_with_its_fields(feed: str) -> None:
    ok("publish", feed, "--fields", BOOK, "ES", "bid=5201.25", "ask_size=3")
    head, values = state(feed)
    assert head == 1 and values == {"ES": {"bid": 5201.25, "ask": 0.0, "bid_size": 0, "ask_size": 3}}
    ok("publish", feed, "--fields", BOOK, "ES", "ask=5201.5")  # the same schema: fine


def test_fields_given_for_a_feed_that_has_others_is_refused(feed: str) -> None:
    ok("publish", feed, "A=1")
    for args in (["A", "bid=2"], ["-"]):
        p = run("publish", feed, *args, "--fields", "bid:f64", stdin="A bid=2\n")
        assert p.returncode == 7, p.stderr
        assert p.stderr == (
            f"pricefeed: feed '{feed}' has fields price:f64, not bid:f64: --fields applies when a feed is created, "
            f"and a feed's fields are fixed (pricefeed rm {feed} removes it)\n"
        )
    assert state(feed) == (1, {"A": {"price": 1.0}})
    p = run("status", feed, "--json")
    assert json.loads(p.stdout)["publisher_epoch"] == 1, "no publisher took the feed over"


# -- publishing named fields on the command line -----------------------------------------------
def test_publish_named_fields_others_keep_their_values(feed: str) -> None:
    book(feed)
    assert state(feed) == (
        2,
        {
            "ES": {"bid": 5201.25, "ask": 5201.5, "bid_size": 12, "ask_size": 3},
            "NQ": {"bid": 18000.25, "ask": 0.0, "bid_size": 0, "ask_size": 0},
        },
    )
    ok("publish", feed, "ES", "ask=5201.75", "bid_size=-7", "NQ", "ask_size=9223372036854775807")
    ok("publish", feed, "ES", "ask=5201.75")  # no change: no sequence number
    head, values = state(feed)
    assert head == 4
    assert values["ES"] == {"bid": 5201.25, "ask": 5201.75, "bid_size": -7, "ask_size": 3}
    assert values["NQ"]["ask_size"] == I64_MAX
    assert ok("get", feed, "ES").stdout == "bid=5201.25 ask=5201.75 bid_size=-7 ask_size=3\n"
    got = json.loads(ok("get", feed, "ES", "--json").stdout)
    assert got == {
        "symbol": "ES",
        "bid": 5201.25,
        "ask": 5201.75,
        "bid_size": -7,
        "ask_size": 3,
        "seq": 3,
        "time_ns": got["time_ns"],
        "changed": ["ask", "bid_size"],
    }
    assert list(got) == ["symbol", "bid", "ask", "bid_size", "ask_size", "seq", "time_ns", "changed"]


def test_snapshot_shows_every_field_in_columns(feed: str) -> None:
    book(feed)
    ok("publish", feed, "ES", "bid=5201.5")
    text = ok("snapshot", feed).stdout.splitlines()
    assert [line.split() for line in text] == [
        ["3", "ES", "bid=5201.5", "ask=5201.5", "bid_size=12", "ask_size=3", "changed=bid"],
        ["2", "NQ", "bid=18000.25", "ask=0.0", "bid_size=0", "ask_size=0", "changed=bid,ask,bid_size,ask_size"],
    ]
    for name in ("ask=", "bid_size=", "ask_size=", "changed="):
        assert len({line.index(name) for line in text}) == 1, text  # the columns line up
    rows = [json.loads(line) for line in ok("snapshot", feed, "--json").stdout.splitlines()]
    assert [(r["symbol"], r["bid"], r["bid_size"], r["changed"]) for r in rows] == [
        ("ES", 5201.5, 12, ["bid"]),
        ("NQ", 18000.25, 0, ["bid", "ask", "bid_size", "ask_size"]),
    ]


def test_a_default_feed_takes_its_field_by_name_too(feed: str) -> None:
    ok("publish", feed, "A=1", "B", "price=2.5")
    assert state(feed) == (2, {"A": {"price": 1.0}, "B": {"price": 2.5}})
    assert ok("snapshot", feed).stdout.splitlines()[1].split() == ["2", "B", "2.5"]


def test_a_one_field_feed_of_an_integer(feed: str) -> None:
    ok("publish", feed, "--fields", "volume:i64", "A=12", "B", "volume=-3")
    p = run("publish", feed, "A=12.5")
    assert p.returncode == 7
    assert (
        p.stderr
        == f"pricefeed: volume for symbol 'A' {I64_RULE} (an optional sign and decimal digits; no spaces, underscores, point or exponent): got '12.5'\n"
    )
    assert ok("get", feed, "A").stdout == "12\n"
    assert ok("snapshot", feed).stdout.splitlines()[1].split() == ["2", "B", "-3"]
    assert json.loads(ok("get", feed, "B", "--json").stdout)["volume"] == -3


MULTI = "feed '{feed}' has fields bid, ask, bid_size, ask_size: name the ones to set, as in 'ES bid=5201.25 ask=5201.5'; got a value without a name"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ES=5"], MULTI + ": 'ES=5'"),
        (["ES"], "expected SYMBOL NAME=VALUE..., such as ES bid=5201.25 ask=5201.5: got 'ES'"),
        (["ES", "NQ", "bid=1"], "expected SYMBOL NAME=VALUE..., such as ES bid=5201.25 ask=5201.5: got 'ES'"),
        (["ES", "bid=1", "bid=2"], "field 'bid' is given twice for symbol 'ES': got 'ES bid=1 bid=2'"),
        (["ES", "bogus=1"], "feed '{feed}' has no field 'bogus'; its fields are bid, ask, bid_size, ask_size"),
        (["ES", "=1"], "feed '{feed}' has no field ''; its fields are"),
        (["ES", "symbol=1"], "feed '{feed}' has no field 'symbol'"),
        (["ES", "bid_size=1.5"], f"bid_size for symbol 'ES' {I64_RULE}"),
        (["ES", "bid_size=1e3"], f"bid_size for symbol 'ES' {I64_RULE}"),
        (["ES", "bid_size=1_000"], f"bid_size for symbol 'ES' {I64_RULE}"),
        (["ES", "bid_size= 1"], f"bid_size for symbol 'ES' {I64_RULE}"),
        (["ES", "bid_size=0x10"], f"bid_size for symbol 'ES' {I64_RULE}"),
        (["ES", "bid_size="], f"bid_size for symbol 'ES' {I64_RULE}"),
        (
            ["ES", "bid_size=9223372036854775808"],
            "bid_size for symbol 'ES' must be from -9223372036854775808 to 9223372036854775807 (i64): got '9223372036854775808'",
        ),
        (["ES", "ask_size=-9223372036854775809"], "ask_size for symbol 'ES' must be from"),
        (["ES", "ask_size=" + "9" * 5000], "...' (5000 characters)"),
        (["ES", "bid=nan"], "bid for symbol 'ES' must be a decimal number such as 187.25"),
        (["ES", "bid=inf"], "bid for symbol 'ES' must be a decimal number such as 187.25"),
        (["ES", "bid=1e400"], "bid for symbol 'ES' must be at most 1.7976931348623157e+308 in magnitude"),
        (["ES", "bid=1e-400"], "bid for symbol 'ES' must be 0 or at least 2.2250738585072014e-308"),
        (["ES", "ask=1", "NQ", "ask_size=x"], f"ask_size for symbol 'NQ' {I64_RULE}"),  # all or nothing
        (["bad symbol", "bid=1"], "symbol must be 1 to 31 printable ASCII characters without spaces"),
    ],
)
def test_bad_values_on_the_command_line_leave_the_feed_unchanged(feed: str, args: List[str], message: str) -> None:
    book(feed)
    before = state(feed)
    p = run("publish", feed, *args)
    assert p.returncode == 7, p.stderr
    assert p.stderr.startswith("pricefeed: ") and message.format(feed=feed) in p.stderr, p.stderr
    assert len(p.stderr.splitlines()) == 1 and len(p.stderr) < 400, p.stderr
    assert "Traceback" not in p.stderr
    assert state(feed) == before


def test_bad_values_for_a_missing_feed_do_not_create_it(feed: str) -> None:
    p = run("publish", feed, "--fields", BOOK, "ES", "bid_size=1.5")
    assert p.returncode == 7 and f"bid_size for symbol 'ES' {I64_RULE}" in p.stderr, p.stderr
    with pytest.raises(FileNotFoundError):
        Subscriber(feed)


def test_a_field_named_like_a_keyword_of_publish_works(feed: str) -> None:
    """A field may be called value: the command line never passes fields as keywords."""
    ok("publish", feed, "--fields", "value:f64,size:i64", "A", "value=1.5", "size=2")
    ok("publish", feed, "-", stdin='A value=2.5\n{"symbol": "A", "size": 3}\n')
    assert state(feed) == (3, {"A": {"value": 2.5, "size": 3}})


# -- streams -----------------------------------------------------------------------------------
def test_stream_of_field_lines_and_json_lines_into_a_json_subscriber(feed: str, procs: List[Proc]) -> None:
    ok("create", feed, "--fields", BOOK)
    sub = Proc(cli("subscribe", feed, "--json", "--timeout", "60"))
    procs.append(sub)
    wait_until(lambda: blocked_in_futex(sub.pid), 30, "subscriber to block")
    lines = [
        "ES bid=5201.25 ask=5201.5 bid_size=12 ask_size=3",
        '{"symbol": "ES", "bid": 5201.5, "bid_size": 12}',  # bid_size is no change
        "\t ES \t ask=5201.75\task_size=+4 \r",
        "# a comment",
        "",
        '  {"symbol": "NQ", "bid": 18000, "ask": 1.8e4, "bid_size": -9223372036854775808, "ask_size": 0}  ',
        '{"symbol":"ES","ask":5201.75}',  # no change at all: no sequence number
        '{"ask_size": 5, "symbol": "ES"}',  # any order
        "ES bid=-0.0",
    ]
    pub = run("publish", feed, "-", "--end", stdin="\n".join(lines) + "\n")
    assert pub.returncode == 0 and pub.stderr == "", pub.stderr
    code, out, err = sub.finish(timeout=60)
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert rows[-1] == {"event": "ended", "feed": feed}
    changes = [r for r in rows if "event" not in r]
    for r in changes:
        assert list(r) == ["symbol", "bid", "ask", "bid_size", "ask_size", "seq", "time_ns", "changed"], r
    assert [(r["seq"], r["symbol"], r["changed"]) for r in changes] == [
        (1, "ES", ["bid", "ask", "bid_size", "ask_size"]),
        (2, "ES", ["bid"]),
        (3, "ES", ["ask", "ask_size"]),
        (4, "NQ", ["bid", "ask", "bid_size", "ask_size"]),
        (5, "ES", ["ask_size"]),
        (6, "ES", ["bid"]),
    ]
    assert changes[3]["bid"] == 18000.0 and changes[3]["ask"] == 18000.0 and changes[3]["bid_size"] == I64_MIN
    assert changes[4] | {"time_ns": 0} == {
        "symbol": "ES",
        "bid": 5201.5,
        "ask": 5201.75,
        "bid_size": 12,
        "ask_size": 5,
        "seq": 5,
        "time_ns": 0,
        "changed": ["ask_size"],
    }
    assert isinstance(changes[3]["bid"], float) and isinstance(changes[3]["bid_size"], int)


#: Every bad line of a stream on a feed of four fields, with (a part of) its error.
BAD_LINES = [
    ("ES bogus=1", "feed '{feed}' has no field 'bogus'; its fields are bid, ask, bid_size, ask_size"),
    ('{"symbol": "ES", "bogus": 1}', "feed '{feed}' has no field 'bogus'; its fields are bid, ask, bid_size, ask_size"),
    ('{"symbol": "ES", "Bid": 1}', "feed '{feed}' has no field 'Bid'"),
    ('{"symbol": "ES", "seq": 1}', "feed '{feed}' has no field 'seq'"),
    ("ES bid_size=12.5", f"bid_size for symbol 'ES' {I64_RULE}"),
    ("ES bid_size=1e3", f"bid_size for symbol 'ES' {I64_RULE}"),
    (
        '{"symbol": "ES", "bid_size": 12.0}',
        "bid_size for symbol 'ES' must be a JSON integer (i64) such as 12 (a float cannot hold every i64): got '12.0'",
    ),
    (
        '{"symbol": "ES", "bid_size": 1e3}',
        "bid_size for symbol 'ES' must be a JSON integer (i64) such as 12 (a float cannot hold every i64): got '1e3'",
    ),
    (
        '{"symbol": "ES", "bid_size": "12"}',
        "bid_size for symbol 'ES' must be a JSON integer (i64) such as 12: got the string '12'",
    ),
    (
        '{"symbol": "ES", "bid_size": true}',
        "bid_size for symbol 'ES' must be a JSON integer (i64) such as 12: got true",
    ),
    (
        '{"symbol": "ES", "bid_size": null}',
        "bid_size for symbol 'ES' must be a JSON integer (i64) such as 12: got null",
    ),
    (
        "ES ask_size=9223372036854775808",
        "ask_size for symbol 'ES' must be from -9223372036854775808 to 9223372036854775807 (i64): got '9223372036854775808'",
    ),
    (
        '{"symbol": "ES", "ask_size": -9223372036854775809}',
        "ask_size for symbol 'ES' must be from -9223372036854775808 to 9223372036854775807 (i64): got '-9223372036854775809'",
    ),
    ('{"symbol": "ES", "ask_size": ' + "1" * 3000 + "}", "ask_size for symbol 'ES' must be from"),
    ("ES bid=nan", "bid for symbol 'ES' must be a decimal number such as 187.25"),
    ("ES ask=-inf", "ask for symbol 'ES' must be a decimal number such as 187.25"),
    ('{"symbol": "ES", "bid": NaN}', "bid for symbol 'ES' must be a finite number: got NaN"),
    ('{"symbol": "ES", "ask": -Infinity}', "ask for symbol 'ES' must be a finite number: got -Infinity"),
    (
        '{"symbol": "ES", "bid": 1e400}',
        "bid for symbol 'ES' must be at most 1.7976931348623157e+308 in magnitude: got '1e400'",
    ),
    (
        '{"symbol": "ES", "bid": 1e-400}',
        "bid for symbol 'ES' must be 0 or at least 2.2250738585072014e-308 in magnitude",
    ),
    (
        '{"symbol": "ES", "bid": "5201.5"}',
        "bid for symbol 'ES' must be a JSON number such as 187.25: got the string '5201.5'",
    ),
    ('{"symbol": "ES", "bid": [1]}', "bid for symbol 'ES' must be a JSON number such as 187.25: got an array"),
    ('{"symbol": "ES", "bid": {"v": 1}}', "bid for symbol 'ES' must be a JSON number such as 187.25: got an object"),
    (
        '{"bid": 5201.5}',
        'a JSON line must have a "symbol", as in {{"symbol": "ES", "bid": 5201.25}}: got \'{{"bid": 5201.5}}\'',
    ),
    ('{"symbol": 5, "bid": 1}', '"symbol" must be a JSON string such as "ES": got \'5\''),
    (
        '{"symbol": "bad symbol", "bid": 1}',
        "symbol must be 1 to 31 printable ASCII characters without spaces: got 'bad symbol'",
    ),
    ('{"symbol": "ES"}', "a JSON line must set at least one field of feed '{feed}' (bid, ask, bid_size, ask_size)"),
    ('{"symbol": "ES", "bid": 1, "bid": 2}', "a JSON line may name a key once: 'bid' is there twice"),
    (
        '{"symbol": "ES", "bid": 5201.5',
        'a line that starts with {{ must be a JSON object such as {{"symbol": "ES", "bid": 5201.25}} (Expecting \',\' delimiter at column 31)',
    ),
    ("{symbol: ES}", "a line that starts with {{ must be a JSON object such as"),
    ('{"symbol": "ES", "bid": 1} trailing', "(Extra data at column 28)"),
    ("{" * 2000 + "}" * 2000, "(Expecting property name enclosed in double quotes at column 2): got '{{{{{{{{"),
    ('{"symbol": "ES", "bid": ' + "[" * 1500 + "]" * 1500 + "}", '(nested too deep): got \'{{"symbol"'),
    (
        '[{"symbol": "ES", "bid": 1}]',
        'a JSON line must be an object such as {{"symbol": "ES", "bid": 5201.25}}: got an array: \'[{{"symbol": "ES", "bid": 1}}]\'',
    ),
    ('"ES"', 'a JSON line must be an object such as {{"symbol": "ES", "bid": 5201.25}}: got the string \'ES\''),
    ("ES 5201.5", MULTI + ": 'ES 5201.5'"),
    ("ES=5201.5", MULTI + ": 'ES=5201.5'"),
    ("ES", "expected 'SYMBOL NAME=VALUE...', such as 'ES bid=5201.25 ask=5201.5', or a JSON object such as"),
    ("ES bid=1 5", "expected 'SYMBOL NAME=VALUE...'"),
    ("ES bid=1 bid=1", "field 'bid' is given twice for symbol 'ES'"),
    ('{"symbol": "ES", "b\\u001bid": 1}', "feed '{feed}' has no field 'b\\x1bid'"),
]


def test_every_bad_line_is_reported_and_skipped_and_the_feed_unchanged(feed: str) -> None:
    book(feed)
    before = state(feed)
    stream = "".join(f"{line}\n" for line, _ in BAD_LINES) + "GOOD bid=1.5\n"
    p = run("publish", feed, "-", stdin=stream)
    assert p.returncode == 7, p.stderr
    assert "Traceback" not in p.stderr
    errors = p.stderr.splitlines()
    assert len(errors) == len(BAD_LINES) + 1, p.stderr
    for number, ((line, message), error) in enumerate(zip(BAD_LINES, errors), 1):
        assert error.startswith(f"pricefeed: line {number}: "), (line, error)
        assert message.format(feed=feed) in error, (line, error)
        assert len(error) < 400 and error.isascii() and "\x1b" not in error, error
    assert errors[-1] == f"pricefeed: {len(BAD_LINES)} bad lines skipped (see above)"
    head, values = state(feed)
    assert head == before[0] + 1 and values == {
        **before[1],
        "GOOD": {"bid": 1.5, "ask": 0.0, "bid_size": 0, "ask_size": 0},
    }


def test_strict_stops_at_the_first_bad_json_line(feed: str) -> None:
    book(feed)
    p = run("publish", feed, "-", "--strict", stdin='ES bid=1\n{"symbol": "ES", "bid_size": 1.0}\nES bid=2\n')
    assert p.returncode == 7
    assert p.stderr == (
        "pricefeed: line 2: bid_size for symbol 'ES' must be a JSON integer (i64) such as 12 "
        "(a float cannot hold every i64): got '1.0'\n"
    )
    assert state(feed)[1]["ES"]["bid"] == 1.0


def test_a_json_line_at_the_limit_is_published_and_one_over_it_is_refused(feed: str) -> None:
    book(feed)
    head = '{"symbol": "ES", "bid": 7.5}'
    at = head[:-1] + " " * (MAX_LINE - len(head)) + "}"
    over = head[:-1] + " " * (MAX_LINE + 1 - len(head)) + "}"
    assert len(at) == MAX_LINE and len(over) == MAX_LINE + 1
    p = run("publish", feed, "-", stdin=f"{at}\n{over.replace('7.5', '8.5')}\n")
    assert p.returncode == 7
    assert p.stderr.splitlines()[0] == (
        f"pricefeed: line 2: a line may be at most {MAX_LINE} bytes: "
        f"got {quote(over.replace('7.5', '8.5')[:QUOTE_CHARS])[:-1]}...' ({MAX_LINE + 1} bytes)"
    )
    assert state(feed)[1]["ES"]["bid"] == 7.5


def test_one_field_feeds_read_every_form(feed: str) -> None:
    """The forms of a stream line before fields existed read as they did; a field's name and
    JSON work too; a symbol that starts with { is still a symbol."""
    stream = "A 1\nB=2\nC price=3\n" + '{"symbol": "D", "price": 4}\n' + "{E} 5\n{F}=6\n"
    ok("publish", feed, "-", stdin=stream)
    assert state(feed)[1] == {s: {"price": float(i)} for i, s in enumerate("ABCD", 1)} | {
        "{E}": {"price": 5.0},
        "{F}": {"price": 6.0},
    }
    p = run("publish", feed, "-", stdin='A 1 2\n{"symbol": "A", "bid": 1}\n{"symbol": "A", "price": 7}\n')
    assert p.returncode == 7
    lines = p.stderr.splitlines()
    assert lines[0] == "pricefeed: line 1: expected 'SYMBOL PRICE' or 'SYMBOL=PRICE', such as 'AAPL 187.5': got 'A 1 2'"
    assert lines[1] == f"pricefeed: line 2: feed '{feed}' has no field 'bid'; its fields are price"
    assert state(feed)[1]["A"] == {"price": 7.0}


# -- the line grammar, on strings --------------------------------------------------------------
SCHEMA = Schema(parse_fields(BOOK), "f")
PRICE = Schema(parse_fields(None), "f")


@pytest.mark.parametrize(
    ("line", "schema", "item"),
    [
        ("ES bid=1.5 bid_size=2", SCHEMA, ("ES", {"bid": 1.5, "bid_size": 2})),
        ("ES\tbid=1.5\t ask=-2 ", SCHEMA, ("ES", {"bid": 1.5, "ask": -2.0})),
        ("ES bid_size=-0", SCHEMA, ("ES", {"bid_size": 0})),
        ("ES bid_size=007", SCHEMA, ("ES", {"bid_size": 7})),
        ("A=B bid=1", SCHEMA, ("A=B", {"bid": 1.0})),  # a symbol may hold =
        ('{"symbol":"ES","ask_size":9223372036854775807}', SCHEMA, ("ES", {"ask_size": I64_MAX})),
        ('{"symbol": "ES", "bid": 12}', SCHEMA, ("ES", {"bid": 12.0})),  # a JSON integer is a fine f64
        ('{"symbol": "ES", "bid": -0.0}', SCHEMA, ("ES", {"bid": -0.0})),
        ('{"symbol": "ES", "bid": 0e-400}', SCHEMA, ("ES", {"bid": 0.0})),
        ('{"symbol": "E\\u0053", "bid": 1}', SCHEMA, ("ES", {"bid": 1.0})),
        ("A 1.5", PRICE, ("A", 1.5)),
        ("A=1.5", PRICE, ("A", 1.5)),
        ("A=B=1.5", PRICE, ("A=B", 1.5)),
        ("A price=1.5", PRICE, ("A", {"price": 1.5})),
        ("{A} 1", PRICE, ("{A}", 1.0)),
        ("[A] 1", PRICE, ("[A]", 1.0)),
        ('"A" 1', PRICE, ('"A"', 1.0)),
        ("# {not json", SCHEMA, None),
        (" \t", SCHEMA, None),
    ],
)
def test_lines_the_grammar_reads(line: str, schema: Schema, item: object) -> None:
    assert parse_line(line, schema) == item


def test_the_values_have_their_fields_types() -> None:
    item = parse_line('{"symbol": "ES", "bid": 12, "bid_size": 12}', SCHEMA)
    assert item is not None and isinstance(item[1], dict)
    assert type(item[1]["bid"]) is float and type(item[1]["bid_size"]) is int
    item = parse_line("ES bid=12 bid_size=12", SCHEMA)
    assert item is not None and isinstance(item[1], dict)
    assert type(item[1]["bid"]) is float and type(item[1]["bid_size"]) is int


@pytest.mark.parametrize(
    "line",
    [
        "{" * 5000,
        "[" * 4000 + "]" * 4000,
        '{"symbol": "ES", "bid": ' + "[" * 4000 + "]" * 4000 + "}",
        '{"symbol": "ES", "bid_size": ' + "9" * 4000 + "}",
        '{"symbol": "ES", "bid": ' + "9" * 4000 + "}",
        '{"symbol": "\\ud800", "bid": 1}',
    ],
)
def test_pathological_json_is_a_bad_line_not_a_crash(line: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_line(line, SCHEMA)
    assert len(str(caught.value)) < 400


# -- following -----------------------------------------------------------------------------------
def test_subscribe_text_shows_every_field_and_what_changed(feed: str) -> None:
    book(feed)
    ok("publish", feed, "ES", "ask=5201.75", "ask_size=4")
    p = ok("subscribe", feed, "--snapshot", "--count", "2", "--timeout", "10")
    assert p.stdout.splitlines() == [
        f"{2:>10} {'NQ':<31} bid=18000.25 ask=0.0 bid_size=0 ask_size=0 changed=bid,ask,bid_size,ask_size",
        f"{3:>10} {'ES':<31} bid=5201.25 ask=5201.75 bid_size=12 ask_size=4 changed=ask,ask_size",
    ]
    p = ok("subscribe", feed, "ES", "--snapshot", "--count", "1", "--timeout", "10")
    assert p.stdout == f"{3:>10} ES bid=5201.25 ask=5201.75 bid_size=12 ask_size=4 changed=ask,ask_size\n"


def test_subscribe_on_fields_passes_over_the_other_changes(feed: str, procs: List[Proc]) -> None:
    ok("create", feed, "--fields", BOOK)
    subs = {
        "ask": Proc(cli("subscribe", feed, "--json", "--on", "ask", "--timeout", "60")),
        "sizes": Proc(cli("subscribe", feed, "--on", "bid_size,ask_size", "--timeout", "60")),
        "repeated": Proc(cli("subscribe", feed, "--json", "--on", "bid", "--on", "ask_size", "--timeout", "60")),
    }
    procs.extend(subs.values())
    wait_until(lambda: all(blocked_in_futex(s.pid) for s in subs.values()), 30, "subscribers to block")
    lines = [
        "ES bid=1 ask=2 bid_size=3 ask_size=4",  # 1: all
        "ES bid=1.5",  # 2
        "ES ask=2.5",  # 3
        "ES bid_size=5",  # 4
        "ES ask_size=6 ask=3",  # 5
    ]
    ok("publish", feed, "-", "--end", stdin="\n".join(lines) + "\n")
    seqs = {}
    for name, sub in subs.items():
        code, out, err = sub.finish(timeout=60)
        assert code == 0, err
        rows = [r for r in out.splitlines() if not r.startswith("#") and '"event"' not in r]
        if name == "sizes":
            seqs[name] = [int(r.split()[0]) for r in rows]
            assert rows[1].split()[2:] == ["bid=1.5", "ask=2.5", "bid_size=5", "ask_size=4", "changed=bid_size"]
        else:
            seqs[name] = [json.loads(r)["seq"] for r in rows]
    assert seqs == {"ask": [1, 3, 5], "sizes": [1, 4, 5], "repeated": [1, 2, 5]}


def test_subscribe_on_a_field_the_feed_lacks(feed: str) -> None:
    book(feed)
    for on in ("nope", "bid,nope", "bid,", "BID"):
        p = run("subscribe", feed, "--on", on, "--timeout", "10")
        assert p.returncode == 7, p.stderr
        bad = on.split(",")[-1] if on != "BID" else "BID"
        assert p.stderr == (
            f"pricefeed: --on: feed '{feed}' has no field {quote(bad)}; its fields are bid, ask, bid_size, ask_size\n"
        )
    p = run("subscribe", feed, "--on", "x" * 10_000, "--timeout", "10")
    assert p.returncode == 7 and len(p.stderr) < 400 and "...' (10000 characters)" in p.stderr


def test_subscribe_json_of_a_default_feed_adds_changed(feed: str) -> None:
    ok("publish", feed, "A=1.5")
    row = json.loads(ok("subscribe", feed, "--snapshot", "--count", "1", "--json", "--timeout", "10").stdout)
    assert row == {"symbol": "A", "price": 1.5, "seq": 1, "time_ns": row["time_ns"], "changed": ["price"]}
    assert list(row) == ["symbol", "price", "seq", "time_ns", "changed"]
    assert ok("subscribe", feed, "--snapshot", "--count", "1", "--on", "price", "--timeout", "10").stdout.split() == [
        "1",
        "A",
        "1.5",
    ]


ENV = 'echo "$PRICEFEED_SEQ|$PRICEFEED_SYMBOL|$PRICEFEED_BID|$PRICEFEED_ASK|$PRICEFEED_BID_SIZE|$PRICEFEED_ASK_SIZE|$PRICEFEED_CHANGED|$PRICEFEED_FEED" >> {out}'


@posix_only
def test_exec_gets_a_variable_per_field_and_the_changed_ones(feed: str, tmp_path: Path) -> None:
    out = tmp_path / "exec.log"
    book(feed)
    ok("publish", feed, "ES", "bid_size=-9223372036854775808", "ask=0.1")
    p = ok("subscribe", feed, "--snapshot", "--count", "2", "--exec", ENV.format(out=out), "--timeout", "10")
    assert p.stdout == ""
    assert out.read_text().splitlines() == [
        f"2|NQ|18000.25|0.0|0|0|bid,ask,bid_size,ask_size|{feed}",
        f"3|ES|5201.25|0.1|-9223372036854775808|3|ask,bid_size|{feed}",
    ]


@posix_only
def test_exec_on_a_default_feed_keeps_its_variables(feed: str, tmp_path: Path) -> None:
    out = tmp_path / "exec.log"
    ok("publish", feed, "A=1.5")
    cmd = f'echo "$PRICEFEED_SEQ $PRICEFEED_SYMBOL $PRICEFEED_PRICE $PRICEFEED_CHANGED $PRICEFEED_TIME_NS" >> {out}'
    ok("subscribe", feed, "--snapshot", "--count", "1", "--exec", cmd, "--timeout", "10")
    seq, symbol, price, changed, time_ns = out.read_text().split()
    assert (seq, symbol, price, changed) == ("1", "A", "1.5", "price") and int(time_ns) > 0


@posix_only
def test_exec_never_lets_a_field_replace_pricefeeds_own_variables(feed: str, tmp_path: Path) -> None:
    """A field called feed, pure or wait would replace PRICEFEED_FEED, or PRICEFEED_PURE or
    PRICEFEED_WAIT (which configure a pricefeed the command may run): it is left out, and that
    is said once. (seq, symbol, time_ns and changed cannot be field names at all.)"""
    out = tmp_path / "exec.log"
    ok(
        "publish",
        feed,
        "--fields",
        "feed:f64,Pure:i64,wait:i64,last:f64",
        "A",
        "feed=1.5",
        "Pure=7",
        "wait=3",
        "last=2",
    )
    ok("publish", feed, "A", "last=2.5")
    cmd = f'echo "$PRICEFEED_FEED|$PRICEFEED_SEQ|${{PRICEFEED_WAIT-unset}}|${{PRICEFEED_PURE-unset}}|$PRICEFEED_LAST" >> {out}'
    env = {k: v for k, v in os.environ.items() if k not in ("PRICEFEED_WAIT", "PRICEFEED_PURE")}
    p = subprocess.run(
        cli("subscribe", feed, "--snapshot", "--count", "1", "--exec", cmd, "--timeout", "10"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    assert out.read_text().splitlines() == [f"{feed}|2|unset|unset|2.5"]
    assert p.stderr.splitlines() == [
        "pricefeed: field 'feed' is not given to --exec: PRICEFEED_FEED is one of pricefeed's own variables",
        "pricefeed: field 'Pure' is not given to --exec: PRICEFEED_PURE is one of pricefeed's own variables",
        "pricefeed: field 'wait' is not given to --exec: PRICEFEED_WAIT is one of pricefeed's own variables",
    ]


# -- the help and the selftest -------------------------------------------------------------------
def test_help_says_how_to_name_fields() -> None:
    publish = ok("publish", "--help").stdout
    assert "SYMBOL NAME=VALUE" in publish and '{"symbol": "ES"' in publish and "--fields" in publish
    assert "i64" in ok("create", "--help").stdout
    subscribe = ok("subscribe", "--help").stdout
    assert "--on" in subscribe and "PRICEFEED_CHANGED" in subscribe


def test_selftest_has_a_round_trip_of_a_feed_of_four_fields() -> None:
    listed = ok("selftest", "--list").stdout
    assert "check    fields_round_trip" in listed and "check    feed_round_trip" in listed
    p = run("selftest", "--check", "fields_round_trip", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PASS  fields_round_trip" in p.stdout and ", 0 failed" in p.stdout
    assert "9 changes of 4 fields seen once each" in p.stdout


def test_the_fields_round_trip_fails_when_a_change_is_not_what_it_should_be(monkeypatch: pytest.MonkeyPatch) -> None:
    from pricefeed._cli import selftest
    from pricefeed._wait import select

    real = selftest._expected

    def wrong() -> list:
        got = real()
        symbol, fields, _changed = got[1]
        got[1] = (symbol, fields, ["bid", "ask"])  # the change set bid alone
        return got

    monkeypatch.setattr(selftest, "_expected", wrong)
    with pytest.raises(AssertionError) as caught:
        selftest.check_fields_round_trip(select().name)
    assert "every change: change 2 (seq 2) was" in str(caught.value)
