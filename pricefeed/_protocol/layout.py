"""The binary layout of a pricefeed segment, version 2: the one module that knows an offset.

Rules of this file:

Rule 1. Every offset is derived from the field before it (``_Block`` adds sizes up); no other
        module writes an offset, a size or a field count as a literal.
Rule 2. Every word that another process reads while it may change is naturally aligned, so a
        single load or store of it cannot tear, and no such word straddles a cache line.
Rule 3. Everything is little-endian and has the same size in 32-bit and 64-bit processes
        (fixed-width integers and float64 only; no pointers, no ``long``).
Rule 4. Words that the publisher writes on every change (the head sequence, the futex word)
        each sit on a cache line of their own, away from the words that never change.
Rule 5. ``docs/layout.md`` is checked against the tables here (``markdown_tables()``), so the
        spec and the code cannot drift apart.

The segment is four blocks, one after the other::

    0            256           768                 ring_offset(capacity)     segment_size(...)
    +------------+-------------+-------------------+--------------------------+
    | header     | wake table  | slot table        | change ring              |
    | (4 lines)  | 128 x u32   | capacity x 64     | ring_size x 32 bytes     |
    +------------+-------------+-------------------+--------------------------+

The wake table gives subscribers that follow a few symbols a futex word of their own to sleep
on: slot ``i`` belongs to word ``i & (WAKE_WORDS - 1)``, which the publisher bumps and wakes
for every change of such a slot (together with the header's ``futex`` word, in one system
call). So a subscriber is woken for the symbols it asked for, not for every change.

A slot (one cache line, its own seqlock)::

    0        8        16       24       32                               64
    +--------+--------+--------+--------+--------------------------------+
    | lock   | price  | time_ns| seq    | symbol (NUL-padded ASCII)      |
    +--------+--------+--------+--------+--------------------------------+

A ring record (half a cache line; its sequence word doubles as its lock)::

    0        8        12       16       24       32
    +--------+--------+--------+--------+--------+
    | seq    | slot   | flags  | price  | time_ns|
    +--------+--------+--------+--------+--------+
"""

from __future__ import annotations

import hashlib
from typing import Dict, Iterable, List, NamedTuple, Tuple

LAYOUT_VERSION = 2
MAGIC_BYTES = b"PRCFEED\x00"
MAGIC = int.from_bytes(MAGIC_BYTES, "little")
CACHE_LINE = 64

#: A symbol is 1 to SYMBOL_MAX printable ASCII characters, no space; the field is one byte
#: longer so that it always ends in a NUL a C reader can rely on.
SYMBOL_FIELD = 32
SYMBOL_MAX = SYMBOL_FIELD - 1

#: The ``slot`` of a ring record that stands for a change whose details were lost (a publisher
#: died between taking the sequence number and finishing the record). Readers count it as
#: missed. Reserved in version 1 so that repair never needs a layout change.
SLOT_VOID = 0xFFFFFFFF

#: Number of words in the wake table: a power of two. A subscriber waits on at most 127 of them
#: at once (futex_waitv takes 128 words, one kept for the header's); one that would need more
#: waits on the header's word instead.
WAKE_WORDS = 128

#: ``publisher_state`` packs three things into one u64, so that one load gives a consistent
#: view of them (the single writer stores the whole word at once)::
#:
#:     63                     40 39       32 31                        0
#:     +------------------------+-----------+--------------------------+
#:     | clean handovers (24)   | state (8) | epoch (32)               |
#:     +------------------------+-----------+--------------------------+
#:
#: ``epoch`` is the ``publisher_epoch`` of the publisher that wrote the word; ``state`` says
#: what that publisher did last (PUBLISHER_HOLDS, PUBLISHER_CLOSED); ``clean handovers``
#: counts, modulo 2**24, the takeovers that found their predecessor closed cleanly. A word
#: whose epoch is not the header's ``publisher_epoch`` describes an older publisher: the
#: current one does not write the word (a writer older than the word), or is writing it now.
STATE_EPOCH_BITS = 32
STATE_SHIFT = STATE_EPOCH_BITS
STATE_BITS = 8
HANDOVERS_SHIFT = STATE_SHIFT + STATE_BITS
HANDOVERS_BITS = 64 - HANDOVERS_SHIFT
#: The publisher of ``epoch`` took the feed and has not closed it cleanly (if no process holds
#: the lock now, it died, or exited without closing).
PUBLISHER_HOLDS = 1
#: The publisher of ``epoch`` closed the feed cleanly: it gave the role up with every change
#: it began complete.
PUBLISHER_CLOSED = 2

MIN_CAPACITY = 1
MAX_CAPACITY = 1 << 20
DEFAULT_CAPACITY = 1024
MIN_RING = 2
MAX_RING = 1 << 24
DEFAULT_RING = 1 << 16

_TYPES = {"u32": 4, "u64": 8, "f64": 8, f"char[{SYMBOL_FIELD}]": SYMBOL_FIELD}


class Field(NamedTuple):
    name: str
    offset: int
    ctype: str
    size: int
    meaning: str


class _Block:
    """A run of fields whose offsets are the running sum of the sizes before them."""

    def __init__(self, title: str, spec: Iterable[Tuple[str, str, str]]) -> None:
        self.title = title
        self.fields: List[Field] = []
        offset = 0
        for name, ctype, meaning in spec:
            if ctype.startswith("pad"):
                size = int(ctype[3:])
                ctype = f"u8[{size}]"
            else:
                size = _TYPES[ctype]
                if ctype != f"char[{SYMBOL_FIELD}]":
                    # Rule 2: naturally aligned, hence never across a cache line.
                    assert offset % size == 0, (title, name, offset)
            self.fields.append(Field(name, offset, ctype, size, meaning))
            offset += size
        self.size = offset
        self.by_name: Dict[str, Field] = {f.name: f for f in self.fields}

    def __getitem__(self, name: str) -> int:
        return self.by_name[name].offset


HEADER = _Block(
    "Header",
    [
        ("magic", "u64", 'The bytes "PRCFEED\\0": identifies a pricefeed segment.'),
        ("version", "u32", "Layout version (2). 0 while the creator is initialising; written last."),
        ("header_size", "u32", "Size of this header in bytes (256)."),
        ("incarnation", "u64", "Random non-zero id chosen when the segment is created."),
        ("capacity", "u32", "Number of slots in the slot table."),
        ("ring_size", "u32", "Number of records in the change ring: a power of two."),
        ("slot_size", "u32", "Size of one slot in bytes (64)."),
        ("record_size", "u32", "Size of one ring record in bytes (32)."),
        ("created_ns", "u64", "Creation time, nanoseconds since the Unix epoch."),
        ("slots_offset", "u64", "Offset of the slot table from the start of the segment."),
        ("ring_offset", "u64", "Offset of the change ring from the start of the segment."),
        # Line 1: written on every change.
        ("head_seq", "u64", "Sequence of the newest change whose ring record is complete."),
        ("_pad1", "pad56", ""),
        # Line 2: written on every wake-up; the one word subscribers wait on.
        ("futex", "u32", "Wake word for every change: bumped (mod 2^31) before every wake-up."),
        ("_pad2", "pad60", ""),
        # Line 3: written rarely.
        ("closed", "u32", "1 once the feed has been ended for good; 0 before."),
        ("slot_count", "u32", "Number of slots in use; slots [0, slot_count) hold a symbol."),
        ("publisher_pid", "u32", "Pid of the newest publisher (informational; the lock decides)."),
        ("publisher_epoch", "u32", "Number of times a publisher has taken the feed."),
        ("wake_words", "u32", "Number of words in the wake table (128)."),
        ("_pad3", "pad4", "Zero; keeps the next field naturally aligned."),
        (
            "publisher_state",
            "u64",
            "How the newest publisher stands: its epoch, whether it holds the feed or closed it "
            "cleanly, and a count of clean handovers (section 10). 0 from older writers.",
        ),
        ("_pad4", "pad32", ""),
    ],
)

SLOT = _Block(
    "Slot",
    [
        ("lock", "u64", "Seqlock: odd while the publisher writes the slot, even otherwise."),
        ("price", "f64", "The symbol's current price (IEEE 754 binary64, finite)."),
        ("time_ns", "u64", "Publish time of the current price, ns since the Unix epoch."),
        ("seq", "u64", "Sequence of the change that set the current price."),
        ("symbol", f"char[{SYMBOL_FIELD}]", "The symbol, NUL-padded; written once, before slot_count grows."),
    ],
)

RECORD = _Block(
    "Ring record",
    [
        ("seq", "u64", "Sequence of the change held; 0 while the record is being written."),
        ("slot", "u32", "Index of the symbol's slot, or 0xFFFFFFFF for a change that was lost."),
        ("flags", "u32", "Reserved, 0."),
        ("price", "f64", "The new price."),
        ("time_ns", "u64", "Publish time of the change, ns since the Unix epoch."),
    ],
)

HEADER_SIZE = HEADER.size
WAKE_OFFSET = HEADER_SIZE
WAKE_SIZE = WAKE_WORDS * 4
SLOT_SIZE = SLOT.size
RECORD_SIZE = RECORD.size
SLOTS_OFFSET = WAKE_OFFSET + WAKE_SIZE
assert HEADER_SIZE % CACHE_LINE == 0 and SLOT_SIZE == CACHE_LINE and WAKE_SIZE % CACHE_LINE == 0
assert CACHE_LINE % RECORD_SIZE == 0

# Byte offsets in the header.
OFF_MAGIC = HEADER["magic"]
OFF_VERSION = HEADER["version"]
OFF_HEADER_SIZE = HEADER["header_size"]
OFF_INCARNATION = HEADER["incarnation"]
OFF_CAPACITY = HEADER["capacity"]
OFF_RING_SIZE = HEADER["ring_size"]
OFF_SLOT_SIZE = HEADER["slot_size"]
OFF_RECORD_SIZE = HEADER["record_size"]
OFF_CREATED_NS = HEADER["created_ns"]
OFF_SLOTS_OFFSET = HEADER["slots_offset"]
OFF_RING_OFFSET = HEADER["ring_offset"]
OFF_HEAD_SEQ = HEADER["head_seq"]
OFF_FUTEX = HEADER["futex"]
OFF_CLOSED = HEADER["closed"]
OFF_SLOT_COUNT = HEADER["slot_count"]
OFF_PUBLISHER_PID = HEADER["publisher_pid"]
OFF_PUBLISHER_EPOCH = HEADER["publisher_epoch"]
OFF_WAKE_WORDS = HEADER["wake_words"]
OFF_PUBLISHER_STATE = HEADER["publisher_state"]

# Byte offsets inside a slot and inside a ring record.
SLOT_LOCK = SLOT["lock"]
SLOT_PRICE = SLOT["price"]
SLOT_TIME = SLOT["time_ns"]
SLOT_SEQ = SLOT["seq"]
SLOT_SYMBOL = SLOT["symbol"]
REC_SEQ = RECORD["seq"]
REC_SLOT = RECORD["slot"]
REC_FLAGS = RECORD["flags"]
REC_PRICE = RECORD["price"]
REC_TIME = RECORD["time_ns"]


class PublisherState(NamedTuple):
    epoch: int
    state: int
    handovers: int


def pack_publisher_state(epoch: int, state: int, handovers: int) -> int:
    """The ``publisher_state`` word for these three parts (each reduced to its width)."""
    return (
        (epoch & ((1 << STATE_EPOCH_BITS) - 1))
        | (state & ((1 << STATE_BITS) - 1)) << STATE_SHIFT
        | (handovers & ((1 << HANDOVERS_BITS) - 1)) << HANDOVERS_SHIFT
    )


def unpack_publisher_state(word: int) -> PublisherState:
    return PublisherState(
        word & ((1 << STATE_EPOCH_BITS) - 1),
        (word >> STATE_SHIFT) & ((1 << STATE_BITS) - 1),
        (word >> HANDOVERS_SHIFT) & ((1 << HANDOVERS_BITS) - 1),
    )


def ring_offset(capacity: int) -> int:
    return SLOTS_OFFSET + capacity * SLOT_SIZE


def segment_size(capacity: int, ring_size: int) -> int:
    return ring_offset(capacity) + ring_size * RECORD_SIZE


def slot_offset(index: int) -> int:
    return SLOTS_OFFSET + index * SLOT_SIZE


def wake_word_of(slot: int) -> int:
    """Index in the wake table of the word that announces changes of ``slot``."""
    return slot & (WAKE_WORDS - 1)


def wake_offset(word: int) -> int:
    return WAKE_OFFSET + 4 * word


def check_geometry(capacity: int, ring_size: int) -> None:
    """Raise ValueError naming the rule and the value when a feed cannot have this shape."""
    if not isinstance(capacity, int) or not MIN_CAPACITY <= capacity <= MAX_CAPACITY:
        raise ValueError(
            f"capacity must be a whole number from {MIN_CAPACITY} to {MAX_CAPACITY}: capacity={capacity!r}"
        )
    if not isinstance(ring_size, int) or not MIN_RING <= ring_size <= MAX_RING or ring_size & (ring_size - 1):
        raise ValueError(f"ring size must be a power of 2 from {MIN_RING} to {MAX_RING}: ring_size={ring_size!r}")


def markdown_tables() -> str:
    """The field tables of docs/layout.md, generated from the blocks above (Rule 5)."""
    out: List[str] = []
    for block in (HEADER, SLOT, RECORD):
        out.append(f"#### {block.title} ({block.size} bytes)\n")
        out.append("| offset | size | type | field | meaning |")
        out.append("|---:|---:|---|---|---|")
        for f in block.fields:
            name = "(padding)" if f.name.startswith("_") else f"`{f.name}`"
            meaning = f.meaning or "Zero; keeps the next field on its own cache line."
            out.append(f"| {f.offset} | {f.size} | {f.ctype} | {name} | {meaning} |")
        out.append("")
        if block is HEADER:
            last = WAKE_WORDS - 1
            out.append(f"#### Wake table ({WAKE_SIZE} bytes, at offset {WAKE_OFFSET})\n")
            out.append("| offset in table | size | type | field | meaning |")
            out.append("|---:|---:|---|---|---|")
            meaning = f"Wake word of the slots whose index & {last} == i: bumped (mod 2^32) before their wake-ups."
            out.append(f"| 4 * i | 4 | u32 | `word[i]`, 0 <= i <= {last} | {meaning} |")
            out.append("")
    return "\n".join(out)


def constants() -> Dict[str, int]:
    """Every integer constant of this module, by name: what scripts/gen_c.py writes into the C
    core's pf_layout.h (with a PF_ prefix)."""
    return {k: v for k, v in globals().items() if k.isupper() and type(v) is int}


def digest() -> str:
    """A short fingerprint of ``constants()``. pf_layout.h carries the one it was generated
    with, so a C build made from another layout is noticed (see accel) instead of trusted."""
    text = ";".join(f"{k}={v}" for k, v in sorted(constants().items()))
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]
