"""What the command line reads: the grammar of a price, stream lines and their limit, and how
a bad value is quoted back (bounded and escaped). Real `python -m pricefeed` processes, and
the grammar itself on plain strings and byte buffers."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from typing import List

import pytest
from conftest import WINDOWS, cli

from pricefeed import Subscriber
from pricefeed._cli.input import MAX_LINE, QUOTE_CHARS, Line, parse_price, quote, read_lines

PRICE_RULE = "must be a decimal number such as 187.25, -0.5 or 1.5e3"


def run(*args: object, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), input=stdin, capture_output=True, timeout=timeout)


def err(p: subprocess.CompletedProcess) -> str:
    text = p.stderr.decode("ascii")  # errors quote values escaped, in ASCII, on every platform
    assert "Traceback" not in text, text
    return text.replace("\r\n", "\n")  # Windows writes text streams with CRLF


# -- the grammar of a price --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("187.25", 187.25),
        ("+5", 5.0),
        ("-0.5", -0.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e3", 1000.0),
        ("1.5E-3", 0.0015),
        ("0", 0.0),
        ("0e-400", 0.0),  # a zero written small is still zero
        ("2.2250738585072014e-308", sys.float_info.min),
        ("1.7976931348623157e308", sys.float_info.max),
        ("0007", 7.0),
    ],
)
def test_prices_the_grammar_accepts(text: str, value: float) -> None:
    assert parse_price(text, "A") == value


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("1_000", PRICE_RULE),
        (" 5 ", PRICE_RULE),
        ("5 ", PRICE_RULE),
        ("inf", PRICE_RULE),
        ("-Infinity", PRICE_RULE),
        ("nan", PRICE_RULE),
        ("0x10", PRICE_RULE),
        ("1,5", PRICE_RULE),
        ("", PRICE_RULE),
        (".", PRICE_RULE),
        ("1e", PRICE_RULE),
        ("e5", PRICE_RULE),
        ("++1", PRICE_RULE),
        ("١٢", PRICE_RULE),  # digits of another script: float() takes them
        ("1e-400", "must be 0 or at least 2.2250738585072014e-308 in magnitude"),
        ("-1e-310", "must be 0 or at least 2.2250738585072014e-308 in magnitude"),  # a subnormal
        ("0.0000001e-320", "must be 0 or at least 2.2250738585072014e-308 in magnitude"),
        ("1e400", "must be at most 1.7976931348623157e+308 in magnitude"),
        ("-1" + "0" * 400, "must be at most 1.7976931348623157e+308 in magnitude"),
    ],
)
def test_prices_the_grammar_refuses_naming_the_rule_and_the_value(text: str, rule: str) -> None:
    from pricefeed import InvalidPrice

    with pytest.raises(InvalidPrice) as caught:
        parse_price(text, "AAPL")
    message = str(caught.value)
    assert message.startswith(f"price for symbol 'AAPL' {rule}"), message
    assert message.endswith(f": got {quote(text)}"), message


@pytest.mark.parametrize("value", ["1e-400", "1e-310", "1e400", "1_000", " 5 ", "5 ", "inf", "nan", "0x1p3"])
def test_a_price_that_is_not_what_it_looks_like_is_refused_and_nothing_is_written(feed: str, value: str) -> None:
    p = run("publish", feed, "OK=1", f"AAPL={value}")
    assert p.returncode == 7
    message = err(p)
    assert message.startswith("pricefeed: price for symbol 'AAPL' must be ") and message.endswith(
        f": got {quote(value)}\n"
    ), message
    with pytest.raises(FileNotFoundError):
        Subscriber(feed)  # the batch was refused before the feed was created


def test_stream_prices_follow_the_same_grammar(feed: str) -> None:
    p = run("publish", feed, "-", stdin=b"A 1e-400\nB 1_000\nC=+2.5e1\nD\t.5\n")
    assert p.returncode == 7
    lines = err(p).splitlines()
    assert lines[0].startswith("pricefeed: line 1: price for symbol 'A' must be 0 or at least")
    assert lines[1].startswith(f"pricefeed: line 2: price for symbol 'B' {PRICE_RULE}")
    assert lines[2] == "pricefeed: 2 bad lines skipped (see above)"
    with Subscriber(feed) as sub:
        assert {s: q.price for s, q in sub.snapshot().items()} == {"C": 25.0, "D": 0.5}


# -- quoting: bounded, escaped, with the length --------------------------------------------------
def test_quote_is_repr_like_bounded_and_says_the_length() -> None:
    assert quote("AAPL") == "'AAPL'"
    assert quote("it's") == "'it\\'s'"
    assert quote("a\x1b[31mb\n\x00") == "'a\\x1b[31mb\\n\\x00'"
    assert quote(b"A\xff".decode("utf-8", "surrogateescape")) == "'A\\xff'"
    long = quote("AAPL 1x2" + "x" * 10_000)
    assert long.startswith("'AAPL 1x2xx") and long.endswith("...' (10008 characters)")
    assert len(long) <= QUOTE_CHARS + 30
    escaped = quote("\x00" * 1000)
    assert escaped.endswith("...' (1000 characters)") and len(escaped) <= QUOTE_CHARS + 30
    assert quote("A" * 100, length=10**9, unit="bytes").endswith("...' (1000000000 bytes)")


def test_a_huge_argument_is_quoted_short(feed: str) -> None:
    # 10,000 characters: long enough to see, short enough for a Windows command line.
    p = run("publish", feed, f"AAPL={'1x' * 5_000}")
    assert p.returncode == 7
    message = err(p)
    assert len(message) < 400 and message.endswith("...' (10000 characters)\n"), message
    p = run("get", "n" * 10_000, "A")
    assert p.returncode == 7
    message = err(p)
    assert len(message) < 400 and "feed name must be 1 to 27 characters" in message, message
    assert message.endswith("...' (10000 characters)\n")
    p = run("get", feed, "S" * 10_000)
    assert p.returncode == 7 and len(err(p)) < 400


def test_control_characters_never_reach_the_terminal(feed: str) -> None:
    p = run("publish", feed, "AAPL=\x1b[2J1")
    assert p.returncode == 7
    message = err(p)
    assert "\x1b" not in message and message.endswith(": got '\\x1b[2J1'\n"), message


# -- stream lines: the limit, and text that is not UTF-8 -----------------------------------------
def lines_of(data: bytes) -> List[Line]:
    return list(read_lines(io.BufferedReader(io.BytesIO(data))))  # type: ignore[arg-type]


def test_read_lines_keeps_at_most_the_limit_of_any_line() -> None:
    fits = b"A" * MAX_LINE
    over = b"B" * (MAX_LINE + 1)
    huge = b"C" * (MAX_LINE * 50)
    got = lines_of(fits + b"\n" + fits + b"\r\n" + over + b"\n" + huge + b"\r\nD 1\nlast")
    assert [(len(x.data), x.length, x.too_long) for x in got] == [
        (MAX_LINE, MAX_LINE, False),
        (MAX_LINE, MAX_LINE, False),
        (MAX_LINE + 1, MAX_LINE + 1, True),
        (MAX_LINE + 1, MAX_LINE * 50, True),
        (3, 3, False),
        (4, 4, False),
    ]
    assert got[4].data == b"D 1" and got[5].data == b"last"
    assert lines_of(b"") == [] and lines_of(b"\n\n") == [Line(b"", 0), Line(b"", 0)]
    assert lines_of(fits) == [Line(fits, MAX_LINE)]


def test_a_line_at_the_limit_is_published_and_one_over_it_is_refused(feed: str) -> None:
    at = b"A" + b" " * (MAX_LINE - 4) + b"1.5"
    over = b"B" + b" " * (MAX_LINE - 3) + b"2.5"
    assert len(at) == MAX_LINE and len(over) == MAX_LINE + 1
    p = run("publish", feed, "-", stdin=at + b"\n" + over + b"\n")
    assert p.returncode == 7
    assert err(p).splitlines()[0] == (
        f"pricefeed: line 2: a line may be at most {MAX_LINE} bytes: got {quote(over[:QUOTE_CHARS].decode())[:-1]}"
        f"...' ({MAX_LINE + 1} bytes)"
    )
    with Subscriber(feed) as sub:
        assert sub.symbols() == ["A"] and sub["A"].price == 1.5


def test_invalid_utf8_is_a_bad_line_not_a_crash(feed: str) -> None:
    p = run("publish", feed, "-", stdin=b"A 1\nB 2\xff\nC\xc3 3\nD 4\n")
    assert p.returncode == 7
    lines = err(p).splitlines()
    assert lines[:2] == [
        "pricefeed: line 2: a line must be UTF-8 text (byte 4 is not): got 'B 2\\xff'",
        "pricefeed: line 3: a line must be UTF-8 text (byte 2 is not): got 'C\\xc3 3'",
    ]
    with Subscriber(feed) as sub:
        assert sub.symbols() == ["A", "D"]


def test_strict_stops_at_a_line_too_long(feed: str) -> None:
    p = run("publish", feed, "-", "--strict", stdin=b"A 1\n" + b"x" * 100_000 + b"\nC 3\n")
    assert p.returncode == 7
    assert err(p).startswith(f"pricefeed: line 2: a line may be at most {MAX_LINE} bytes: got 'xxx")
    with Subscriber(feed) as sub:
        assert sub.symbols() == ["A"]


def test_random_bytes_are_refused_line_by_line_short_and_escaped(feed: str) -> None:
    noise = random.Random(20240601).randbytes(300_000)
    p = run("publish", feed, "-", stdin=b"FIRST 1\n" + noise + b"\nLAST 2\n")
    assert p.returncode == 7
    messages = err(p).splitlines()
    assert messages[-1].endswith("bad lines skipped (see above)")
    for line in messages:
        assert len(line) <= 250 and line.isprintable(), line
    with Subscriber(feed) as sub:
        assert sub["FIRST"].price == 1.0 and sub["LAST"].price == 2.0


# -- memory: a line of 50 MB is never held -----------------------------------------------------
#: Runs a command with this process's stdin and reports its exit code and its peak memory.
PEAK_RSS = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "peak_bytes": peak if sys.platform == "darwin" else peak * 1024}))
"""


@pytest.mark.skipif(WINDOWS, reason="peak memory is read with the resource module, which Windows lacks")
def test_a_50_mb_line_is_refused_in_bounded_memory_and_the_next_line_published(feed: str) -> None:
    size = 50 * 1024 * 1024
    data = b"AAPL 1x2" + b"x" * (size - 8) + b"\nGOOD 1.5\n"
    p = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *cli("publish", feed, "-")], input=data, capture_output=True, timeout=120
    )
    report = json.loads(p.stdout.decode().splitlines()[-1])
    assert report["peak_bytes"] < 100 * 1024 * 1024, f"peak RSS {report['peak_bytes'] / 2**20:.0f} MiB"
    message = err(p)
    assert report["code"] == 7, message[:1000]
    assert len(message) < 400, message[:1000]
    assert message.splitlines()[0] == (
        f"pricefeed: line 1: a line may be at most {MAX_LINE} bytes: got 'AAPL 1x2{'x' * (QUOTE_CHARS - 8)}...' "
        f"({size} bytes)"
    )
    with Subscriber(feed) as sub:
        assert sub.symbols() == ["GOOD"] and sub["GOOD"].price == 1.5
