"""The layout module on its own: offsets, alignment, geometry rules and header validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricefeed._errors import BadSegment, LayoutVersionMismatch
from pricefeed._protocol import layout as L
from pricefeed._protocol.header import Initialising, initialise, read_geometry


@pytest.mark.parametrize("block", [L.HEADER, L.SCHEMA_ENTRY, L.SLOT, L.RECORD], ids=lambda b: b.title)
def test_fields_are_contiguous_and_naturally_aligned(block: L._Block) -> None:
    offset = 0
    for f in block.fields:
        assert f.offset == offset, f
        if not f.ctype.startswith(("u8[", "char[")):
            assert f.offset % f.size == 0, f"{f.name} is not naturally aligned"
            assert f.offset // L.CACHE_LINE == (f.offset + f.size - 1) // L.CACHE_LINE
        offset += f.size
    assert block.size == offset


def test_hot_words_sit_on_cache_lines_of_their_own() -> None:
    line = {f.name: f.offset // L.CACHE_LINE for f in L.HEADER.fields if not f.name.startswith("_")}
    for hot in ("head_seq", "futex"):
        sharing = [name for name, ln in line.items() if ln == line[hot] and name != hot]
        assert sharing == [], f"{hot} shares its cache line with {sharing}"


def test_sizes_and_offsets() -> None:
    assert (L.HEADER_SIZE, L.SCHEMA_OFFSET, L.WAKE_OFFSET, L.SYMBOLS_OFFSET) == (256, 256, 768, 1280)
    # A slot of up to four fields is one cache line; a record of one field is half a line.
    assert [L.slot_size(n) for n in (1, 4, 5, 12, 16)] == [64, 64, 128, 128, 192]
    assert [L.record_size(n) for n in (1, 2, 5, 6, 16)] == [32, 64, 64, 128, 192]
    assert L.slots_offset(10) == 1280 + 320 + 0 and L.slots_offset(3) == 1280 + 128  # the symbols, to a line
    assert L.ring_offset(10) == 1600 + 10 * 64 and L.ring_offset(10, 16) == 1600 + 10 * 192
    assert L.segment_size(10, 16) == 1600 + 10 * 64 + 16 * 32
    assert L.segment_size(10, 16, 4) == 1600 + 10 * 64 + 16 * 64
    assert [L.wake_word_of(i) for i in (0, 1, 127, 128, 300)] == [0, 1, 127, 0, 44]
    assert L.MAGIC.to_bytes(8, "little") == b"PRCFEED\0"
    for n in range(1, L.MAX_FIELDS + 1):
        for capacity in (1, 2, 3, 1000):
            assert L.slots_offset(capacity) % L.CACHE_LINE == 0 and L.ring_offset(capacity, n) % L.CACHE_LINE == 0
        assert L.slot_size(n) % L.CACHE_LINE == 0 and L.CACHE_LINE % L.record_size(n) in (0, L.CACHE_LINE)


@pytest.mark.parametrize(
    ("capacity", "ring", "message"),
    [
        (0, 16, "capacity must be a whole number from 1 to 1048576: capacity=0"),
        (L.MAX_CAPACITY + 1, 16, "capacity=1048577"),
        (8, 1000, "ring size must be a power of 2 from 2 to 16777216: ring_size=1000"),
        (8, 1, "ring_size=1"),
        (8, 1 << 25, "ring_size=33554432"),
    ],
)
def test_geometry_rules_name_the_rule_and_the_value(capacity: int, ring: int, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        L.check_geometry(capacity, ring)


QUOTE = (("bid", L.TYPE_F64), ("ask", L.TYPE_F64), ("bid_size", L.TYPE_I64), ("ask_size", L.TYPE_I64))


def _fresh(capacity: int = 4, ring: int = 8, fields: tuple = L.DEFAULT_FIELDS) -> bytearray:
    buf = bytearray(L.segment_size(capacity, ring, len(fields)))
    initialise(memoryview(buf), capacity, ring, 12345, 1, fields)
    return buf


@pytest.mark.parametrize("fields", [L.DEFAULT_FIELDS, QUOTE, tuple((f"F{k}_x", 1 + k % 2) for k in range(16))])
def test_read_geometry_accepts_what_initialise_wrote(fields: tuple) -> None:
    g = read_geometry(memoryview(_fresh(4, 8, fields)))
    assert (g.capacity, g.ring_size, g.incarnation, g.size) == (4, 8, 12345, L.segment_size(4, 8, len(fields)))
    assert g.fields == fields


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((), "a schema has 1 to 16 fields: got 0"),
        (tuple((f"f{k}", 1) for k in range(17)), "a schema has 1 to 16 fields: got 17"),
        ((("1bid", 1),), "an ASCII letter, then letters, digits or _: got '1bid'"),
        ((("bid-size", 1),), "got 'bid-size'"),
        ((("b" * 24, 1),), "1 to 23 characters"),
        ((("_x", 1),), "got '_x'"),
        ((("bïd", 1),), "got 'bïd'"),
        ((("seq", 1),), "field name 'seq' is taken by every quote"),
        ((("bid", 1), ("BID", 2)), "fields 'bid' and 'BID' have the same name"),
        ((("bid", 3),), "field 'bid' has type 3; expected f64 or i64"),
    ],
)
def test_schema_rules_name_the_rule_and_the_value(fields: tuple, message: str) -> None:
    import re

    with pytest.raises(ValueError, match=re.escape(message)):
        L.check_fields(fields)


@pytest.mark.parametrize(
    ("poke", "message"),
    [
        ((L.OFF_FIELD_COUNT, (0).to_bytes(4, "little")), "field_count is 0, expected 1 to 16"),
        ((L.OFF_FIELD_COUNT, (17).to_bytes(4, "little")), "field_count is 17, expected 1 to 16"),
        ((L.OFF_FIELD_COUNT, (5).to_bytes(4, "little")), "damaged schema: entry 4 has name b'"),
        ((L.OFF_FIELD_COUNT, (2).to_bytes(4, "little")), "damaged schema: entry 2 is not zero"),
        ((L.schema_entry_offset(1) + L.FIELD_TYPE, (0).to_bytes(4, "little")), "field 'ask' has type 0"),
        ((L.schema_entry_offset(1) + L.FIELD_RESERVED, b"\1"), "entry 1 has bytes after its name's NUL"),
        ((L.schema_entry_offset(0), b"1"), "entry 0 has name b'1id"),
        ((L.schema_entry_offset(0) + 5, b"x"), "entry 0 has bytes after its name's NUL"),
        ((L.schema_entry_offset(1), b"bid"), "fields 'bid' and 'bid' have the same name"),
        ((L.schema_entry_offset(5), b"x"), "entry 5 is not zero, but the schema has 4 field(s)"),
        ((L.OFF_SLOT_SIZE, (128).to_bytes(4, "little")), "slot_size is 128, expected 64 for capacity 4 and 4 field(s)"),
        ((L.OFF_RECORD_SIZE, (32).to_bytes(4, "little")), "record_size is 32, expected 64"),
        ((L.OFF_SYMBOLS_OFFSET, (1281).to_bytes(8, "little")), "symbols_offset is 1281, expected 1280"),
    ],
)
def test_a_damaged_schema_is_refused_naming_what_is_wrong(poke: tuple, message: str) -> None:
    import re

    buf = _fresh(4, 8, QUOTE)
    at, data = poke
    buf[at : at + len(data)] = data
    with pytest.raises(BadSegment, match=re.escape(message)):
        read_geometry(memoryview(buf))


@settings(max_examples=3000, deadline=None)
@given(
    offset=st.integers(L.OFF_FIELD_COUNT, L.SYMBOLS_OFFSET - 1).filter(
        lambda o: not L.WAKE_OFFSET <= o < L.SYMBOLS_OFFSET
    ),
    data=st.binary(min_size=1, max_size=24),
)
def test_a_fuzzed_schema_gives_a_valid_schema_or_a_clear_error(offset: int, data: bytes) -> None:
    """Bytes anywhere in the schema table (or the header's schema words): either what is read
    is a schema that obeys every rule and fits the segment, or the error names the damage."""
    buf = _fresh(4, 8, QUOTE)
    buf[offset : offset + len(data)] = data
    try:
        g = read_geometry(memoryview(buf))
    except BadSegment as exc:
        assert str(exc).startswith(("damaged header:", "damaged schema:", "segment is truncated")), str(exc)
    else:
        assert L.check_fields(g.fields) == g.fields
        assert L.segment_size(4, 8, len(g.fields)) <= len(buf)


def test_foreign_bytes_are_not_a_feed() -> None:
    with pytest.raises(BadSegment, match=r"not a pricefeed segment: its first 8 bytes are b'hello wo'"):
        read_geometry(memoryview(bytearray(b"hello world" + bytes(300))))


def test_too_small_to_be_a_feed() -> None:
    with pytest.raises(BadSegment, match="smaller than a pricefeed header"):
        read_geometry(memoryview(bytearray(10)))


def test_version_zero_means_initialising() -> None:
    buf = _fresh()
    buf[L.OFF_VERSION : L.OFF_VERSION + 4] = (0).to_bytes(4, "little")
    with pytest.raises(Initialising, match="being initialised"):
        read_geometry(memoryview(buf))


@pytest.mark.parametrize("version", [2, 4])
def test_other_version_names_both(version: int) -> None:
    buf = _fresh()
    buf[L.OFF_VERSION : L.OFF_VERSION + 4] = version.to_bytes(4, "little")
    with pytest.raises(LayoutVersionMismatch, match=f"layout version {version}; this pricefeed reads version 3"):
        read_geometry(memoryview(buf))


def test_truncated_segment() -> None:
    buf = _fresh(4, 8)
    with pytest.raises(BadSegment, match=r"truncated: 1000 bytes, expected at least 1280"):
        read_geometry(memoryview(buf[:1000]))
    with pytest.raises(BadSegment, match=r"truncated: 1800 bytes, expected at least 1920 for capacity 4, ring"):
        read_geometry(memoryview(buf[:1800]))


@settings(max_examples=2000, deadline=None)
@given(
    offset=st.integers(0, L.HEADER_SIZE - 1),
    data=st.binary(min_size=1, max_size=16),
    cut=st.integers(0, 1400),
)
def test_damaged_headers_give_a_geometry_or_a_clear_error(offset: int, data: bytes, cut: int) -> None:
    buf = _fresh(4, 8)
    buf[offset : offset + len(data)] = data
    buf = buf[: L.segment_size(4, 8) - cut] if cut < 1280 else buf + bytes(cut)
    try:
        g = read_geometry(memoryview(buf))
    except BadSegment as exc:
        # Every refusal says what is wrong with the header, not just that something is.
        prefixes = ("segment is ", "segment has layout version", "not a pricefeed segment", "damaged header:")
        prefixes += ("damaged schema:",)
        assert str(exc).startswith(prefixes), str(exc)
    else:
        assert L.segment_size(g.capacity, g.ring_size) <= len(buf)
        L.check_geometry(g.capacity, g.ring_size)


def test_the_c_build_is_of_this_layout() -> None:
    """The C core's offsets are compiled in: the build says which layout it was made from."""
    from pricefeed._protocol import accel

    if accel._speedups is None:
        pytest.skip("the C implementation is not built here, or PRICEFEED_PURE is set")
    assert L.digest() == accel._speedups.LAYOUT_DIGEST


def test_a_c_build_of_another_layout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build made before layout.py changed (a stale editable install, say) would read the
    wrong bytes: it is not used, and a warning says how to rebuild it."""
    import importlib.util

    from pricefeed._protocol import accel

    if accel._speedups is None:
        pytest.skip("the C implementation is not built here, or PRICEFEED_PURE is set")
    monkeypatch.setattr(L, "digest", lambda: "0" * 16)
    spec = importlib.util.spec_from_file_location("pricefeed._protocol._accel_probe", accel.__file__)
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    with pytest.warns(RuntimeWarning, match="built from another layout.*pip install -e"):
        spec.loader.exec_module(probe)
    assert probe.AVAILABLE is False
