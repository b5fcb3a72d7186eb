"""The header: how a feed is laid out when created, and how a reader validates it (Rule 5).

``initialise`` writes an empty feed into a zero-filled buffer, ``version`` last; ``read_geometry``
checks a segment-shaped buffer and returns its shape, or raises BadSegment saying what is wrong
and what was expected. Both work on any buffer: a ``bytearray`` in unit tests, the mapping in
real use.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

from .._errors import BadSegment, LayoutVersionMismatch
from . import layout as L
from .ordering import fence_acquire, fence_release

_Q = 8  # bytes per "Q" item
_I = 4  # bytes per "I" item


class Geometry(NamedTuple):
    """The shape of a feed, as validated at open: every offset a reader uses comes from here."""

    capacity: int
    ring_size: int
    incarnation: int
    created_ns: int
    size: int
    #: The schema: (name, type) per field, in order; type is L.TYPE_F64 or L.TYPE_I64.
    fields: Tuple[Tuple[str, int], ...] = L.DEFAULT_FIELDS

    @property
    def slot_size(self) -> int:
        return L.slot_size(len(self.fields))

    @property
    def record_size(self) -> int:
        return L.record_size(len(self.fields))

    @property
    def slots_offset(self) -> int:
        return L.slots_offset(self.capacity)

    @property
    def ring_offset(self) -> int:
        return L.ring_offset(self.capacity, len(self.fields))


class Initialising(BadSegment):
    """Layout version 0: the creator has not finished writing the header (yet)."""


def initialise(
    buf: memoryview,
    capacity: int,
    ring_size: int,
    incarnation: int,
    created_ns: int,
    fields: Tuple[Tuple[str, int], ...] = L.DEFAULT_FIELDS,
) -> None:
    """Lay out an empty feed in a zero-filled buffer; ``version`` is written last."""
    L.check_geometry(capacity, ring_size)
    fields = L.check_fields(fields)
    n = len(fields)
    for k, (name, kind) in enumerate(fields):
        at = L.schema_entry_offset(k)
        buf[at + L.FIELD_NAME : at + L.FIELD_NAME + len(name)] = name.encode("ascii")
        buf[at + L.FIELD_TYPE : at + L.FIELD_TYPE + 4] = kind.to_bytes(4, "little")
    q = buf.cast("Q")
    i = buf.cast("I")
    try:
        q[L.OFF_MAGIC // _Q] = L.MAGIC
        i[L.OFF_HEADER_SIZE // _I] = L.HEADER_SIZE
        q[L.OFF_INCARNATION // _Q] = incarnation
        i[L.OFF_CAPACITY // _I] = capacity
        i[L.OFF_RING_SIZE // _I] = ring_size
        i[L.OFF_SLOT_SIZE // _I] = L.slot_size(n)
        i[L.OFF_RECORD_SIZE // _I] = L.record_size(n)
        q[L.OFF_CREATED_NS // _Q] = created_ns
        q[L.OFF_SLOTS_OFFSET // _Q] = L.slots_offset(capacity)
        q[L.OFF_RING_OFFSET // _Q] = L.ring_offset(capacity, n)
        i[L.OFF_WAKE_WORDS // _I] = L.WAKE_WORDS
        i[L.OFF_FIELD_COUNT // _I] = n
        q[L.OFF_SCHEMA_OFFSET // _Q] = L.SCHEMA_OFFSET
        q[L.OFF_SYMBOLS_OFFSET // _Q] = L.SYMBOLS_OFFSET
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
    if size < L.SYMBOLS_OFFSET:
        raise BadSegment(
            f"segment is truncated: {size} bytes, expected at least {L.SYMBOLS_OFFSET} for a header, "
            "a schema and a wake table"
        )
    expected = {
        "header_size": (u32(L.OFF_HEADER_SIZE), L.HEADER_SIZE),
        "wake_words": (u32(L.OFF_WAKE_WORDS), L.WAKE_WORDS),
        "schema_offset": (u64(L.OFF_SCHEMA_OFFSET), L.SCHEMA_OFFSET),
        "symbols_offset": (u64(L.OFF_SYMBOLS_OFFSET), L.SYMBOLS_OFFSET),
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
    fields = read_schema(bytes(buf[L.SCHEMA_OFFSET : L.SCHEMA_OFFSET + L.SCHEMA_SIZE]), u32(L.OFF_FIELD_COUNT))
    n = len(fields)
    derived = {
        "slot_size": (u32(L.OFF_SLOT_SIZE), L.slot_size(n)),
        "record_size": (u32(L.OFF_RECORD_SIZE), L.record_size(n)),
        "slots_offset": (u64(L.OFF_SLOTS_OFFSET), L.slots_offset(capacity)),
        "ring_offset": (u64(L.OFF_RING_OFFSET), L.ring_offset(capacity, n)),
    }
    for name, (found, want) in derived.items():
        if found != want:
            raise BadSegment(
                f"damaged header: {name} is {found}, expected {want} for capacity {capacity} and {n} field(s)"
            )
    need = L.segment_size(capacity, ring_size, n)
    if size < need:
        raise BadSegment(
            f"segment is truncated: {size} bytes, expected at least {need} for capacity "
            f"{capacity}, ring size {ring_size} and {n} field(s)"
        )
    incarnation = u64(L.OFF_INCARNATION)
    if incarnation == 0:
        raise BadSegment("damaged header: incarnation is 0, expected a non-zero random id")
    return Geometry(capacity, ring_size, incarnation, u64(L.OFF_CREATED_NS), need, fields)


def read_schema(table: bytes, count: int) -> Tuple[Tuple[str, int], ...]:
    """The schema in a copy of the schema table, ``count`` fields; BadSegment naming the entry
    and what is wrong with it. The table is written before ``version``, never after, so a
    reader copies it once."""
    if not 1 <= count <= L.MAX_FIELDS:
        raise BadSegment(f"damaged header: field_count is {count}, expected 1 to {L.MAX_FIELDS}")
    fields = []
    for k in range(L.MAX_FIELDS):
        entry = table[k * L.SCHEMA_ENTRY_SIZE : (k + 1) * L.SCHEMA_ENTRY_SIZE]
        if k >= count:
            if any(entry):
                raise BadSegment(f"damaged schema: entry {k} is not zero, but the schema has {count} field(s)")
            continue
        raw = entry[L.FIELD_NAME : L.FIELD_NAME + L.FIELD_NAME_FIELD]
        name = raw.split(b"\0", 1)[0]
        kind = int.from_bytes(entry[L.FIELD_TYPE : L.FIELD_TYPE + 4], "little")
        reserved = int.from_bytes(entry[L.FIELD_RESERVED : L.FIELD_RESERVED + 4], "little")
        if any(raw[len(name) :]) or reserved:
            raise BadSegment(f"damaged schema: entry {k} has bytes after its name's NUL or in its reserved word")
        try:
            text = name.decode("ascii")
            L.check_field_name(text)
        except (UnicodeDecodeError, ValueError):
            raise BadSegment(f"damaged schema: entry {k} has name {raw!r}, not a valid field name") from None
        if kind not in L.TYPE_NAMES:
            raise BadSegment(f"damaged schema: field {text!r} has type {kind}, expected 1 (f64) or 2 (i64)")
        fields.append((text, kind))
    try:
        return L.check_fields(fields)
    except ValueError as exc:
        raise BadSegment(f"damaged schema: {exc}") from None
