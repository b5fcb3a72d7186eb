"""Which implementation of the hot paths runs here: the C accelerator, or pure Python.

``pricefeed._speedups`` is built from _protocol/_speedups.c when a C compiler is at hand at install time
(it is optional: the build goes on without it). It does what ``FeedWriter.commit`` /
``commit_many`` and ``FeedReader.read_slot`` / ``read_slots`` / ``read_record`` do, step for
step, for a fraction of the cost. Set PRICEFEED_PURE=1 to run the pure-Python paths anyway;
the test suite runs both.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .._errors import BadSegment
from . import layout as L

_speedups: Any
try:
    if os.environ.get("PRICEFEED_PURE"):
        raise ImportError("PRICEFEED_PURE is set")
    from . import _speedups  # type: ignore[attr-defined, no-redef]
except ImportError:
    _speedups = None

#: True when the C accelerator runs the hot paths in this process.
ACCELERATED = _speedups is not None


def fast_feed(address: int, capacity: int, ring_size: int, spin_tries: int, wake: bool) -> Optional[Any]:
    """A C view of the feed mapped at ``address`` (None without the accelerator). With
    ``wake``, its commit() and commit_many() also wake the words they bump (futex only)."""
    if _speedups is None:
        return None
    layout = (
        L.SLOTS_OFFSET, L.SLOT_SIZE, L.ring_offset(capacity), L.RECORD_SIZE, L.OFF_HEAD_SEQ, L.OFF_FUTEX,
        L.WAKE_OFFSET, L.WAKE_WORDS, L.SLOT_LOCK, L.SLOT_PRICE, L.SLOT_TIME, L.SLOT_SEQ,
        L.REC_SEQ, L.REC_SLOT, L.REC_PRICE, L.REC_TIME, L.OFF_SLOT_COUNT, L.OFF_CLOSED, L.OFF_PUBLISHER_EPOCH,
    )  # fmt: skip
    return _speedups.Feed(address, capacity, ring_size, layout, spin_tries, BadSegment, wake)
