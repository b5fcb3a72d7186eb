"""`pricefeed record`, `replay` and `export` as a user runs them: exports in CSV and Parquet,
and every bad input (not a recording, another version, a damaged header or body, another feed
or schema, bad arguments) refused with a one-line error and its exit code, nothing changed."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, List

import pytest
from conftest import cli, unlink_feed

from pricefeed import FeedNotFound, Publisher, Subscriber
from pricefeed._record import format as F
from pricefeed._values import parse_fields, quote_type

BOOK = "bid:f64,ask:f64,bid_size:i64,ask_size:i64"
FIELDS = parse_fields(BOOK)
T0 = 1_764_380_000_123_456_789
HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None


def run(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def changes(n: int = 6) -> List[Any]:
    qt = quote_type(FIELDS)
    return [
        qt._build(f"S{k % 3}", (k + 0.1, k + 0.25, k, -(2**63) if k == 2 else 2**63 - 1), T0 + k, k + 1, 1 + k % 15)
        for k in range(n)
    ]


def make(path: Path, feed: str = "book", entries: Any = None, fields: Any = FIELDS, incarnation: int = 7) -> bytes:
    """A recording of ``entries`` (default: changes()) with a start entry and a gap."""
    enc = F.Encoder(fields)
    data = F.encode_header(F.Header(feed, incarnation, T0, T0, fields)) + enc.start(T0, 0, 99)
    for e in changes() if entries is None else entries:
        data += enc.gap(*e) if isinstance(e, F.GapEntry) else enc.change(e)
    path.write_bytes(data)
    return data


def test_the_commands_say_what_they_do() -> None:
    listed = run("--help").stdout
    for command in ("record", "replay", "export"):
        assert command in listed
        p = run(command, "--help")
        assert p.returncode == 0 and "Usage: pricefeed " + command in p.stdout
    assert "mirror, record, top or metrics --serve stopped by SIGTERM" in " ".join(listed.split())  # exit codes


# -- export ------------------------------------------------------------------------------------------
def test_export_to_csv_writes_one_row_per_change(tmp_path: Path) -> None:
    path = tmp_path / "book.pfr"
    data = make(path, entries=[*changes()[:3], F.GapEntry(T0, 5, 4, 10), *changes(13)[10:]])
    with open(path, "ab") as f:
        f.write(F.Encoder(FIELDS).change(changes(14)[13])[:-9])  # a torn last entry
    out = tmp_path / "book.csv"
    p = run("export", path, "--to-csv", out)
    assert p.returncode == 0, p.stderr
    assert p.stderr == (
        f"pricefeed export: 6 rows to {str(out)!r}; other entries: gap=1 start=1; left out a torn tail of "
        f"{path.stat().st_size - len(data)} bytes\n"
    )
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["seq", "time_ns", "symbol", "bid", "ask", "bid_size", "ask_size", "changed"]
    want = [*changes()[:3], *changes(13)[10:]]
    assert len(rows) == 1 + len(want)
    for row, q in zip(rows[1:], want):
        assert row == [str(q.seq), str(q.time_ns), q.symbol, repr(q.bid), repr(q.ask), str(q.bid_size),
                       str(q.ask_size), ",".join(q.changed)]  # fmt: skip
        assert float(row[3]) == q.bid and int(row[6]) == q.ask_size
    stdout = run("export", path, "--to-csv", "-")
    assert stdout.returncode == 0 and stdout.stdout == out.read_text()
    assert path.read_bytes()[: len(data)] == data


@pytest.mark.skipif(
    not HAS_PYARROW, reason="pyarrow is not installed (the parquet extra: pip install 'pricefeed[parquet]')"
)
def test_export_to_parquet_writes_one_row_per_change(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "book.pfr"
    make(path, feed="top-of-book", entries=[*changes(5), F.GapEntry(T0, 1, 6, 6), *changes(9)[7:]])
    out = tmp_path / "book.parquet"
    p = run("export", path, "--to-parquet", out)
    assert p.returncode == 0, p.stderr
    assert "7 rows" in p.stderr
    table = pq.read_table(out)
    assert table.column_names == ["seq", "time_ns", "symbol", "bid", "ask", "bid_size", "ask_size", "changed"]
    types = table.schema.types
    assert [str(t) for t in types[:7]] == ["uint64", "uint64", "string", "double", "double", "int64", "int64"]
    assert str(types[7].value_type) == "string"  # changed: a list of field names
    got = table.to_pylist()
    want = [*changes(5), *changes(9)[7:]]
    assert [(r["seq"], r["time_ns"], r["symbol"], r["bid"], r["ask"], r["bid_size"], r["ask_size"], r["changed"])
            for r in got] == [(q.seq, q.time_ns, q.symbol, *q[1:5], list(q.changed)) for q in want]  # fmt: skip
    meta = table.schema.metadata
    assert meta[b"pricefeed.feed"] == b"top-of-book" and meta[b"pricefeed.fields"] == BOOK.encode()


def test_export_to_parquet_without_pyarrow_says_how_to_get_it(tmp_path: Path) -> None:
    path = tmp_path / "book.pfr"
    make(path)
    code = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
        "from pricefeed._cli.main import main\n"
        f"sys.exit(main(['export', {str(path)!r}, '--to-parquet', {str(tmp_path / 'out.parquet')!r}]))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert p.stderr == (
        "pricefeed: --to-parquet needs pyarrow, which is not installed: pip install 'pricefeed[parquet]' "
        "(--to-csv needs nothing more)\n"
    )
    assert not (tmp_path / "out.parquet").exists()


def test_export_refuses_to_write_over_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "book.pfr"
    data = make(path)
    p = run("export", path, "--to-csv", path)
    assert p.returncode == 7
    assert p.stderr == f"pricefeed: output {str(path)!r} is the recording itself\n"
    assert path.read_bytes() == data


# -- bad recordings --------------------------------------------------------------------------------------
def _header(version: int = 1, crc_ok: bool = True) -> bytes:
    data = bytearray(F.encode_header(F.Header("book", 7, T0, T0, FIELDS)))
    struct.pack_into("<I", data, 8, version)
    if crc_ok:
        struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    else:
        data[45] ^= 0x20
    return bytes(data)


BAD = {
    "text": (
        b"AAPL 187.5\nMSFT 415.1\n",
        "is not a pricefeed recording: it does not start with PFRECORD (it starts b'AAPL 187')",
    ),
    "empty": (b"", "is not a pricefeed recording: it is empty"),
    "version": (
        _header(version=2),
        "has format version 2; this pricefeed reads version 1 only (a newer pricefeed wrote it, or it is damaged)",
    ),
    "header": (_header(crc_ok=False), "has a damaged header: its checksum does not match"),
    "cut": (_header()[:100], "is cut short: 100 bytes, less than its 212-byte header"),
}


@pytest.mark.parametrize("kind", list(BAD))
@pytest.mark.parametrize("command", ["replay", "export", "record"])
def test_a_file_that_is_no_recording_is_refused_and_left_as_it_is(
    feed: str, tmp_path: Path, kind: str, command: str
) -> None:
    data, message = BAD[kind]
    path = tmp_path / "bad.pfr"
    path.write_bytes(data)
    args = {
        "replay": ("replay", path, feed),
        "export": ("export", path, "--to-csv", tmp_path / "out.csv"),
        "record": ("record", feed, path),  # the file is refused before the feed is looked for
    }[command]
    p = run(*args)
    assert p.returncode == 7, p.stderr
    assert p.stderr == f"pricefeed: recording {str(path)!r} {message}\n"
    assert path.read_bytes() == data
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(FeedNotFound):  # nothing was created
        Subscriber(feed).close()


def test_a_damaged_recording_replays_and_exports_nothing(feed: str, tmp_path: Path) -> None:
    path = tmp_path / "book.pfr"
    data = bytearray(make(path, entries=changes(40)))
    start = len(_header()) + len(F.Encoder.start(T0, 0, 99)) + 5 * len(F.Encoder(FIELDS).change(changes()[0]))
    data[start + 12] ^= 0x08  # a bit of the sixth change's ask
    path.write_bytes(bytes(data))
    out = tmp_path / "out.csv"
    out.write_text("an earlier export\n")
    for args in (("replay", path, feed, "--as-fast-as-possible"), ("export", path, "--to-csv", out)):
        p = run(*args)
        assert p.returncode == 7, p.stderr
        assert p.stderr.startswith(
            f"pricefeed: recording {str(path)!r} is damaged at byte {start}: an entry whose checksum does not match, "
            "and a valid entry starts"
        ), p.stderr
        assert p.stderr.endswith(f"the {start} bytes before are valid\n")
    assert out.read_text() == "an earlier export\n"  # left as it was
    assert sorted(x.name for x in tmp_path.iterdir()) == ["book.pfr", "out.csv"]  # no temporary file left
    assert run("ls").stdout.count(feed) == 0  # the replay created nothing


# -- feeds that do not fit --------------------------------------------------------------------------------
def test_replay_refuses_a_feed_of_other_fields_and_leaves_it_alone(feed: str, tmp_path: Path) -> None:
    path = tmp_path / "book.pfr"
    make(path)
    with Publisher.create(feed, fields="price:f64") as pub:
        pub.publish("AAPL", 187.5)
    before = json.loads(run("status", feed, "--json").stdout)
    p = run("replay", path, feed)
    assert p.returncode == 7, p.stderr
    assert p.stderr == (
        f"pricefeed: feed {feed!r} has fields price:f64, and the recording has {BOOK}: a feed's fields are fixed; "
        f"use another feed, or remove this one (pricefeed rm {feed})\n"
    )
    after = json.loads(run("status", feed, "--json").stdout)
    assert (after["head_seq"], after["publisher_epoch"]) == (before["head_seq"], before["publisher_epoch"])


def test_a_replay_into_a_feed_of_the_same_fields_adds_to_it(feed: str, tmp_path: Path) -> None:
    path = tmp_path / "book.pfr"
    make(path)
    with Publisher.create(feed, fields=BOOK) as pub:
        pub.publish("ES", bid=1.0)
    p = run("replay", path, feed, "--as-fast-as-possible", "--original-time", "--end")
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith(f"pricefeed replay: 6 changes of {str(path)!r} into feed {feed!r} in ")
    with Subscriber(feed) as sub:
        got = list(sub.updates(after=1, timeout=5))  # to the end the replay made
    assert [(q.symbol, q[1:5], q.time_ns, q.seq) for q in got] == [
        (q.symbol, q[1:5], q.time_ns, q.seq + 1) for q in changes()
    ]


def test_replay_into_a_feed_too_small_publishes_nothing(feed: str, other_feed: str, tmp_path: Path) -> None:
    path = tmp_path / "book.pfr"
    make(path)  # three symbols
    p = run("replay", path, feed, "--capacity", "2", "--as-fast-as-possible")
    assert p.returncode == 8, p.stderr
    assert p.stderr == (
        f"pricefeed: feed {feed!r} has room for 2 more symbols, and the recording has 3 it lacks; nothing was "
        "published (replay into a feed created with a larger --capacity)\n"
    )
    with Subscriber(feed) as sub:
        assert sub.head == 0
    with Publisher.create(other_feed, capacity=3, fields=BOOK) as pub:
        pub.publish("S0", bid=1.0)  # one of the recording's: two more fit
        pub.publish("X", bid=1.0)
    assert run("replay", path, other_feed).returncode == 8
    with Publisher.open(other_feed) as pub:
        assert pub.head == 2


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null here")
def test_export_to_dev_null_checks_the_file_and_leaves_dev_null_alone(tmp_path: Path) -> None:
    path = tmp_path / "book.pfr"
    make(path)
    p = run("export", path, "--to-csv", "/dev/null")
    assert p.returncode == 0, p.stderr
    assert p.stderr == "pricefeed export: 6 rows to '/dev/null'; other entries: start=1\n"
    assert not Path("/dev/null").is_file()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["book.pfr"]


def test_record_refuses_a_file_of_another_feed_or_an_earlier_incarnation(
    feed: str, other_feed: str, tmp_path: Path
) -> None:
    path = tmp_path / "book.pfr"
    with Publisher.create(feed, fields=BOOK) as pub:
        pub.publish("ES", bid=1.0)
        pub.end()
    p = run("record", feed, path)
    assert p.returncode == 0, p.stderr  # an ended feed: recorded up to its end
    assert "ended: changes=1 gaps=0" in p.stderr
    data = path.read_bytes()
    Publisher.create(other_feed, fields=BOOK).close()
    p = run("record", other_feed, path)
    assert p.returncode == 7
    assert (
        p.stderr
        == f"pricefeed: recording {str(path)!r} is of feed {feed!r}, not {other_feed!r}; record into another file\n"
    )
    unlink_feed(feed)
    Publisher.create(feed, fields=BOOK).close()
    p = run("record", feed, path)
    assert p.returncode == 7
    assert p.stderr.startswith(f"pricefeed: recording {str(path)!r} is of an earlier feed {feed!r} (incarnation 0x")
    assert p.stderr.endswith("its sequence started again, so record it into another file\n")
    unlink_feed(feed)
    Publisher.create(feed, fields="price").close()
    p = run("record", feed, path)
    assert p.returncode == 7
    assert p.stderr.startswith(f"pricefeed: feed {feed!r} has fields price:f64, and the recording has {BOOK}")
    assert path.read_bytes() == data


def test_record_of_a_missing_feed_exits_3_and_makes_no_file(feed: str, tmp_path: Path) -> None:
    p = run("record", feed, tmp_path / "new.pfr")
    assert p.returncode == 3
    assert p.stderr == (
        f"pricefeed: no feed named {feed!r} on this machine (--wait waits for it to appear; pricefeed ls lists "
        "the feeds there are)\n"
    )
    assert list(tmp_path.iterdir()) == []


# -- usage ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("record", "f", "{tmp}/missing/x.pfr"), "its directory"),
        (("record", "f", "{tmp}"), "is a directory"),
        (("record", "f", "{tmp}/x.pfr", "--fsync", "often"), "--fsync is batch, never, or seconds"),
        (("record", "f", "{tmp}/x.pfr", "--fsync", "0"), "--fsync is batch, never, or seconds"),
        (("replay", "{tmp}/missing.pfr", "f"), "does not exist"),
        (("replay", "{tmp}/r.pfr", "f", "--speed", "0"), "--speed"),
        (("replay", "{tmp}/r.pfr", "f", "--speed", "2", "--as-fast-as-possible"), "exclude each other"),
        (("export", "{tmp}/r.pfr"), "give one of --to-csv OUT and --to-parquet OUT"),
        (("export", "{tmp}/r.pfr", "--to-csv", "a", "--to-parquet", "b"), "give one of"),
        (("export", "{tmp}/missing.pfr", "--to-csv", "-"), "does not exist"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, args: Any, message: str) -> None:
    make(tmp_path / "r.pfr")
    p = run(*(a.format(tmp=tmp_path) for a in args))
    assert p.returncode == 2, p.stderr
    assert message in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.pfr"]
