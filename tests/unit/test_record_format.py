"""The recording file format (pricefeed._record.format, docs/recording.md) on files written
here: every entry reads back as written; a file cut at any byte reads as its whole entries and
a torn tail, found from the end as from the start; damage, a wrong version, a bad header and
entries that break a rule are refused with InvalidInput naming what is wrong; and no mutation
of a file makes the reader fail any other way."""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any, List, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricefeed import InvalidInput
from pricefeed._protocol import layout as L
from pricefeed._record import format as F
from pricefeed._values import parse_fields, quote_type

BOOK = parse_fields("bid:f64,ask:f64,bid_size:i64,ask_size:i64")
WIDE = parse_fields(",".join(f"f{k}:{'f64' if k % 2 == 0 else 'i64'}" for k in range(16)))
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
T0 = 1_764_380_000_123_456_789


def header(fields: Any = BOOK, feed: str = "book") -> F.Header:
    return F.Header(feed, 0x5EED | 1, T0 - 10**9, T0, fields)


def write(path: Path, head: F.Header, entries: Sequence[Any]) -> List[int]:
    """Write a recording; the offset where each entry ends."""
    enc = F.Encoder(head.fields)
    data = bytearray(F.encode_header(head))
    ends = []
    for e in entries:
        if isinstance(e, bytes):
            data += e
        elif isinstance(e, F.GapEntry):
            data += enc.gap(*e)
        elif isinstance(e, F.PublisherGoneEntry):
            data += enc.publisher_gone(*e)
        elif isinstance(e, F.PublisherRestartedEntry):
            data += enc.publisher_restarted(*e)
        elif isinstance(e, F.StartEntry):
            data += enc.start(*e)
        elif isinstance(e, F.EndedEntry):
            data += enc.ended(*e)
        else:
            data += enc.change(e)
        ends.append(len(data))
    path.write_bytes(bytes(data))
    return ends


def book_changes(n: int, first_seq: int = 1) -> List[Any]:
    qt = quote_type(BOOK)
    return [
        qt._build(f"S{k % 7}", (k + 0.5, k + 0.75, k, -k), T0 + 1000 * k, first_seq + k, 1 + k % 15) for k in range(n)
    ]


def read_all(path: Path) -> List[Any]:
    with F.Recording(str(path)) as rec:
        return list(rec.entries())


def end_of(path: Path, fields: Any = BOOK) -> F.End:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        head = F.read_header(fd, str(path))
        return F.locate_end(fd, head, os.fstat(fd).st_size, str(path))
    finally:
        os.close(fd)


def forward_end(path: Path) -> int:
    """The end of the valid part as a reader going forward finds it."""
    with F.Recording(str(path)) as rec:
        for _ in rec.entries():
            pass
        return rec.size() - rec.torn


# -- the header --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [L.DEFAULT_FIELDS, BOOK, WIDE], ids=["one", "book", "sixteen"])
@pytest.mark.parametrize("feed", ["p", "a" * 27, "x.y_z-1"])
def test_the_header_reads_back_as_written(tmp_path: Path, fields: Any, feed: str) -> None:
    h = header(fields, feed)
    data = F.encode_header(h)
    assert len(data) == F.header_size(len(fields)) == 84 + 32 * len(fields)
    assert data[:8] == b"PFRECORD"
    assert F.decode_header(data + b"more") == h
    write(tmp_path / "r", h, [])
    with F.Recording(str(tmp_path / "r")) as rec:
        assert rec.header == h
        assert list(rec.entries()) == [] and rec.torn == 0
        s = rec.scan()
    assert (s.changes, s.end, s.size, s.last_seq) == (0, len(data), len(data), 0)


def _patched(data: bytes, offset: int, fmt: str, *values: Any, fix_crc: bool = True) -> bytes:
    out = bytearray(data)
    struct.pack_into("<" + fmt, out, offset, *values)
    if fix_crc:
        size = struct.unpack_from("<I", out, 12)[0]
        if size == len(out):
            struct.pack_into("<I", out, size - 4, zlib.crc32(bytes(out[: size - 4])))
    return bytes(out)


GOOD = F.encode_header(header())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is not a pricefeed recording: it is empty"),
        (b"hello, world\n", "is not a pricefeed recording: it does not start with PFRECORD"),
        (b"PFREC", "is cut short: 5 bytes"),
        (GOOD[:40], "is cut short: 40 bytes"),
        (GOOD[:-1], f"is cut short: {len(GOOD) - 1} bytes, less than its {len(GOOD)}-byte header"),
        (_patched(GOOD, 8, "I", 2), "has format version 2; this pricefeed reads version 1 only"),
        (_patched(GOOD, 8, "I", 0), "has format version 0"),
        (_patched(GOOD, 12, "I", 9999), "has a damaged header: 4 fields in 9999 bytes"),
        (_patched(GOOD, 72, "I", 0), "has a damaged header: 0 fields"),
        (_patched(GOOD, 72, "I", 17), "has a damaged header: 17 fields"),
        (_patched(GOOD, 20, "B", 1, fix_crc=False), "has a damaged header: its checksum does not match"),
        (_patched(GOOD, 40, "4s", b"bo k"), "the feed's name is not 1 to 27 characters"),
        (_patched(GOOD, 40, "4s", b"\0ook"), "the feed's name is not"),
        (_patched(GOOD, 40, "4s", b"b\xffok"), "the feed's name is not"),
        (_patched(GOOD, 76, "I", 1), "the feed's name is not"),  # reserved must be zero
        (_patched(GOOD, 80 + 32, "3s", b"bid"), "its schema is not valid"),  # two fields named bid
        (_patched(GOOD, 80 + 24, "I", 3), "its schema is not valid"),  # type 3
        (_patched(GOOD, 80, "3s", b"b\0d"), "field 1's name"),
        (_patched(GOOD, 80 + 28, "I", 1), "field 1's name"),  # its reserved word
    ],
)
def test_a_bad_header_is_refused_saying_what_is_wrong(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "r"
    path.write_bytes(data)
    with pytest.raises(InvalidInput) as err:
        F.Recording(str(path))
    assert f"recording {str(path)!r} " in str(err.value)
    assert message in str(err.value)
    assert path.read_bytes() == data  # read, never written


def test_only_a_regular_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is a directory"):
        F.Recording(str(tmp_path))
    with pytest.raises(InvalidInput, match="does not exist"):
        F.Recording(str(tmp_path / "missing"))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(InvalidInput, match="is not a regular file"):
            F.Recording(str(tmp_path / "fifo"))  # and the open does not block


# -- entries -----------------------------------------------------------------------------------------
def test_every_kind_of_entry_reads_back_as_written(tmp_path: Path) -> None:
    qt = quote_type(WIDE)
    # Field k is a f64 for even k, an i64 for odd k: the extremes of each.
    floats = (-0.0, 5e-324, 1.7976931348623157e308, -1.5, 0.1, 1e-300, 3.0, -2.5)
    ints = (I64_MIN, I64_MAX, 0, 1, -1, 2, 3, 4)
    extremes = tuple(v for pair in zip(floats, ints) for v in pair)
    entries = [
        F.StartEntry(T0, 0, 4242),
        qt._build("A", extremes, 0, 1, 0xFFFF),
        qt._build("~" * 31, tuple(float(k) if k % 2 == 0 else -k for k in range(16)), 2**64 - 1, 2, 1),
        F.GapEntry(T0, 880, 3, 1000),
        qt._build("Z!", extremes, T0, 2**64 - 1, 0x8001),
        F.PublisherGoneEntry(T0, 1000, 0, False),
        F.PublisherGoneEntry(T0, 1000, 4294967295, True),
        F.PublisherRestartedEntry(T0, 1000, 77, 3),
        F.EndedEntry(T0 + 1, 2**64 - 1),
    ]
    write(tmp_path / "r", header(WIDE), entries)
    got = read_all(tmp_path / "r")
    assert got == entries
    assert [type(e) for e in got] == [type(e) for e in entries]
    assert got[1].f0 == 0.0 and str(got[1].f0) == "-0.0"
    with F.Recording(str(tmp_path / "r")) as rec:
        s = rec.scan()
    assert s.changes == 3 and s.symbols == 3 and s.last_seq == 2**64 - 1
    assert s.kinds == {"start": 1, "gap": 1, "publisher_gone": 2, "publisher_restarted": 1, "ended": 1, "change": 3}


def test_a_change_is_the_schema_and_the_symbol_and_nothing_more(tmp_path: Path) -> None:
    """The sizes docs/recording.md gives: a change of f fields and a symbol of s bytes is an
    entry of 28 + 8f + s bytes."""
    for fields in (L.DEFAULT_FIELDS, BOOK, WIDE):
        qt = quote_type(fields)
        for symbol in ("A", "AAPL", "X" * 31):
            values = tuple(1.0 if kind == L.TYPE_F64 else 1 for _, kind in fields)
            data = F.Encoder(fields).change(qt._build(symbol, values, T0, 1, 1))
            assert len(data) == 28 + 8 * len(fields) + len(symbol)
            n = struct.unpack_from("<H", data)[0]
            assert data[2] == 1 and data[3] == len(symbol) and data[2 + n : 4 + n] == data[:2]
            assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])


def test_an_entry_of_a_kind_this_version_does_not_know_is_skipped(tmp_path: Path) -> None:
    changes = book_changes(3)
    write(tmp_path / "r", header(), [changes[0], F.entry(bytes([200]) + b"later"), changes[1], changes[2]])
    with F.Recording(str(tmp_path / "r")) as rec:
        assert list(rec.entries()) == changes
        assert rec.skipped == 1
        assert rec.scan().kinds["unknown"] == 1


# -- torn tails ----------------------------------------------------------------------------------------
def test_a_file_cut_at_any_byte_keeps_every_whole_entry(tmp_path: Path) -> None:
    """What a writer killed mid-write leaves: every cut inside the last three entries reads as
    the entries before the cut, the rest a torn tail; the recorder's end, found from the end of
    the file, is the reader's, found from the start, with the last whole change's sequence."""
    entries = [F.StartEntry(T0, 0, 1), *book_changes(5), F.PublisherGoneEntry(T0, 5, 9, True), *book_changes(2, 7)]
    ends = write(tmp_path / "whole", header(), entries)
    data = (tmp_path / "whole").read_bytes()
    cut = tmp_path / "cut"
    seqs = [e.seq if hasattr(e, "changed_mask") else None for e in entries]
    for size in range(ends[-4], len(data) + 1):
        cut.write_bytes(data[:size])
        whole = [e for e, end in zip(entries, ends) if end <= size]
        valid_end = max([end for end in ends if end <= size], default=len(F.encode_header(header())))
        with F.Recording(str(cut)) as rec:
            assert list(rec.entries()) == whole, size
            assert rec.torn == size - valid_end
            assert rec.scan().end == valid_end
        last_seq = max([s for s, end in zip(seqs, ends) if s is not None and end <= size], default=0)
        assert end_of(cut) == F.End(valid_end, last_seq), size
        assert forward_end(cut) == valid_end


def test_a_file_cut_inside_its_first_entry_or_header(tmp_path: Path) -> None:
    write(tmp_path / "whole", header(), book_changes(1))
    data = (tmp_path / "whole").read_bytes()
    size = len(F.encode_header(header()))
    for cut in range(size, len(data)):
        (tmp_path / "cut").write_bytes(data[:cut])
        assert read_all(tmp_path / "cut") == []
        assert end_of(tmp_path / "cut") == F.End(size, 0)


def test_zeros_after_the_last_entry_are_a_torn_tail(tmp_path: Path) -> None:
    """What a machine that lost power can leave: the file longer than what reached the disk,
    the rest zeros. Longer than any entry, so it is found from the start."""
    changes = book_changes(50)
    ends = write(tmp_path / "r", header(), changes)
    with open(tmp_path / "r", "ab") as f:
        f.write(bytes(3 * F.MAX_ENTRY + 17))
    assert read_all(tmp_path / "r") == changes
    assert end_of(tmp_path / "r") == F.End(ends[-1], changes[-1].seq)


def test_a_corrupt_last_entry_is_a_torn_tail(tmp_path: Path) -> None:
    changes = book_changes(4)
    ends = write(tmp_path / "r", header(), changes)
    data = bytearray((tmp_path / "r").read_bytes())
    data[ends[-2] + 10] ^= 0x40
    (tmp_path / "r").write_bytes(bytes(data))
    assert read_all(tmp_path / "r") == changes[:3]
    assert end_of(tmp_path / "r") == F.End(ends[-2], changes[2].seq)


# -- damage ----------------------------------------------------------------------------------------------
def _damage(path: Path, offset: int, xor: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= xor
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["length", "kind", "symbol", "value", "trailing length", "crc"])
def test_damage_before_valid_entries_is_refused_naming_the_byte(tmp_path: Path, where: str) -> None:
    changes = book_changes(40)
    ends = write(tmp_path / "r", header(), changes)
    start = ends[9]  # the 11th entry
    offset = {"length": 0, "kind": 2, "symbol": -7, "value": 10, "trailing length": -6, "crc": -1}[where]
    at = start + offset if offset >= 0 else ends[10] + offset
    _damage(tmp_path / "r", at)
    message = f"is damaged at byte {start}: "
    with pytest.raises(InvalidInput, match=message) as err:
        read_all(tmp_path / "r")
    assert "a valid entry starts" in str(err.value) or "not all zero" in str(err.value)
    assert f"the {start} bytes before are valid" in str(err.value)
    with pytest.raises(InvalidInput, match=message), F.Recording(str(tmp_path / "r")) as rec:
        rec.scan()
    # A recorder reads the end of the file only (whatever its length): the end is whole, so it
    # appends there; the damage before it stays for every reader to name.
    assert end_of(tmp_path / "r") == F.End(ends[-1], changes[-1].seq)
    with F.Recording(str(tmp_path / "r")) as rec:  # the entries before the damage are given first
        got = []
        with pytest.raises(InvalidInput):
            for e in rec.entries():
                got.append(e)
        assert got == changes[:10]


def _framed(body: bytes) -> bytes:
    return F.entry(body)


def _change_body(
    symbol: bytes, values: Sequence[Any], time_ns: int, seq: int, changed: int, codes: str = "ddqq"
) -> bytes:
    return struct.pack(f"<BB{codes}QQH{len(symbol)}s", 1, len(symbol), *values, time_ns, seq, changed, symbol)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_change_body(b"ES", (float("nan"), 1.0, 1, 1), T0, 100, 1), "field 'bid' is nan"),
        (_change_body(b"ES", (1.0, float("-inf"), 1, 1), T0, 100, 1), "field 'ask' is -inf"),
        (_change_body(b"E S", (1.0, 1.0, 1, 1), T0, 100, 1), "symbol is b'E S'"),
        (_change_body(b"\x7fS", (1.0, 1.0, 1, 1), T0, 100, 1), "symbol is"),
        (_change_body(b"ES", (1.0, 1.0, 1, 1), T0, 100, 0), "changed fields are 0x0"),
        (_change_body(b"ES", (1.0, 1.0, 1, 1), T0, 100, 16), "changed fields are 0x10"),
        (_change_body(b"ES", (1.0, 1.0, 1, 1), T0, 5, 1), "change 5 after change 10"),
        (_change_body(b"ES", (1.0, 1.0, 1, 1), T0, 10, 1), "change 10 after change 10"),
        (_change_body(b"E" * 32, (1.0, 1.0, 1, 1), T0, 100, 1), "a symbol of 32"),
        (_change_body(b"ES", (1.0, 1.0, 1), T0, 100, 1, "ddq"), "a change of 46 bytes"),
        (bytes([1, 0]) + bytes(36) + b"", "a symbol of 0"),
        (struct.pack("<BQQQQ", 2, T0, 0, 1, 5), "a gap of 0 changes"),
        (struct.pack("<BQQQQ", 2, T0, 6, 1, 5), "a gap of 6 changes from 1 to 5"),
        (struct.pack("<BQQQQ", 2, T0, 1, 5, 4), "a gap of 1 changes from 5 to 4"),
        (struct.pack("<BQQIB", 3, T0, 5, 1, 2), "clean is 2"),
        (struct.pack("<BQQI", 3, T0, 5, 1), "a publisher_gone entry of 21 bytes, not 22"),
        (struct.pack("<BQQQ", 5, T0, 5, 1), "a start entry of 25 bytes, not 21"),
        (bytes([0, 1, 2]), "kind 0"),
    ],
)
def test_an_entry_that_breaks_a_rule_is_damage(tmp_path: Path, body: bytes, why: str) -> None:
    """Untrusted input: a checksum that matches is not enough; the entry must also be what its
    kind says (docs/recording.md, "Reading a recording")."""
    changes = book_changes(20)
    ends = write(tmp_path / "r", header(), [*changes[:10], _framed(body), *book_changes(10, 200)])
    with pytest.raises(InvalidInput) as err:
        read_all(tmp_path / "r")
    assert f"damaged at byte {ends[9]}: " in str(err.value) and why in str(err.value), str(err.value)


def test_a_length_out_of_bounds_is_never_followed(tmp_path: Path) -> None:
    """A length above MAX_BODY is damage, read no further (Rule 1); a lying length inside bounds
    fails its trailing copy or its checksum."""
    changes = book_changes(120)
    ends = write(tmp_path / "r", header(), changes)
    data = bytearray((tmp_path / "r").read_bytes())
    struct.pack_into("<H", data, ends[4], 60000)
    (tmp_path / "r").write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match=f"damaged at byte {ends[4]}: an entry whose length is 60000"):
        read_all(tmp_path / "r")
    struct.pack_into("<H", data, ends[4], 4000)
    (tmp_path / "r").write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match=f"damaged at byte {ends[4]}: an entry whose lengths differ"):
        read_all(tmp_path / "r")


def test_a_long_tail_that_is_not_zeros_is_damage(tmp_path: Path) -> None:
    changes = book_changes(5)
    ends = write(tmp_path / "r", header(), changes)
    with open(tmp_path / "r", "ab") as f:
        f.write(b"\0" * F.MAX_ENTRY + b"junk")
    with pytest.raises(InvalidInput, match=f"damaged at byte {ends[-1]}: .*not all zero"):
        read_all(tmp_path / "r")
    with pytest.raises(InvalidInput, match="nothing is appended"):
        end_of(tmp_path / "r")


# -- untrusted input ---------------------------------------------------------------------------------
_SAMPLE: List[bytes] = []


def _sample() -> bytes:
    if not _SAMPLE:
        enc = F.Encoder(BOOK)
        data = bytearray(F.encode_header(header()))
        data += enc.start(T0, 0, 1)
        for q in book_changes(12):
            data += enc.change(q)
        data += enc.gap(T0, 3, 20, 30)
        data += enc.ended(T0, 30)
        _SAMPLE.append(bytes(data))
    return _SAMPLE[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, 10_000),
    extra=st.binary(max_size=64),
)
def test_no_damage_makes_the_reader_fail_but_with_invalid_input(
    tmp_path: Path, flips: List[Any], cut: int, extra: bytes
) -> None:
    """Whatever bytes are changed, cut off or added, reading gives entries and a torn tail, or
    InvalidInput: never another exception, never an entry that breaks a rule."""
    data = bytearray(_sample())
    for at, xor in flips:
        data[at % len(data)] ^= xor
    data = data[: max(1, cut % (len(data) + 1))] + extra
    path = tmp_path / "fuzz"
    path.write_bytes(bytes(data))
    try:
        got = read_all(path)
    except InvalidInput:
        pass
    else:
        seqs = [e.seq for e in got if hasattr(e, "changed_mask")]
        assert seqs == sorted(set(seqs))
        for e in got:
            if hasattr(e, "changed_mask"):
                assert 1 <= e.changed_mask <= 15 and all(v - v == 0 for v in e[1:3])
    try:
        end_of(path)
    except InvalidInput:
        pass


# -- the spec ------------------------------------------------------------------------------------------
def test_the_example_in_the_spec_is_what_the_encoder_writes(tmp_path: Path) -> None:
    """docs/recording.md's example file, byte for byte, is what this implementation writes and
    reads back: the spec and the code cannot drift apart."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "recording.md").read_text(encoding="utf-8")
    block = doc.split("### An example", 1)[1].split("```", 2)[1]
    data = bytearray()
    for line in block.strip().splitlines():
        found = re.match(r"([0-9a-f]{4})  ((?:[0-9a-f]{2} )*[0-9a-f]{2})", line)
        assert found, line
        assert int(found.group(1), 16) == len(data), line
        data += bytes.fromhex(found.group(2))
    qt = quote_type(L.DEFAULT_FIELDS)
    head = F.Header("prices", 0x0123456789ABCDEF, 1764380000000000000, 1764380001000000000, L.DEFAULT_FIELDS)
    change = qt._build("AAPL", (187.25,), 1764380002000000000, 42, 1)
    assert bytes(data) == F.encode_header(head) + F.Encoder(L.DEFAULT_FIELDS).change(change)
    (tmp_path / "example.pfr").write_bytes(bytes(data))
    with F.Recording(str(tmp_path / "example.pfr")) as rec:
        assert rec.header == head
        assert list(rec.entries()) == [change]
