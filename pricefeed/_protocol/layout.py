"""The binary layout of a pricefeed segment, version 3: the one module that knows an offset.

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

A feed has a schema, fixed when it is created: 1 to MAX_FIELDS named fields, each a ``f64``
or an ``i64`` (the default: one ``f64`` named ``price``). The sizes of a slot and of a ring
record follow from the number of fields; everything else is fixed.

The segment is six blocks, one after the other::

    0         256          768         1280            slots_offset       ring_offset
    +---------+------------+-----------+---------------+------------------+---------------------+
    | header  | schema     | wake      | symbol table  | slot table       | change ring         |
    | 4 lines | 16 x 32    | 128 x u32 | capacity x 32 | capacity x       | ring_size x         |
    |         |            |           | (to a line)   |   slot_size      |   record_size       |
    +---------+------------+-----------+---------------+------------------+---------------------+

The wake table gives subscribers that follow a few symbols a futex word of their own to sleep
on: slot ``i`` belongs to word ``i & (WAKE_WORDS - 1)``, which the publisher bumps and wakes
for every change of such a slot (together with the header's ``futex`` word, in one system
call). So a subscriber is woken for the symbols it asked for, not for every change.

A slot (its own seqlock; ``slot_size`` = 32 + 8 x fields, rounded up to a cache line)::

    0        8        16       24       28       32             32 + 8 x fields
    +--------+--------+--------+--------+--------+---------------+
    | lock   | seq    | time_ns| changed| (zero) | value[0] ...  |
    +--------+--------+--------+--------+--------+---------------+

A ring record (its sequence word doubles as its lock; ``record_size`` = 24 + 8 x fields, 32
for one field, else rounded up to a cache line)::

    0        8        12       16       24             24 + 8 x fields
    +--------+--------+--------+--------+---------------+
    | seq    | slot   | changed| time_ns| value[0] ...  |
    +--------+--------+--------+--------+---------------+
"""

from __future__ import annotations

import hashlib
from typing import Dict, Iterable, List, NamedTuple, Tuple

LAYOUT_VERSION = 3
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

#: A schema has 1 to MAX_FIELDS fields; the schema table always has MAX_FIELDS entries.
MAX_FIELDS = 16
#: A field name is 1 to FIELD_NAME_MAX characters: a letter, then letters, digits and "_"
#: (an identifier in C, Python, Rust and the shell); the entry's name field is one byte longer,
#: so it always ends in a NUL.
FIELD_NAME_FIELD = 24
FIELD_NAME_MAX = FIELD_NAME_FIELD - 1
#: Field types, as stored in a schema entry.
TYPE_F64 = 1
TYPE_I64 = 2
#: Size of every field value in a slot or a record: a f64 or an i64.
VALUE_SIZE = 8
#: The values an i64 field holds (a range, not an int: no C constant is made of it).
I64_RANGE = range(-(1 << 63), 1 << 63)

MIN_CAPACITY = 1
MAX_CAPACITY = 1 << 20
DEFAULT_CAPACITY = 1024
MIN_RING = 2
MAX_RING = 1 << 24
DEFAULT_RING = 1 << 16

_TYPES = {"u32": 4, "u64": 8, "f64": 8}


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
            elif ctype.startswith("char["):
                size = int(ctype[5:-1])  # bytes written once, before anyone may read them
            else:
                size = _TYPES[ctype]
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
        ("version", "u32", "Layout version (3). 0 while the creator is initialising; written last."),
        ("header_size", "u32", "Size of this header in bytes (256)."),
        ("incarnation", "u64", "Random non-zero id chosen when the segment is created."),
        ("capacity", "u32", "Number of slots in the slot table."),
        ("ring_size", "u32", "Number of records in the change ring: a power of two."),
        ("slot_size", "u32", "Size of one slot in bytes: 32 + 8 x field_count, rounded up to 64."),
        (
            "record_size",
            "u32",
            "Size of one ring record in bytes: 24 + 8 x field_count; 32 for one field, else rounded up to 64.",
        ),
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
        ("field_count", "u32", "Number of fields in the schema: 1 to 16."),
        ("_pad5", "pad4", "Zero; keeps the next field naturally aligned."),
        ("schema_offset", "u64", "Offset of the schema table from the start of the segment (256)."),
        ("symbols_offset", "u64", "Offset of the symbol table from the start of the segment (1280)."),
        ("_pad4", "pad8", "Zero."),
    ],
)

SCHEMA_ENTRY = _Block(
    "Schema entry",
    [
        (
            "name",
            f"char[{FIELD_NAME_FIELD}]",
            "The field's name, NUL-padded: a letter, then letters, digits or _ (1 to 23 bytes).",
        ),
        ("type", "u32", "1: f64 (IEEE 754 binary64, finite); 2: i64 (two's complement)."),
        ("_reserved", "pad4", "Zero."),
    ],
)

SLOT = _Block(
    "Slot",
    [
        ("lock", "u64", "Seqlock: odd while the publisher writes the slot, even otherwise."),
        ("seq", "u64", "Sequence of the change that set the current values."),
        ("time_ns", "u64", "Publish time of that change, ns since the Unix epoch."),
        ("changed", "u32", "Which fields that change changed: bit i for field i."),
        ("_reserved", "pad4", "Zero."),
    ],
)

RECORD = _Block(
    "Ring record",
    [
        ("seq", "u64", "Sequence of the change held; 0 while the record is being written."),
        ("slot", "u32", "Index of the symbol's slot, or 0xFFFFFFFF for a change that was lost."),
        ("changed", "u32", "Which fields the change changed: bit i for field i (0 for a lost change)."),
        ("time_ns", "u64", "Publish time of the change, ns since the Unix epoch."),
    ],
)

HEADER_SIZE = HEADER.size
SCHEMA_ENTRY_SIZE = SCHEMA_ENTRY.size
SCHEMA_OFFSET = HEADER_SIZE
SCHEMA_SIZE = MAX_FIELDS * SCHEMA_ENTRY_SIZE
WAKE_OFFSET = SCHEMA_OFFSET + SCHEMA_SIZE
WAKE_SIZE = WAKE_WORDS * 4
SYMBOLS_OFFSET = WAKE_OFFSET + WAKE_SIZE
#: The fixed part of a slot and of a record; the field values follow it, 8 bytes each.
SLOT_VALUES = SLOT.size
REC_VALUES = RECORD.size
assert HEADER_SIZE % CACHE_LINE == 0 and SCHEMA_SIZE % CACHE_LINE == 0 and WAKE_SIZE % CACHE_LINE == 0
assert SLOT_VALUES % VALUE_SIZE == 0 and REC_VALUES % VALUE_SIZE == 0 and CACHE_LINE % SYMBOL_FIELD == 0

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
OFF_FIELD_COUNT = HEADER["field_count"]
OFF_SCHEMA_OFFSET = HEADER["schema_offset"]
OFF_SYMBOLS_OFFSET = HEADER["symbols_offset"]

# Byte offsets inside a schema entry, a slot and a ring record.
FIELD_NAME = SCHEMA_ENTRY["name"]
FIELD_TYPE = SCHEMA_ENTRY["type"]
FIELD_RESERVED = SCHEMA_ENTRY["_reserved"]
SLOT_LOCK = SLOT["lock"]
SLOT_SEQ = SLOT["seq"]
SLOT_TIME = SLOT["time_ns"]
SLOT_CHANGED = SLOT["changed"]
SLOT_RESERVED = SLOT["_reserved"]
REC_SEQ = RECORD["seq"]
REC_SLOT = RECORD["slot"]
REC_CHANGED = RECORD["changed"]
REC_TIME = RECORD["time_ns"]

#: The names of the field types, by their number in a schema entry.
TYPE_NAMES = {TYPE_F64: "f64", TYPE_I64: "i64"}
#: The default schema: one f64 named price.
DEFAULT_FIELDS: Tuple[Tuple[str, int], ...] = (("price", TYPE_F64),)


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


def _to_line(size: int) -> int:
    return -(-size // CACHE_LINE) * CACHE_LINE


def slot_size(fields: int) -> int:
    """Bytes per slot for a schema of ``fields`` fields: whole cache lines."""
    return _to_line(SLOT_VALUES + VALUE_SIZE * fields)


def record_size(fields: int) -> int:
    """Bytes per ring record: 32 (half a line) while that holds it, else whole cache lines;
    either way no record straddles a line it does not need."""
    size = REC_VALUES + VALUE_SIZE * fields
    return CACHE_LINE // 2 if size <= CACHE_LINE // 2 else _to_line(size)


def slots_offset(capacity: int) -> int:
    """Where the slot table starts: after the symbol table, on a cache line."""
    return SYMBOLS_OFFSET + _to_line(capacity * SYMBOL_FIELD)


def ring_offset(capacity: int, fields: int = 1) -> int:
    return slots_offset(capacity) + capacity * slot_size(fields)


def segment_size(capacity: int, ring_size: int, fields: int = 1) -> int:
    return ring_offset(capacity, fields) + ring_size * record_size(fields)


def slot_offset(index: int, capacity: int, fields: int = 1) -> int:
    return slots_offset(capacity) + index * slot_size(fields)


def symbol_offset(index: int) -> int:
    return SYMBOLS_OFFSET + index * SYMBOL_FIELD


def schema_entry_offset(field: int) -> int:
    return SCHEMA_OFFSET + field * SCHEMA_ENTRY_SIZE


def wake_word_of(slot: int) -> int:
    """Index in the wake table of the word that announces changes of ``slot``."""
    return slot & (WAKE_WORDS - 1)


def wake_offset(word: int) -> int:
    return WAKE_OFFSET + 4 * word


#: Names a field may not have, in any case: the attributes every Quote has besides its fields,
#: and "event", which tells an event from a quote in JSON output.
RESERVED_NAMES = frozenset({"symbol", "seq", "time_ns", "changed", "changed_mask", "fields", "schema", "event"})


def check_field_name(name: object) -> str:
    """The name, or ValueError stating the rule (a letter, then letters, digits or _)."""
    if (
        isinstance(name, str)
        and name.isascii()
        and 1 <= len(name) <= FIELD_NAME_MAX
        and name[0].isalpha()
        and all(c.isalnum() or c == "_" for c in name)
    ):
        if name.lower() in RESERVED_NAMES:
            raise ValueError(
                f"field name {name!r} is taken by every quote; choose another than "
                f"{', '.join(sorted(RESERVED_NAMES))} (in any case)"
            )
        return name
    raise ValueError(
        f"a field name is 1 to {FIELD_NAME_MAX} characters: an ASCII letter, then letters, digits or _: got {name!r}"
    )


def check_fields(fields: Iterable[Tuple[str, int]]) -> Tuple[Tuple[str, int], ...]:
    """A schema as (name, type) pairs, or ValueError saying which rule it breaks: 1 to
    MAX_FIELDS fields, valid names, distinct even ignoring case (a name is also an environment
    variable's), types TYPE_F64 or TYPE_I64."""
    out = tuple(fields)
    if not 1 <= len(out) <= MAX_FIELDS:
        raise ValueError(f"a schema has 1 to {MAX_FIELDS} fields: got {len(out)}")
    seen: Dict[str, str] = {}
    for name, kind in out:
        check_field_name(name)
        if kind not in TYPE_NAMES:
            raise ValueError(f"field {name!r} has type {kind!r}; expected f64 or i64")
        if name.lower() in seen:
            raise ValueError(f"fields {seen[name.lower()]!r} and {name!r} have the same name (ignoring case)")
        seen[name.lower()] = name
    return out


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
    for block in (HEADER, SCHEMA_ENTRY, SLOT, RECORD):  # in the order of the segment
        out.append(f"#### {block.title} ({block.size} bytes)\n")
        out.append("| offset | size | type | field | meaning |")
        out.append("|---:|---:|---|---|---|")
        for f in block.fields:
            name = "(padding)" if f.name.startswith("_") else f"`{f.name}`"
            meaning = f.meaning or "Zero; keeps the next field on its own cache line."
            out.append(f"| {f.offset} | {f.size} | {f.ctype} | {name} | {meaning} |")
        if block is SLOT or block is RECORD:
            at = block.size
            meaning = "Value of field i: f64 or i64, as the schema's entry i says."
            out.append(f"| {at} + 8 * i | 8 | f64 or i64 | `value[i]`, 0 <= i < field_count | {meaning} |")
        out.append("")
        if block is SCHEMA_ENTRY:
            out.append(
                f"The schema table ({SCHEMA_SIZE} bytes, at offset {SCHEMA_OFFSET}) is {MAX_FIELDS} such entries; "
                "entry i describes field i for i < field_count, and the others are all zero.\n"
            )
            last = WAKE_WORDS - 1
            out.append(f"#### Wake table ({WAKE_SIZE} bytes, at offset {WAKE_OFFSET})\n")
            out.append("| offset in table | size | type | field | meaning |")
            out.append("|---:|---:|---|---|---|")
            meaning = f"Wake word of the slots whose index & {last} == i: bumped (mod 2^32) before their wake-ups."
            out.append(f"| 4 * i | 4 | u32 | `word[i]`, 0 <= i <= {last} | {meaning} |")
            out.append("")
            out.append(f"#### Symbol table (capacity x {SYMBOL_FIELD} bytes, at offset {SYMBOLS_OFFSET})\n")
            out.append("| offset in table | size | type | field | meaning |")
            out.append("|---:|---:|---|---|---|")
            meaning = "Symbol of slot i, NUL-padded printable ASCII; written once, before slot_count covers i."
            out.append(f"| {SYMBOL_FIELD} * i | {SYMBOL_FIELD} | char[{SYMBOL_FIELD}] | `symbol[i]` | {meaning} |")
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
