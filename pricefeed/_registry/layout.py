"""The binary layout of a feed's subscriber registry, version 1: the one module that knows an
offset of it (docs/observability.md has the spec, checked against these tables).

The registry is a small segment beside the feed (``pr-<feed>``), separate from the price data
so that subscribers, which write their entry there, still map the prices read-only. It is a
header and ``slots`` entries of ``SLOT_SIZE`` bytes; every word is a little-endian u64,
naturally aligned, so a single store of it cannot tear::

    0         64                      64 + SLOT_SIZE           64 + slots x SLOT_SIZE
    +---------+-----------------------+-----------------------+-- ... --+
    | header  | entry 0               | entry 1               |         |
    +---------+-----------------------+-----------------------+-- ... --+

An entry belongs to whoever holds the write lock on its bytes (an open-file-description lock,
``registry``). It has two parts. The identity (lines 0 and 1) is written when a subscriber
claims the entry, bracketed by ``gen``: odd while it is being written, even when stable, so a
reader that finds the same even ``gen`` and identity twice has a consistent one. The activity
(line 2) is written by the entry's subscriber alone, one word at a time, whenever it changes;
a reader takes each word as it finds it.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

VERSION = 1
MAGIC_BYTES = b"PFREGIS\x00"
MAGIC = int.from_bytes(MAGIC_BYTES, "little")
PREFIX = "pr-"
#: Entries in a registry this version creates; a reader accepts from 1 to MAX_SLOTS.
SLOTS = 1024
MAX_SLOTS = 4096
SLOT_SIZE = 256
HEADER_SIZE = 64
LABEL_MAX = 64

#: (name, offset, meaning). Offsets are in bytes; every field is a u64 unless said otherwise.
HEADER: List[Tuple[str, int, str]] = [
    ("magic", 0, 'the bytes "PFREGIS\\0"'),
    ("version", 8, "this layout's version (1)"),
    ("slot_size", 16, "bytes per entry (256)"),
    ("slots", 24, "number of entries"),
    ("incarnation", 32, "the feed incarnation this registry belongs to"),
    ("created_ns", 40, "when the registry was created (ns since the epoch)"),
]
ENTRY: List[Tuple[str, int, str]] = [
    ("gen", 0, "claim generation: odd while the identity is being written, even when stable"),
    ("pid", 8, "the subscriber's process id; 0: the entry is free"),
    ("start", 16, "the process's start time as the system counts it (Linux: /proc/PID/stat field 22)"),
    ("uid", 24, "the user id it runs as"),
    ("registered_ns", 32, "when it registered (ns since the epoch)"),
    ("flags", 40, "bit 0 conflate, bit 1 some symbols only, bit 2 asyncio"),
    ("label_len", 48, "bytes of label used (0 to 64)"),
    ("label", 64, "an optional name, UTF-8, 64 bytes"),
    ("state", 128, "0 idle, 1 waiting, 2 working"),
    ("seq", 136, "the last change it has dealt with (delivered, or passed over as not asked for)"),
    ("delivered", 144, "changes given to it"),
    ("gaps", 152, "gaps reported to it"),
    ("missed", 160, "changes those gaps missed"),
    ("state_ns", 168, "when it entered its state (ns since the epoch)"),
]

H: Dict[str, int] = {name: off for name, off, _ in HEADER}
E: Dict[str, int] = {name: off for name, off, _ in ENTRY}
#: Word indices within an entry (its offset / 8), for memoryview.cast("Q") access.
W: Dict[str, int] = {name: off // 8 for name, off in E.items() if name != "label"}

FLAG_CONFLATE, FLAG_FILTERED, FLAG_ASYNC = 1, 2, 4


def size(slots: int) -> int:
    return HEADER_SIZE + slots * SLOT_SIZE


def entry_offset(slot: int) -> int:
    return HEADER_SIZE + slot * SLOT_SIZE


def markdown_tables() -> str:
    """The spec's tables, for docs/observability.md (checked there by a test)."""
    out = ["| header field | offset | meaning |", "|---|---|---|"]
    out += [f"| `{n}` | {o} | {m} |" for n, o, m in HEADER]
    out += ["", "| entry field | offset | meaning |", "|---|---|---|"]
    out += [f"| `{n}` | {o} | {m} |" for n, o, m in ENTRY]
    return "\n".join(out)
