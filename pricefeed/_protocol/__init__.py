"""The pricefeed protocol over any buffer: no files, no locks, no clocks, no waiting.

The modules, each owning one thing (docs/architecture.md has the map):

    layout     every offset, size and field of the segment (the one module that knows one)
    ordering   the CPU's memory order: fences where the CPU needs them
    header     creating a feed's header, and validating one
    reader     consistent copies of slots and ring records; the words anyone may read
    writer     the single writer's changes, takeover and clean close
    liveness   what a reader makes of the publisher words
    follow     following the changes: a pure step, and the loop around it
    accel      the same reader, writer and loop with their hot paths in the C core

The rules every implementation keeps (docs/protocol.md states them in full):

Rule 1 (slot seqlock). The writer makes ``lock`` odd, writes seq, time, changed and every
        field's value, then makes ``lock`` even again (+2 in all). A reader's copy is
        consistent (one change's record, whole) when it read the same even ``lock`` before and
        after copying the fields.
Rule 2 (ring record). The writer stores 0 in the record's ``seq``, writes the fields, then
        stores the change's sequence. A reader that wants change ``s`` copies the fields
        between two loads of ``seq``; unless both equal ``s`` the record was overwritten: the
        reader was lapped (``reader.lapped``).
Rule 3 (order of a change). Slot first, ring record second, ``head_seq`` third, then the
        slot's word in the wake table and the header's wake word, and the wake-up last (the
        caller's). So a change whose sequence is <= head has its record and its slot written,
        and a reader that loads a wake word before ``head_seq`` cannot miss a wake-up.
Rule 4 (new symbols). The symbol's bytes and its first value go into the slot before
        ``slot_count`` covers it, so a reader never sees a half-made slot.
Rule 5 (trust nothing). The reader checks every index and count it loads from the segment
        against the geometry it validated at open, and raises BadSegment instead of reading
        out of range.
Rule 6 (who publishes). A publisher that takes the feed stores ``publisher_state`` (its new
        epoch, "holds", the count of clean handovers) before ``publisher_epoch``; one that
        closes cleanly stores ``publisher_state`` ("closed") after its last change. A reader
        loads ``publisher_epoch`` before ``publisher_state`` (``FeedReader.publisher_view``),
        and decides with the pure functions of ``liveness`` what a change of them means.

Which implementation runs is chosen here, once: the C one where it is built, unless
PRICEFEED_PURE is set; the pure-Python reference otherwise. Roles ask ``implementation()``
when they open a feed, and build what they need from it.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from . import accel, follow, reader, writer


class Implementation(NamedTuple):
    """One implementation of the protocol: its reader, writer and follow loop."""

    name: str  # "c" or "python"
    Reader: Any  # (buf, geometry, address) -> reader.FeedReader
    Writer: Any  # (buf, geometry, address, wake) -> writer.FeedWriter
    Follow: Any  # the arguments of follow.Follow -> an iterator of quotes and codes


PYTHON = Implementation("python", reader.FeedReader, writer.FeedWriter, follow.Follow)
C: Optional[Implementation] = (
    Implementation("c", accel.FeedReader, accel.FeedWriter, accel.Follow) if accel.AVAILABLE else None
)

_chosen = C or PYTHON


def implementation() -> Implementation:
    """The implementation this process runs."""
    return _chosen


def use(name: str) -> Implementation:
    """Run ``name`` ("c" or "python") from now on, in this process: for tests that hold the
    two to the same behaviour. Feeds opened before keep the one they were opened with."""
    global _chosen
    found = {"python": PYTHON, "c": C}.get(name)
    if found is None:
        raise ValueError(f"no {name!r} implementation of the protocol here; expected 'python' or a built 'c'")
    _chosen = found
    return found
