"""The recording file: its bytes, written and read back as untrusted input (docs/recording.md).

A recording is a header, then entries, appended one after the other and never rewritten::

    header   magic "PFRECORD", version, the feed's name, incarnation, creation time, schema, CRC
    entry    u16 n | body (n bytes: u8 kind, then the kind's fields) | u16 n | u32 CRC32
    entry    ...

Rules of this file:

Rule 1. Every length read from a file is checked against its bounds before it is used: no
        entry is longer than MAX_BODY, no header longer than the largest schema makes it.
Rule 2. An entry is valid when both copies of its length agree, its CRC32 matches, and its
        body is exactly what its kind says (a change: the schema's values, a finite float in
        every f64 field, a symbol of the feed's rules, a sequence above the one before).
Rule 3. The valid part of a file is its header and the longest run of valid entries after it;
        what follows is its tail. A tail is torn (what a writer killed mid-write, or a machine
        that lost power, leaves) when no valid entry starts in it and it is shorter than the
        largest entry or is zero bytes only. Readers ignore a torn tail, and a recorder cuts it
        off before appending. Any other tail is damage: readers refuse the file, naming where.
Rule 4. Only the magic and the version are read from a file of another version.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, NamedTuple, Optional, Set, Tuple, Type, Union

from .._errors import InvalidGeometry, InvalidInput, PricefeedError
from .._protocol import layout as L
from .._segment.common import NAME_MAX, check_name
from .._values import Fields, Quote, quote_type

__all__ = [
    "MAGIC",
    "VERSION",
    "Header",
    "GapEntry",
    "PublisherGoneEntry",
    "PublisherRestartedEntry",
    "StartEntry",
    "EndedEntry",
    "Entry",
    "Encoder",
    "Recording",
    "Summary",
    "encode_header",
    "decode_header",
    "locate_end",
]

MAGIC = b"PFRECORD"
VERSION = 1

# -- the header ----------------------------------------------------------------------------------
#: magic, version, header_size, incarnation, created_ns, started_ns, name, field_count, reserved
_HEAD = struct.Struct("<8sIIQQQ32sII")
#: A schema entry: the field's name (NUL-padded), its type, zero.
_FIELD = struct.Struct("<24sII")
_CRC = struct.Struct("<I")
NAME_FIELD = 32
FIELD_NAME_FIELD = 24


def header_size(field_count: int) -> int:
    """The size of a header, its CRC included: 84 + 32 per field."""
    return _HEAD.size + _FIELD.size * field_count + _CRC.size


#: The most a header can be (16 fields).
MAX_HEADER = header_size(L.MAX_FIELDS)

# -- entries -------------------------------------------------------------------------------------
KIND_CHANGE = 1
KIND_GAP = 2
KIND_PUBLISHER_GONE = 3
KIND_PUBLISHER_RESTARTED = 4
KIND_START = 5
KIND_ENDED = 6
KIND_NAMES = {
    KIND_CHANGE: "change",
    KIND_GAP: "gap",
    KIND_PUBLISHER_GONE: "publisher_gone",
    KIND_PUBLISHER_RESTARTED: "publisher_restarted",
    KIND_START: "start",
    KIND_ENDED: "ended",
}
#: The longest body any version-1 entry may declare; a longer length is damage (Rule 1).
MAX_BODY = 4096
#: Bytes of an entry around its body: the length before, the length and the CRC after.
OVERHEAD = 8
MAX_ENTRY = MAX_BODY + OVERHEAD
_LEN = struct.Struct("<H")
_TRAILER = struct.Struct("<HI")  # the length again, the CRC
#: The bodies of the events (kind first), by kind.
_EVENTS = {
    KIND_GAP: struct.Struct("<BQQQQ"),  # time_ns, missed, first_seq, last_seq
    KIND_PUBLISHER_GONE: struct.Struct("<BQQIB"),  # time_ns, head_seq, pid, clean
    KIND_PUBLISHER_RESTARTED: struct.Struct("<BQQIQ"),  # time_ns, head_seq, pid, epoch
    KIND_START: struct.Struct("<BQQI"),  # time_ns, after_seq, pid
    KIND_ENDED: struct.Struct("<BQQ"),  # time_ns, head_seq
}
#: A change's body before its values: kind, symbol length.
CHANGE_FIXED = 2
#: A change's body after its values: time_ns, seq, changed.
CHANGE_TAIL = 18
U32 = (1 << 32) - 1


class Header(NamedTuple):
    """What a recording's header says: the feed recorded, which incarnation of it (the feed's
    ``status().incarnation``), when that feed was created and when the recording began (ns since
    the epoch), and the feed's schema."""

    feed: str
    incarnation: int
    created_ns: int
    started_ns: int
    fields: Fields
    version: int = VERSION

    @property
    def size(self) -> int:
        return header_size(len(self.fields))


class GapEntry(NamedTuple):
    """The recorder fell more than the feed's ring behind (or resumed after the ring had moved
    on): changes first_seq..last_seq, ``missed`` of them, are not in the file. The latest value
    of each symbol that changed in that range follows, as changes with their own sequences."""

    time_ns: int
    missed: int
    first_seq: int
    last_seq: int


class PublisherGoneEntry(NamedTuple):
    """The feed's publisher went away (``pid``, 0 if unknown), cleanly or not, at ``head_seq``."""

    time_ns: int
    head_seq: int
    pid: int
    clean: bool


class PublisherRestartedEntry(NamedTuple):
    """A new publisher (``pid``) took the feed over after one that did not close it cleanly."""

    time_ns: int
    head_seq: int
    pid: int
    epoch: int


class StartEntry(NamedTuple):
    """A recorder (``pid``) began appending here, following the feed after change ``after_seq``."""

    time_ns: int
    after_seq: int
    pid: int


class EndedEntry(NamedTuple):
    """The feed was ended for good at ``head_seq``; every change before it is above."""

    time_ns: int
    head_seq: int


Entry = Union[Quote, GapEntry, PublisherGoneEntry, PublisherRestartedEntry, StartEntry, EndedEntry]
_EVENT_TYPES: Dict[int, Type[Any]] = {
    KIND_GAP: GapEntry,
    KIND_PUBLISHER_GONE: PublisherGoneEntry,
    KIND_PUBLISHER_RESTARTED: PublisherRestartedEntry,
    KIND_START: StartEntry,
    KIND_ENDED: EndedEntry,
}


def _named(path: str) -> str:
    return f"recording {path!r}"


def _not_recording(path: str, what: str) -> InvalidInput:
    return InvalidInput(f"{_named(path)} is not a pricefeed recording: {what}")


# -- the header ----------------------------------------------------------------------------------
def encode_header(header: Header) -> bytes:
    """The header's bytes, its CRC last."""
    name = header.feed.encode("ascii")
    parts = [
        _HEAD.pack(
            MAGIC,
            VERSION,
            header.size,
            header.incarnation,
            header.created_ns,
            header.started_ns,
            name,
            len(header.fields),
            0,
        )
    ]
    parts += [_FIELD.pack(field.encode("ascii"), kind, 0) for field, kind in header.fields]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def _cstring(raw: bytes) -> Optional[str]:
    """The text of a NUL-padded field: ASCII up to the first NUL, and nothing but NULs after."""
    text, _, pad = raw.partition(b"\0")
    if pad.strip(b"\0") or not text.isascii():
        return None
    return text.decode("ascii")


def decode_header(data: bytes, path: str = "?") -> Header:
    """The header at the start of ``data`` (at least MAX_HEADER bytes, or the whole file if it
    is shorter): InvalidInput naming what is wrong with it."""
    if not data:
        raise _not_recording(path, "it is empty")
    if data[:8] != MAGIC:
        if len(data) < 8 and MAGIC.startswith(data):
            raise InvalidInput(f"{_named(path)} is cut short: {len(data)} bytes, less than its header")
        raise _not_recording(path, f"it does not start with {MAGIC.decode()} (it starts {data[:8]!r})")
    if len(data) < 12:
        raise InvalidInput(f"{_named(path)} is cut short: {len(data)} bytes, less than its header")
    (version,) = struct.unpack_from("<I", data, 8)
    if version != VERSION:
        raise InvalidInput(
            f"{_named(path)} has format version {version}; this pricefeed reads version {VERSION} only "
            "(a newer pricefeed wrote it, or it is damaged)"
        )
    if len(data) < _HEAD.size:
        raise InvalidInput(f"{_named(path)} is cut short: {len(data)} bytes, less than its header")
    _, _, size, incarnation, created_ns, started_ns, raw_name, count, reserved = _HEAD.unpack_from(data)
    if not 1 <= count <= L.MAX_FIELDS or size != header_size(count):
        raise InvalidInput(
            f"{_named(path)} has a damaged header: {count} fields in {size} bytes "
            f"(1 to {L.MAX_FIELDS} fields, and {header_size(1)} + {_FIELD.size} bytes per field after the first)"
        )
    if len(data) < size:
        raise InvalidInput(f"{_named(path)} is cut short: {len(data)} bytes, less than its {size}-byte header")
    (crc,) = _CRC.unpack_from(data, size - _CRC.size)
    if zlib.crc32(data[: size - _CRC.size]) != crc:
        raise InvalidInput(f"{_named(path)} has a damaged header: its checksum does not match")
    name = _cstring(raw_name)
    try:
        if name is None or reserved:
            raise InvalidInput("")
        check_name(name)
    except InvalidInput:
        raise InvalidInput(
            f"{_named(path)} has a damaged header: the feed's name is not 1 to {NAME_MAX} characters "
            f"of A-Z a-z 0-9 . _ - ({raw_name.rstrip(bytes(1))!r})"
        ) from None
    fields = []
    for k in range(count):
        raw, kind, zero = _FIELD.unpack_from(data, _HEAD.size + k * _FIELD.size)
        field = _cstring(raw)
        if field is None or zero:
            raise InvalidInput(f"{_named(path)} has a damaged header: field {k + 1}'s name is {raw!r}")
        fields.append((field, kind))
    try:
        schema = L.check_fields(fields)
    except ValueError as exc:
        raise InvalidInput(f"{_named(path)} has a damaged header: its schema is not valid: {exc}") from None
    return Header(name, incarnation, created_ns, started_ns, schema)


# -- writing entries ---------------------------------------------------------------------------------
def entry(body: bytes) -> bytes:
    """An entry around ``body`` (its kind first): the length, the body, the length, the CRC."""
    n = len(body)
    if not 1 <= n <= MAX_BODY:
        raise ValueError(f"an entry's body is 1 to {MAX_BODY} bytes: got {n}")
    framed = _LEN.pack(n) + body + _LEN.pack(n)
    return framed + _CRC.pack(zlib.crc32(framed))


def _value_codes(fields: Fields) -> str:
    return "".join("d" if kind == L.TYPE_F64 else "q" for _, kind in fields)


class Encoder:
    """Entries of one schema. ``symbol()`` gives what the recorder's loop packs a change with:
    one precompiled struct per symbol length, the symbol's first bytes and its length folded
    into one integer, so a change is one ``pack`` and one ``crc32``."""

    def __init__(self, fields: Fields) -> None:
        self.fields = fields
        self._codes = _value_codes(fields)
        self._structs: Dict[int, Callable[..., bytes]] = {}

    def body_size(self, symbol_length: int) -> int:
        return CHANGE_FIXED + 8 * len(self.fields) + CHANGE_TAIL + symbol_length

    def symbol(self, symbol: str) -> Tuple[Callable[..., bytes], int, bytes, int]:
        """(pack, first, symbol bytes, n) such that ``pack(first, *quote[1:], symbol bytes, n)``
        is a change entry's bytes up to its CRC."""
        raw = symbol.encode("ascii")
        s = len(raw)
        pack = self._structs.get(s)
        if pack is None:
            # u32 first: the length n (u16), the kind (u8), the symbol's length (u8).
            pack = self._structs[s] = struct.Struct(f"<I{self._codes}QQH{s}sH").pack
        n = self.body_size(s)
        return pack, n | KIND_CHANGE << 16 | s << 24, raw, n

    def change(self, q: Quote) -> bytes:
        """The entry of change ``q`` (a quote of this schema)."""
        pack, first, raw, n = self.symbol(q[0])
        framed = pack(first, *q[1:], raw, n)
        return framed + _CRC.pack(zlib.crc32(framed))

    @staticmethod
    def gap(time_ns: int, missed: int, first_seq: int, last_seq: int) -> bytes:
        return entry(_EVENTS[KIND_GAP].pack(KIND_GAP, time_ns, missed, first_seq, last_seq))

    @staticmethod
    def publisher_gone(time_ns: int, head_seq: int, pid: Optional[int], clean: bool) -> bytes:
        return entry(_EVENTS[KIND_PUBLISHER_GONE].pack(KIND_PUBLISHER_GONE, time_ns, head_seq, _pid(pid), int(clean)))

    @staticmethod
    def publisher_restarted(time_ns: int, head_seq: int, pid: Optional[int], epoch: int) -> bytes:
        body = _EVENTS[KIND_PUBLISHER_RESTARTED].pack(KIND_PUBLISHER_RESTARTED, time_ns, head_seq, _pid(pid), epoch)
        return entry(body)

    @staticmethod
    def start(time_ns: int, after_seq: int, pid: int) -> bytes:
        return entry(_EVENTS[KIND_START].pack(KIND_START, time_ns, after_seq, _pid(pid)))

    @staticmethod
    def ended(time_ns: int, head_seq: int) -> bytes:
        return entry(_EVENTS[KIND_ENDED].pack(KIND_ENDED, time_ns, head_seq))


def _pid(pid: Optional[int]) -> int:
    return pid if pid is not None and 0 < pid <= U32 else 0


# -- reading entries ---------------------------------------------------------------------------------
class _Bad(Exception):
    """An entry that is not valid (Rule 2), and why."""


def framed_at(data: Union[bytes, bytearray, memoryview], off: int, limit: int) -> int:
    """The size of the entry at ``off`` if it is whole within ``limit`` and its framing holds
    (lengths in bounds and equal, CRC right), else 0: the check of Rule 3's "valid entry"."""
    if off + OVERHEAD + 1 > limit:
        return 0
    n: int = _LEN.unpack_from(data, off)[0]
    end = off + OVERHEAD + n
    if not 1 <= n <= MAX_BODY or end > limit:
        return 0
    again, crc = _TRAILER.unpack_from(data, end - 6)
    if again != n or zlib.crc32(data[off : end - 4]) != crc:
        return 0
    return end - off


class Decoder:
    """Entries of one schema from bytes, each checked (Rule 2); ``last_seq`` is the sequence of
    the last change decoded, which the next must exceed."""

    def __init__(self, fields: Fields, last_seq: int = 0) -> None:
        self.fields = fields
        self.quote = quote_type(fields)
        self.last_seq = last_seq
        self._codes = _value_codes(fields)
        self._floats = [k for k, (_, kind) in enumerate(fields) if kind == L.TYPE_F64]
        self._all = (1 << len(fields)) - 1
        self._fixed = CHANGE_FIXED + 8 * len(fields) + CHANGE_TAIL
        self._unpack: Dict[int, Callable[..., Tuple[Any, ...]]] = {}
        self._symbols: Dict[bytes, str] = {}
        #: Entries of a kind this version does not know, skipped.
        self.skipped = 0

    def decode(self, data: Union[bytes, memoryview], off: int, n: int) -> Optional[Entry]:
        """The entry whose body is data[off:off + n] (framing already checked), or None for a
        kind this version does not know; _Bad saying what is wrong with it."""
        kind = data[off]
        if kind == KIND_CHANGE:
            return self._change(data, off, n)
        st = _EVENTS.get(kind)
        if st is None:
            if kind == 0:
                raise _Bad("kind 0")
            self.skipped += 1
            return None
        if n != st.size:
            raise _Bad(f"a {KIND_NAMES[kind]} entry of {n} bytes, not {st.size}")
        values = st.unpack_from(data, off)[1:]
        if kind == KIND_GAP:
            _, missed, first, last = values
            if not 1 <= first <= last or not 1 <= missed <= last - first + 1:
                raise _Bad(f"a gap of {missed} changes from {first} to {last}")
        elif kind == KIND_PUBLISHER_GONE:
            if values[3] > 1:
                raise _Bad(f"a publisher_gone entry whose clean is {values[3]}")
            values = (*values[:3], bool(values[3]))
        event: Entry = _EVENT_TYPES[kind](*values)
        return event

    def _change(self, data: Union[bytes, memoryview], off: int, n: int) -> Quote:
        s = data[off + 1]
        if not 1 <= s <= L.SYMBOL_MAX or n != self._fixed + s:
            raise _Bad(f"a change of {n} bytes with a symbol of {s} (a change is {self._fixed} + the symbol's length)")
        unpack = self._unpack.get(s)
        if unpack is None:
            unpack = self._unpack[s] = struct.Struct(f"<{self._codes}QQH{s}s").unpack_from
        *rest, raw = unpack(data, off + CHANGE_FIXED)
        symbol = self._symbols.get(raw)
        if symbol is None:
            if not all(0x21 <= b <= 0x7E for b in raw):
                raise _Bad(f"a change whose symbol is {raw!r} (printable ASCII without spaces)")
            symbol = self._symbols[raw] = raw.decode("ascii")
        seq, changed = rest[-2], rest[-1]
        if seq <= self.last_seq:
            raise _Bad(f"change {seq} after change {self.last_seq} (sequences only grow)")
        if not 1 <= changed <= self._all:
            raise _Bad(f"change {seq} whose changed fields are {changed:#x}")
        for k in self._floats:
            v = rest[k]
            if v - v:  # NaN for NaN and the infinities, 0.0 for a finite float
                raise _Bad(f"change {seq} whose field {self.fields[k][0]!r} is {v!r}")
        self.last_seq = seq
        return tuple.__new__(self.quote, (symbol, *rest))


# -- files -----------------------------------------------------------------------------------------------
BLOCK = 1 << 20


def read_at(fd: int, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (fewer at the end of the file)."""
    if hasattr(os, "pread"):
        parts = []
        while size > 0:
            got = os.pread(fd, size, offset)
            if not got:
                break
            parts.append(got)
            offset += len(got)
            size -= len(got)
        return b"".join(parts)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows: no pread
    chunks = []
    while size > 0:
        got = os.read(fd, size)
        if not got:
            break
        chunks.append(got)
        size -= len(got)
    return b"".join(chunks)


def open_regular(path: str, flags: int) -> int:
    """A descriptor on the regular file at ``path`` (not a FIFO, a device or a directory: the
    open cannot block on a FIFO planted there); FileNotFoundError if there is none."""
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        if isinstance(exc, IsADirectoryError) or os.path.isdir(path):  # Windows: PermissionError
            raise InvalidInput(f"{_named(path)} is a directory") from None
        raise PricefeedError(f"{_named(path)} cannot be opened: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InvalidInput(f"{_named(path)} is a directory")
        if not stat.S_ISREG(mode):
            raise InvalidInput(f"{_named(path)} is not a regular file")
        if getattr(os, "O_NONBLOCK", 0):  # opened non-blocking only to be safe from a FIFO
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_header(fd: int, path: str) -> Header:
    try:
        return decode_header(read_at(fd, 0, MAX_HEADER), path)
    except OSError as exc:
        raise PricefeedError(f"{_named(path)} cannot be read: {exc.strerror or exc}") from None


class Stop(NamedTuple):
    """Where a forward reading stopped: the end of the valid part, and why ("" at the end of
    the file, else what was wrong with the entry there)."""

    offset: int
    reason: str


def _entries(
    fd: int, start: int, limit: int, decoder: Decoder, stop: List[Stop]
) -> Iterator[Tuple[int, Optional[Entry]]]:
    """(offset after, entry) for each valid entry from ``start`` up to ``limit``; appends to
    ``stop`` where and why it stopped."""
    data = b""
    view = memoryview(data)
    base = start  # the file offset of data[0]
    pos = start  # the next byte to read
    off = 0
    while True:
        if pos < limit and len(data) - off < MAX_ENTRY:
            more = read_at(fd, pos, min(BLOCK, limit - pos))
            if not more:
                limit = pos  # the file is shorter than it was
            pos += len(more)
            data = data[off:] + more
            view = memoryview(data)
            base += off
            off = 0
        size = len(data)
        if off == size:
            stop.append(Stop(base + off, ""))
            return
        if off + 2 > size:
            stop.append(Stop(base + off, "an entry cut short"))
            return
        (n,) = _LEN.unpack_from(data, off)
        end = off + OVERHEAD + n
        if not 1 <= n <= MAX_BODY:
            stop.append(Stop(base + off, f"an entry whose length is {n} (1 to {MAX_BODY})"))
            return
        if end > size:
            stop.append(Stop(base + off, "an entry cut short"))
            return
        again, crc = _TRAILER.unpack_from(data, end - 6)
        if again != n:
            stop.append(Stop(base + off, f"an entry whose lengths differ ({n} and {again})"))
            return
        if zlib.crc32(view[off : end - 4]) != crc:
            stop.append(Stop(base + off, "an entry whose checksum does not match"))
            return
        try:
            got = decoder.decode(data, off + 2, n)
        except _Bad as exc:
            stop.append(Stop(base + off, str(exc)))
            return
        off = end
        yield base + off, got


def tail_damage(fd: int, valid_end: int, size: int) -> str:
    """What makes the bytes from ``valid_end`` to ``size`` damage, or the empty string when they
    are a torn tail (Rule 3)."""
    if size <= valid_end:
        return ""
    if size - valid_end < MAX_ENTRY:
        data = read_at(fd, valid_end, size - valid_end)
        for off in range(1, len(data)):
            if framed_at(data, off, len(data)):
                return f"a valid entry starts {off} bytes after it"
        return ""
    pos = valid_end
    while pos < size:
        chunk = read_at(fd, pos, min(BLOCK, size - pos))
        if not chunk:
            break
        if chunk.strip(b"\0"):
            return f"{size - valid_end} bytes follow it, not all zero"
        pos += len(chunk)
    return ""


class Summary(NamedTuple):
    """What a full reading of a recording found."""

    header: Header
    #: The end of the valid part (Rule 3), and the file's size when it was read.
    end: int
    size: int
    changes: int
    #: Entries of each kind by name ("change", "gap", ...; "unknown" for skipped ones).
    kinds: Dict[str, int]
    symbols: int
    first_time_ns: Optional[int]
    last_time_ns: Optional[int]
    last_seq: int
    #: Every symbol the changes name.
    names: FrozenSet[str] = frozenset()

    @property
    def torn(self) -> int:
        """Bytes of torn tail ignored after the valid part."""
        return self.size - self.end


class Recording:
    """A recording opened for reading: its ``header``, ``entries()`` and ``scan()``.

    The file is read, never written; it may be growing (a recorder appending meanwhile): what
    is read is what was there when each block was read, and an entry being written reads as a
    torn tail."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd: Optional[int] = open_regular(path, os.O_RDONLY)
        except FileNotFoundError:
            raise InvalidInput(f"{_named(path)} does not exist") from None
        try:
            self.header = read_header(self._fd, path)
        except BaseException:
            self.close()
            raise
        #: After entries() ran to its end: the bytes of torn tail it ignored.
        self.torn = 0
        #: After entries() ran to its end: entries of kinds this version does not know, skipped.
        self.skipped = 0

    @property
    def fields(self) -> Fields:
        return self.header.fields

    def _descriptor(self) -> int:
        if self._fd is None:
            raise PricefeedError(f"{_named(self.path)} is closed")
        return self._fd

    def size(self) -> int:
        return os.fstat(self._descriptor()).st_size

    def entries(self, end: Optional[int] = None) -> Iterator[Entry]:
        """Every entry in order, up to ``end`` (default: the file's size now): changes as
        Quotes of the file's schema, events as the *Entry classes. A torn tail is ignored
        (``torn`` says how many bytes); damage raises InvalidInput naming the offset, after
        the entries before it."""
        fd = self._descriptor()
        size = self.size()
        limit = size if end is None else min(end, size)
        decoder = Decoder(self.fields)
        stop: List[Stop] = []
        try:
            for _, got in _entries(fd, self.header.size, limit, decoder, stop):
                if got is not None:
                    yield got
            where = stop[0]
            if where.reason:
                damage = tail_damage(fd, where.offset, limit)
                if damage:
                    raise self._damaged(where, damage)
            self.torn = limit - where.offset
            self.skipped = decoder.skipped
        except OSError as exc:
            raise PricefeedError(f"{_named(self.path)} cannot be read: {exc.strerror or exc}") from None

    def _damaged(self, where: Stop, damage: str) -> InvalidInput:
        return InvalidInput(
            f"{_named(self.path)} is damaged at byte {where.offset}: {where.reason}, and {damage}; "
            f"the {where.offset} bytes before are valid"
        )

    def changes(self, end: Optional[int] = None) -> Iterator[Quote]:
        """The changes alone, in order (see ``entries``)."""
        qt = quote_type(self.fields)
        return (e for e in self.entries(end) if type(e) is qt)

    def scan(self) -> Summary:
        """Read the whole file, checking every entry: what it holds, and where its valid part
        ends. InvalidInput if it is damaged (Rule 3)."""
        qt = quote_type(self.fields)
        size = self.size()
        kinds: Dict[str, int] = {}
        symbols: Set[str] = set()
        changes = 0
        first = last = None
        last_seq = 0
        decoder = Decoder(self.fields)
        stop: List[Stop] = []
        fd = self._descriptor()
        try:
            for _, got in _entries(fd, self.header.size, size, decoder, stop):
                if type(got) is qt:
                    changes += 1
                    symbols.add(got[0])
                    t = got[-3]
                    if first is None:
                        first = t
                    last = t
                    last_seq = got[-2]
                else:
                    name = "unknown" if got is None else KIND_NAMES[_KIND_OF[type(got)]]
                    kinds[name] = kinds.get(name, 0) + 1
            where = stop[0]
            if where.reason:
                damage = tail_damage(fd, where.offset, size)
                if damage:
                    raise self._damaged(where, damage)
        except OSError as exc:
            raise PricefeedError(f"{_named(self.path)} cannot be read: {exc.strerror or exc}") from None
        kinds["change"] = changes
        return Summary(
            self.header, where.offset, size, changes, kinds, len(symbols), first, last, last_seq, frozenset(symbols)
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_KIND_OF = {cls: kind for kind, cls in _EVENT_TYPES.items()}


def kind_of(entry: Entry) -> int:
    """The kind of an entry ``entries()`` gave."""
    return _KIND_OF.get(type(entry), KIND_CHANGE)


# -- the end, from the end -------------------------------------------------------------------------------
class End(NamedTuple):
    """Where a recorder appends: the end of the valid part, and the sequence of the last change
    before it (0 if none)."""

    offset: int
    last_seq: int


def locate_end(fd: int, header: Header, size: int, path: str = "?") -> End:
    """The end of the valid part and the last change's sequence, read from the end of the file
    when it can be (the last entries, whatever the file's length), else from the start. A torn
    tail is left for the caller to cut; damage raises InvalidInput (Rule 3)."""
    lo = header.size
    found = _end_from_the_end(fd, lo, size)
    if found is not None:
        seq = _last_seq_from(fd, lo, found, header.fields)
        if seq is not None:
            return End(found, seq)
    # Read from the start: the end was not where a writer stops (damage, or zeros a power loss
    # left), or an entry before it does not hold.
    decoder = Decoder(header.fields)
    stop: List[Stop] = []
    for _ in _entries(fd, lo, size, decoder, stop):
        pass
    where = stop[0]
    if where.reason:
        damage = tail_damage(fd, where.offset, size)
        if damage:
            raise InvalidInput(
                f"{_named(path)} is damaged at byte {where.offset}: {where.reason}, and {damage}; "
                f"nothing is appended to it (the {where.offset} bytes before are valid)"
            )
    return End(where.offset, decoder.last_seq)


def _end_from_the_end(fd: int, lo: int, size: int) -> Optional[int]:
    """The largest p within MAX_ENTRY of the file's end at which a valid entry ends (or the
    header, for a recording with no entry): with nothing valid after it, the bytes after p are
    then a torn tail. None when there is none."""
    if size <= lo:
        return lo if size == lo else None
    start = max(lo, size - 2 * MAX_ENTRY)
    data = read_at(fd, start, size - start)
    if len(data) != size - start:
        return None
    floor = max(lo, size - MAX_ENTRY + 1)
    for p in range(size, floor - 1, -1):
        if p == lo:
            return lo
        at = p - start
        if at < 6:
            break
        n, _ = _TRAILER.unpack_from(data, at - 6)
        begin = at - OVERHEAD - n
        if 1 <= n <= MAX_BODY and begin >= 0 and framed_at(data, begin, at) == at - begin:
            return p
    return None


def _last_seq_from(fd: int, lo: int, end: int, fields: Fields) -> Optional[int]:
    """The sequence of the last change before ``end``, walking entries back from it (each
    entry's trailing length leads to its start); None if an entry on the way does not hold."""
    decoder = Decoder(fields)
    while end > lo:
        if end - lo < OVERHEAD + 1:
            return None
        tail = read_at(fd, end - 6, 6)
        n, _ = _TRAILER.unpack_from(tail)
        begin = end - OVERHEAD - n
        if not 1 <= n <= MAX_BODY or begin < lo:
            return None
        data = read_at(fd, begin, end - begin)
        if framed_at(data, 0, len(data)) != len(data):
            return None
        if data[2] == KIND_CHANGE:
            try:
                q = decoder.decode(data, 2, n)
            except _Bad:
                return None
            assert q is not None
            return int(q[-2])
        end = begin
    return 0


# -- paths -------------------------------------------------------------------------------------------
def check_new_path(path: str) -> str:
    """A path a recording may be written at: its directory exists and it is not a directory;
    InvalidInput saying what is wrong."""
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise InvalidInput(f"{path!r}: its directory {folder!r} does not exist")
    if os.path.isdir(full):
        raise InvalidInput(f"{path!r} is a directory")
    return path


def check_existing_path(path: str) -> str:
    """A path a recording is read from: it exists and is not a directory."""
    if os.path.isdir(path):
        raise InvalidInput(f"{path!r} is a directory")
    if not os.path.lexists(path):
        raise InvalidInput(f"{path!r} does not exist")
    return path


def schema_mismatch(feed: str, has: Fields, recorded: Fields) -> InvalidGeometry:
    from .._values import format_fields

    return InvalidGeometry(
        f"feed {feed!r} has fields {format_fields(has)}, and the recording has {format_fields(recorded)}: "
        "a feed's fields are fixed; use another feed, or remove this one (pricefeed rm "
        f"{feed})"
    )
