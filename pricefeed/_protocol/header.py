"""The header: how a feed is laid out when created, and how a reader validates it (Rule 5).

``initialise`` writes an empty feed into a zero-filled buffer, ``version`` last; ``read_geometry``
checks a segment-shaped buffer and returns its shape, or raises BadSegment saying what is wrong
and what was expected. Both work on any buffer: a ``bytearray`` in unit tests, the mapping in
real use.
"""

from __future__ import annotations

from typing import NamedTuple

from .._errors import BadSegment, LayoutVersionMismatch
from . import layout as L
from .ordering import fence_acquire, fence_release

_Q = 8  # bytes per "Q" item
_I = 4  # bytes per "I" item


class Geometry(NamedTuple):
    capacity: int
    ring_size: int
    incarnation: int
    created_ns: int
    size: int


class Initialising(BadSegment):
    """Layout version 0: the creator has not finished writing the header (yet)."""


def initialise(buf: memoryview, capacity: int, ring_size: int, incarnation: int, created_ns: int) -> None:
    """Lay out an empty feed in a zero-filled buffer; ``version`` is written last."""
    L.check_geometry(capacity, ring_size)
    q = buf.cast("Q")
    i = buf.cast("I")
    try:
        q[L.OFF_MAGIC // _Q] = L.MAGIC
        i[L.OFF_HEADER_SIZE // _I] = L.HEADER_SIZE
        q[L.OFF_INCARNATION // _Q] = incarnation
        i[L.OFF_CAPACITY // _I] = capacity
        i[L.OFF_RING_SIZE // _I] = ring_size
        i[L.OFF_SLOT_SIZE // _I] = L.SLOT_SIZE
        i[L.OFF_RECORD_SIZE // _I] = L.RECORD_SIZE
        q[L.OFF_CREATED_NS // _Q] = created_ns
        q[L.OFF_SLOTS_OFFSET // _Q] = L.SLOTS_OFFSET
        q[L.OFF_RING_OFFSET // _Q] = L.ring_offset(capacity)
        i[L.OFF_WAKE_WORDS // _I] = L.WAKE_WORDS
        fence_release()  # pairs with the acquire in read_geometry() after loading version
        i[L.OFF_VERSION // _I] = L.LAYOUT_VERSION
    finally:
        q.release()
        i.release()


def read_geometry(buf: memoryview) -> Geometry:
    """Validate the header of a segment-shaped buffer; raise BadSegment saying what is wrong."""
    size = len(buf)
    if size < L.HEADER_SIZE:
        raise BadSegment(
            f"segment is {size} bytes, smaller than a pricefeed header ({L.HEADER_SIZE} bytes): not a pricefeed feed"
        )
    version = int.from_bytes(buf[L.OFF_VERSION : L.OFF_VERSION + 4], "little")
    fence_acquire()  # pairs with the release in initialise() before storing version
    head = bytes(buf[: L.HEADER_SIZE])

    def u32(off: int) -> int:
        return int.from_bytes(head[off : off + 4], "little")

    def u64(off: int) -> int:
        return int.from_bytes(head[off : off + 8], "little")

    magic = head[L.OFF_MAGIC : L.OFF_MAGIC + 8]
    if magic == bytes(8) and version == 0:
        raise Initialising("segment is still being created (its header is all zeros)")
    if magic == bytes(8):
        # The creator stores magic before version (with a release fence between), and the
        # acquire above means a version we see comes with the magic stored before it.
        raise BadSegment(
            f"damaged header: magic is 0 but version is {version}; a creator stores magic before version, "
            "so this is damage, not a segment still being created"
        )
    if magic != L.MAGIC_BYTES:
        raise BadSegment(f"not a pricefeed segment: its first 8 bytes are {magic!r}, expected {L.MAGIC_BYTES!r}")
    if version == 0:
        raise Initialising(
            "segment is still being initialised (layout version 0): its creator has not finished, or died before it did"
        )
    if version != L.LAYOUT_VERSION:
        raise LayoutVersionMismatch(
            f"segment has layout version {version}; this pricefeed reads version {L.LAYOUT_VERSION}"
        )
    expected = {
        "header_size": (u32(L.OFF_HEADER_SIZE), L.HEADER_SIZE),
        "wake_words": (u32(L.OFF_WAKE_WORDS), L.WAKE_WORDS),
        "slot_size": (u32(L.OFF_SLOT_SIZE), L.SLOT_SIZE),
        "record_size": (u32(L.OFF_RECORD_SIZE), L.RECORD_SIZE),
        "slots_offset": (u64(L.OFF_SLOTS_OFFSET), L.SLOTS_OFFSET),
    }
    for name, (found, want) in expected.items():
        if found != want:
            raise BadSegment(f"damaged header: {name} is {found}, expected {want}")
    capacity = u32(L.OFF_CAPACITY)
    ring_size = u32(L.OFF_RING_SIZE)
    try:
        L.check_geometry(capacity, ring_size)
    except ValueError as exc:
        raise BadSegment(f"damaged header: {exc}") from None
    ring_off = u64(L.OFF_RING_OFFSET)
    if ring_off != L.ring_offset(capacity):
        raise BadSegment(
            f"damaged header: ring_offset is {ring_off}, expected {L.ring_offset(capacity)} for capacity {capacity}"
        )
    need = L.segment_size(capacity, ring_size)
    if size < need:
        raise BadSegment(
            f"segment is truncated: {size} bytes, expected at least {need} for capacity "
            f"{capacity} and ring size {ring_size}"
        )
    incarnation = u64(L.OFF_INCARNATION)
    if incarnation == 0:
        raise BadSegment("damaged header: incarnation is 0, expected a non-zero random id")
    return Geometry(capacity, ring_size, incarnation, u64(L.OFF_CREATED_NS), need)
