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
#: lists are emitted at the end, so a constant added there is never left out here.
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
    ("The blocks of a segment: header, wake table, slot table, change ring.", []),  # filled below
    ("Header fields: byte offsets from the start of the segment.", []),
    ("A slot: one cache line, its own seqlock. Byte offsets inside the slot.", []),
    ("A ring record: half a cache line; its seq word doubles as its lock.", []),
]

BLOCK_NAMES = ["HEADER_SIZE", "WAKE_OFFSET", "WAKE_SIZE", "SLOTS_OFFSET", "SLOT_SIZE", "RECORD_SIZE"]

FIELD_COMMENT = re.compile(r"\s+")


def field_notes(layout: ModuleType) -> Dict[str, str]:
    """name -> "field (type): meaning", for every offset constant that names a field."""
    notes: Dict[str, str] = {}
    for prefix, block in (("OFF_", layout.HEADER), ("SLOT_", layout.SLOT), ("REC_", layout.RECORD)):
        for name, value in vars(layout).items():
            if not name.startswith(prefix) or name in BLOCK_NAMES or name == "SLOT_VOID":
                continue
            matches = [f for f in block.fields if f.offset == value and not f.name.startswith("_")]
            if len(matches) == 1:
                f = matches[0]
                meaning = FIELD_COMMENT.sub(" ", f.meaning).replace("*/", "* /")
                notes[name] = f"{f.name} ({f.ctype}): {meaning}"
    return notes


def layout_header() -> str:
    layout = load_layout()
    consts = layout.constants()
    notes = field_notes(layout)
    groups = [(c, list(n)) for c, n in GROUPS]
    groups[2][1].extend(n for n in BLOCK_NAMES if n not in ("SLOT_SIZE", "RECORD_SIZE"))
    for index, prefix in ((3, "OFF_"), (4, "SLOT_"), (5, "REC_")):
        names = sorted((n for n in notes if n.startswith(prefix)), key=lambda n: consts[n])
        groups[index][1].extend(names)
    groups[4][1].append("SLOT_SIZE")
    groups[5][1].append("RECORD_SIZE")
    done: Set[str] = set()
    lines: List[str] = []
    for comment, names in groups:
        lines.append(f"\n/* {comment} */")
        for name in names:
            lines.append(define(name, consts[name], notes.get(name)))
            done.add(name)
    rest = sorted(set(consts) - done)
    if rest:
        lines.append("\n/* Other constants of layout.py. */")
        lines.extend(define(name, consts[name], None) for name in rest)
    return LAYOUT_TEMPLATE.replace("@DEFINES@", "\n".join(lines).lstrip("\n")).replace("@DIGEST@", layout.digest())


def define(name: str, value: int, note: Optional[str]) -> str:
    text = f"#define PF_{name} {c_number(value)}"
    if name == "MAGIC":
        note = 'the bytes "PRCFEED\\0", read little-endian'
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
PF_STATIC_ASSERT(PF_WAKE_OFFSET == PF_HEADER_SIZE, "the wake table follows the header");
PF_STATIC_ASSERT(PF_SLOTS_OFFSET == PF_WAKE_OFFSET + PF_WAKE_SIZE, "the slot table follows the wake table");
PF_STATIC_ASSERT(PF_WAKE_SIZE % PF_CACHE_LINE == 0, "the slot table starts on a cache line");
PF_STATIC_ASSERT((PF_WAKE_WORDS & (PF_WAKE_WORDS - 1u)) == 0, "the wake table has a power of two words");
PF_STATIC_ASSERT(PF_SLOT_SIZE == PF_CACHE_LINE, "a slot is one cache line");
PF_STATIC_ASSERT(PF_CACHE_LINE % PF_RECORD_SIZE == 0, "records never straddle a line");
PF_STATIC_ASSERT(PF_SYMBOL_MAX + 1u == PF_SYMBOL_FIELD, "a symbol always ends in a NUL");
PF_STATIC_ASSERT(sizeof(double) == 8, "prices are IEEE 754 binary64");

static inline uint64_t pf_ring_offset(uint32_t capacity) {
    return (uint64_t)PF_SLOTS_OFFSET + (uint64_t)capacity * PF_SLOT_SIZE;
}
static inline uint64_t pf_segment_size(uint32_t capacity, uint32_t ring_size) {
    return pf_ring_offset(capacity) + (uint64_t)ring_size * PF_RECORD_SIZE;
}
static inline uint64_t pf_slot_offset(uint32_t index) {
    return (uint64_t)PF_SLOTS_OFFSET + (uint64_t)index * PF_SLOT_SIZE;
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
