"""The layout module on its own: offsets, alignment, geometry rules and header validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricefeed._errors import BadSegment, LayoutVersionMismatch
from pricefeed._protocol import layout as L
from pricefeed._protocol.header import Initialising, initialise, read_geometry


@pytest.mark.parametrize("block", [L.HEADER, L.SLOT, L.RECORD], ids=lambda b: b.title)
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
    assert (L.HEADER_SIZE, L.WAKE_SIZE, L.SLOT_SIZE, L.RECORD_SIZE) == (256, 512, 64, 32)
    assert L.ring_offset(10) == 768 + 10 * 64
    assert L.segment_size(10, 16) == 768 + 10 * 64 + 16 * 32
    assert [L.wake_word_of(i) for i in (0, 1, 127, 128, 300)] == [0, 1, 127, 0, 44]
    assert L.MAGIC.to_bytes(8, "little") == b"PRCFEED\0"


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


def _fresh(capacity: int = 4, ring: int = 8) -> bytearray:
    buf = bytearray(L.segment_size(capacity, ring))
    initialise(memoryview(buf), capacity, ring, 12345, 1)
    return buf


def test_read_geometry_accepts_what_initialise_wrote() -> None:
    g = read_geometry(memoryview(_fresh(4, 8)))
    assert (g.capacity, g.ring_size, g.incarnation, g.size) == (4, 8, 12345, L.segment_size(4, 8))


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


def test_other_version_names_both() -> None:
    buf = _fresh()
    buf[L.OFF_VERSION : L.OFF_VERSION + 4] = (3).to_bytes(4, "little")
    with pytest.raises(LayoutVersionMismatch, match="layout version 3; this pricefeed reads version 2"):
        read_geometry(memoryview(buf))


def test_truncated_segment() -> None:
    buf = _fresh(4, 8)
    with pytest.raises(BadSegment, match=r"truncated: 1000 bytes, expected at least 1280"):
        read_geometry(memoryview(buf[:1000]))


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
