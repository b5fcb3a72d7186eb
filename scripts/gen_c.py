#!/usr/bin/env python3
"""Generate the two C files that are made, not written: the layout header and the single-file header.

    python3 scripts/gen_c.py          # rewrite both in place
    python3 scripts/gen_c.py --check  # exit 1, naming the stale file, if either is out of date

1. ``clients/c/core/pf_layout.h``: every integer constant of ``pricefeed/_protocol/layout.py``
   as a ``PF_`` #define (offsets as numbers, each with a comment naming its field), the
   static asserts, and the geometry functions. The layout module owns every offset; C only
   ever sees this copy of them, so the two cannot drift.
2. ``clients/c/pricefeed.h``: the header users copy, one self-contained file (as SQLite's
   amalgamation is). Its readable source is ``clients/c/src/pricefeed_api.h``, which
   ``#include``s the protocol core under ``clients/c/core/``; here every quoted ``#include``
   is replaced by the file it names, each file once. The Python accelerator
   (``pricefeed/_protocol/_speedups.c``) compiles the same core pieces, so the protocol's C
   code exists once.

tests/interop/test_interop.py runs ``--check``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
LAYOUT_PY = ROOT / "pricefeed" / "_protocol" / "layout.py"
LAYOUT_H = ROOT / "clients" / "c" / "core" / "pf_layout.h"
API_SOURCE = ROOT / "clients" / "c" / "src" / "pricefeed_api.h"
SINGLE_HEADER = ROOT / "clients" / "c" / "pricefeed.h"

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def load_layout() -> ModuleType:
    """layout.py on its own (it imports nothing of pricefeed), so that generating needs
    neither the package's dependencies nor an installed pricefeed."""
    spec = importlib.util.spec_from_file_location("_pricefeed_layout", LAYOUT_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-like machinery (NamedTuple) looks itself up here
    spec.loader.exec_module(module)
    return module


def c_number(value: int) -> str:
    if value < 0:
        raise ValueError(f"layout constants are unsigned: {value}")
    if value < 1 << 32:
        if value >= 4096 and value & (value - 1) == 0:
            return f"(1u << {value.bit_length() - 1})"
        return f"{value}u" if value < 4096 else f"0x{value:X}u"
    return f"UINT64_C(0x{value:016X})"


#: Groups of the generated file, in order: (comment, names). Names of layout.py that no group
#: lists are emitted at the end, so a constant added there is never left out here. The groups
#: of a block's fields are filled from ``field_notes()`` (see BLOCKS).
GROUPS: List[Tuple[str, List[str]]] = [
    (
        "The format and its limits.",
        [
            "LAYOUT_VERSION",
            "MAGIC",
            "CACHE_LINE",
            "SYMBOL_FIELD",
            "SYMBOL_MAX",
            "SLOT_VOID",
            "WAKE_WORDS",
            "MIN_CAPACITY",
            "MAX_CAPACITY",
            "DEFAULT_CAPACITY",
            "MIN_RING",
            "MAX_RING",
            "DEFAULT_RING",
        ],
    ),
    (
        "publisher_state packs, in one u64 written with one store: bits 0-31 the epoch of the\n"
        "   publisher that wrote it, bits 32-39 what that publisher did last (PF_PUBLISHER_HOLDS or\n"
        "   PF_PUBLISHER_CLOSED), bits 40-63 the number of clean handovers (layout.md, section 10).",
        [
            "STATE_EPOCH_BITS",
            "STATE_SHIFT",
            "STATE_BITS",
            "HANDOVERS_SHIFT",
            "HANDOVERS_BITS",
            "PUBLISHER_HOLDS",
            "PUBLISHER_CLOSED",
        ],
    ),
    (
        "The schema: 1 to PF_MAX_FIELDS fields, each a f64 or an i64 (PF_TYPE_*), fixed when the feed\n"
        "   is created. Every value is PF_VALUE_SIZE bytes; bit i of a changed mask is field i.",
        ["MAX_FIELDS", "FIELD_NAME_FIELD", "FIELD_NAME_MAX", "TYPE_F64", "TYPE_I64", "VALUE_SIZE"],
    ),
    (
        "The fixed blocks of a segment: header, schema table, wake table, symbol table. The slot table\n"
        "   and the change ring follow, where pf_slots_offset() and pf_ring_offset() say.",
        [
            "HEADER_SIZE",
            "SCHEMA_OFFSET",
            "SCHEMA_ENTRY_SIZE",
            "SCHEMA_SIZE",
            "WAKE_OFFSET",
            "WAKE_SIZE",
            "SYMBOLS_OFFSET",
        ],
    ),
    ("Header fields: byte offsets from the start of the segment.", []),  # filled from BLOCKS
    ("A schema entry (PF_SCHEMA_ENTRY_SIZE bytes; entry i at pf_schema_entry_offset(i)).", []),
    (
        "A slot: its own seqlock, pf_slot_size(fields) bytes (whole cache lines). Byte offsets inside\n"
        "   the slot; value i is at PF_SLOT_VALUES + PF_VALUE_SIZE * i.",
        [],
    ),
    (
        "A ring record: pf_record_size(fields) bytes; its seq word doubles as its lock. Byte offsets\n"
        "   inside the record; value i is at PF_REC_VALUES + PF_VALUE_SIZE * i.",
        [],
    ),
]

#: (index in GROUPS, prefix of the constants, name of the layout block, constants that end the
#: group): the groups whose names are the offsets of a block's fields.
BLOCKS: List[Tuple[int, str, str, List[str]]] = [
    (4, "OFF_", "HEADER", []),
    (5, "FIELD_", "SCHEMA_ENTRY", []),
    (6, "SLOT_", "SLOT", ["SLOT_VALUES"]),
    (7, "REC_", "RECORD", ["REC_VALUES"]),
]

#: Comments for the constants that are not a field of a block.
NOTES: Dict[str, str] = {
    "MAGIC": 'the bytes "PRCFEED\\0", read little-endian',
    "TYPE_F64": "a schema entry's type: IEEE 754 binary64, finite",
    "TYPE_I64": "a schema entry's type: two's complement, 64 bits",
    "SLOT_VALUES": "value[i] (f64 or i64, as schema entry i says) at this + 8 * i",
    "REC_VALUES": "value[i] (f64 or i64, as schema entry i says) at this + 8 * i",
}

FIELD_COMMENT = re.compile(r"\s+")


def field_notes(layout: ModuleType) -> Dict[str, str]:
    """name -> "field (type): meaning", for every offset constant that names a field: its value
    is the field's offset, and what follows the prefix begins the field's name (SLOT_TIME for
    time_ns), so a constant that merely equals an offset (FIELD_NAME_FIELD) is not taken."""
    notes: Dict[str, str] = {}
    for _, prefix, block_name, _ in BLOCKS:
        block = getattr(layout, block_name)
        for name, value in vars(layout).items():
            if not name.startswith(prefix) or type(value) is not int:
                continue
            rest = name[len(prefix) :]
            matches = [f for f in block.fields if f.offset == value and f.name.lstrip("_").upper().startswith(rest)]
            if len(matches) == 1:
                f = matches[0]
                meaning = FIELD_COMMENT.sub(" ", f.meaning or "Zero.").replace("*/", "* /")
                notes[name] = f"{f.name} ({f.ctype}): {meaning}"
    return notes


def layout_header() -> str:
    layout = load_layout()
    consts = layout.constants()
    notes = field_notes(layout)
    groups = [(c, list(n)) for c, n in GROUPS]
    for index, prefix, _, tail in BLOCKS:
        names = sorted((n for n in notes if n.startswith(prefix)), key=lambda n: consts[n])
        groups[index][1].extend(names + tail)
    done: Set[str] = set()
    lines: List[str] = []
    for comment, names in groups:
        lines.append(f"\n/* {comment} */")
        for name in names:
            lines.append(define(name, consts[name], notes.get(name, NOTES.get(name))))
            done.add(name)
    rest = sorted(set(consts) - done)
    if rest:
        lines.append("\n/* Other constants of layout.py. */")
        lines.extend(define(name, consts[name], None) for name in rest)
    return LAYOUT_TEMPLATE.replace("@DEFINES@", "\n".join(lines).lstrip("\n")).replace("@DIGEST@", layout.digest())


def define(name: str, value: int, note: Optional[str]) -> str:
    text = f"#define PF_{name} {c_number(value)}"
    return f"{text} /* {note} */" if note else text


LAYOUT_TEMPLATE = """\
/*
 * pf_layout.h: the binary layout of a pricefeed segment (docs/layout.md), for C and C++.
 *
 * GENERATED by scripts/gen_c.py from pricefeed/_protocol/layout.py, which owns every offset:
 * do not edit; change layout.py and run `python3 scripts/gen_c.py`. Names are layout.py's
 * with a PF_ prefix. No I/O and no platform code: this file compiles anywhere.
 */
#ifndef PF_LAYOUT_H
#define PF_LAYOUT_H

#include <stdint.h>

#ifdef __cplusplus
#define PF_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define PF_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

@DEFINES@

/* layout.py's digest() of the constants above: a build compares it with the Python side's. */
#define PF_LAYOUT_DIGEST "@DIGEST@"

PF_STATIC_ASSERT(PF_HEADER_SIZE == 4u * PF_CACHE_LINE, "the header is four cache lines");
PF_STATIC_ASSERT(PF_OFF_HEAD_SEQ == 1u * PF_CACHE_LINE, "head_seq opens line 1");
PF_STATIC_ASSERT(PF_OFF_FUTEX == 2u * PF_CACHE_LINE, "futex opens line 2");
PF_STATIC_ASSERT(PF_OFF_CLOSED == 3u * PF_CACHE_LINE, "closed opens line 3");
PF_STATIC_ASSERT(PF_OFF_PUBLISHER_STATE % 8u == 0, "publisher_state is naturally aligned");
PF_STATIC_ASSERT(PF_OFF_SCHEMA_OFFSET % 8u == 0 && PF_OFF_SYMBOLS_OFFSET % 8u == 0, "the offsets are aligned u64s");
PF_STATIC_ASSERT(PF_SCHEMA_OFFSET == PF_HEADER_SIZE, "the schema table follows the header");
PF_STATIC_ASSERT(PF_SCHEMA_SIZE == PF_MAX_FIELDS * PF_SCHEMA_ENTRY_SIZE, "the schema table has an entry per field");
PF_STATIC_ASSERT(PF_WAKE_OFFSET == PF_SCHEMA_OFFSET + PF_SCHEMA_SIZE, "the wake table follows the schema table");
PF_STATIC_ASSERT(PF_SYMBOLS_OFFSET == PF_WAKE_OFFSET + PF_WAKE_SIZE, "the symbol table follows the wake table");
PF_STATIC_ASSERT(PF_SCHEMA_SIZE % PF_CACHE_LINE == 0 && PF_WAKE_SIZE % PF_CACHE_LINE == 0,
                 "the wake and symbol tables start on a cache line");
PF_STATIC_ASSERT((PF_WAKE_WORDS & (PF_WAKE_WORDS - 1u)) == 0, "the wake table has a power of two words");
PF_STATIC_ASSERT(PF_FIELD_TYPE % 4u == 0, "a schema entry's type is an aligned u32");
PF_STATIC_ASSERT(PF_FIELD_NAME_MAX + 1u == PF_FIELD_NAME_FIELD, "a field name always ends in a NUL");
PF_STATIC_ASSERT(PF_MAX_FIELDS <= 32u, "a changed mask (u32) has a bit per field");
PF_STATIC_ASSERT(PF_VALUE_SIZE == 8u, "every value is one 8-byte word");
PF_STATIC_ASSERT(PF_SLOT_LOCK == 0 && PF_REC_SEQ == 0, "the lock opens its slot, seq its record");
PF_STATIC_ASSERT(PF_SLOT_VALUES % 8u == 0 && PF_REC_VALUES % 8u == 0, "the values are aligned 8-byte words");
PF_STATIC_ASSERT(PF_SLOT_CHANGED % 4u == 0 && PF_REC_SLOT % 4u == 0 && PF_REC_CHANGED % 4u == 0,
                 "the u32 words of a slot and a record are aligned");
PF_STATIC_ASSERT(PF_SLOT_VALUES + 4u * PF_VALUE_SIZE <= PF_CACHE_LINE, "a slot of up to four fields is one cache line");
PF_STATIC_ASSERT(PF_REC_VALUES + PF_VALUE_SIZE <= PF_CACHE_LINE / 2u, "a record of one field is half a cache line");
PF_STATIC_ASSERT(PF_CACHE_LINE % PF_SYMBOL_FIELD == 0, "symbols never straddle a line");
PF_STATIC_ASSERT(PF_SYMBOL_MAX + 1u == PF_SYMBOL_FIELD, "a symbol always ends in a NUL");
PF_STATIC_ASSERT(sizeof(double) == 8, "f64 fields are IEEE 754 binary64");

/* The geometry of a feed of `fields` fields (1 to PF_MAX_FIELDS), as layout.py computes it. */
static inline uint64_t pf__to_line(uint64_t size) {
    return (size + PF_CACHE_LINE - 1u) / PF_CACHE_LINE * PF_CACHE_LINE;
}
/* Bytes per slot: whole cache lines. */
static inline uint64_t pf_slot_size(uint32_t fields) {
    return pf__to_line((uint64_t)PF_SLOT_VALUES + (uint64_t)PF_VALUE_SIZE * fields);
}
/* Bytes per ring record: half a cache line while that holds it, else whole lines. */
static inline uint64_t pf_record_size(uint32_t fields) {
    uint64_t size = (uint64_t)PF_REC_VALUES + (uint64_t)PF_VALUE_SIZE * fields;
    return size <= PF_CACHE_LINE / 2u ? (uint64_t)(PF_CACHE_LINE / 2u) : pf__to_line(size);
}
/* Where the slot table starts: after the symbol table, on a cache line. */
static inline uint64_t pf_slots_offset(uint32_t capacity) {
    return (uint64_t)PF_SYMBOLS_OFFSET + pf__to_line((uint64_t)capacity * PF_SYMBOL_FIELD);
}
static inline uint64_t pf_ring_offset(uint32_t capacity, uint32_t fields) {
    return pf_slots_offset(capacity) + (uint64_t)capacity * pf_slot_size(fields);
}
static inline uint64_t pf_segment_size(uint32_t capacity, uint32_t ring_size, uint32_t fields) {
    return pf_ring_offset(capacity, fields) + (uint64_t)ring_size * pf_record_size(fields);
}
static inline uint64_t pf_slot_offset(uint32_t index, uint32_t capacity, uint32_t fields) {
    return pf_slots_offset(capacity) + (uint64_t)index * pf_slot_size(fields);
}
static inline uint64_t pf_symbol_offset(uint32_t index) {
    return (uint64_t)PF_SYMBOLS_OFFSET + (uint64_t)index * PF_SYMBOL_FIELD;
}
static inline uint64_t pf_schema_entry_offset(uint32_t field) {
    return (uint64_t)PF_SCHEMA_OFFSET + (uint64_t)field * PF_SCHEMA_ENTRY_SIZE;
}
static inline uint32_t pf_wake_word_of(uint32_t slot) { return slot & (PF_WAKE_WORDS - 1u); }
static inline uint64_t pf_wake_offset(uint32_t word) { return (uint64_t)PF_WAKE_OFFSET + 4u * (uint64_t)word; }

#endif /* PF_LAYOUT_H */
"""


def amalgamate(path: Path, seen: Set[Path], texts: Dict[Path, str]) -> List[str]:
    """The lines of ``path`` with every quoted #include replaced by the file it names
    (relative to the including file), each file once. ``texts`` holds files not yet written."""
    out: List[str] = []
    text = texts[path] if path in texts else path.read_text(encoding="utf-8")
    for line in text.splitlines():
        m = INCLUDE.match(line)
        if m is None:
            out.append(line)
            continue
        target = (path.parent / m.group(1)).resolve()
        if target not in texts and not target.is_file():
            raise SystemExit(f'{path.relative_to(ROOT)}: #include "{m.group(1)}": no such file')
        if target in seen:
            continue
        seen.add(target)
        name = target.relative_to(ROOT / "clients" / "c")
        out.append(f"/* ======== {name} ======== */")
        out.extend(amalgamate(target, seen, texts))
        out.append(f"/* ======== end of {name} ======== */")
    return out


SINGLE_NOTICE = """\
/* pricefeed.h is GENERATED by scripts/gen_c.py from clients/c/src/pricefeed_api.h and the
   protocol core in clients/c/core/: edit those, then run `python3 scripts/gen_c.py`.
   It is one self-contained file on purpose: copy it into your project as it is. */
"""


def single_header(layout_text: str) -> str:
    # The layout is inlined as it will be written, so that one run makes both files agree.
    api = API_SOURCE.resolve()
    body = amalgamate(api, {api}, {LAYOUT_H.resolve(): layout_text})
    return SINGLE_NOTICE + "\n".join(body) + "\n"


def main(argv: List[str]) -> int:
    check = "--check" in argv
    unknown = [a for a in argv if a != "--check"]
    if unknown:
        print(f"usage: gen_c.py [--check]; unknown argument {unknown[0]!r}", file=sys.stderr)
        return 2
    layout_text = layout_header()
    wanted = {LAYOUT_H: layout_text, SINGLE_HEADER: single_header(layout_text)}
    stale = []
    for path, text in wanted.items():
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            stale.append(str(path.relative_to(ROOT)))
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    if check and stale:
        print(
            "out of date: " + ", ".join(stale) + " (they are generated from pricefeed/_protocol/layout.py and "
            "clients/c/src, clients/c/core); run: python3 scripts/gen_c.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
