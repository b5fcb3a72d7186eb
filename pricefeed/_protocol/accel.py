"""The C implementation: the reference classes with their hot paths bound to the C core.

``_speedups`` is built from ``_speedups.c``, thin bindings over the protocol's C core in
``clients/c/core/`` (the same code the published ``pricefeed.h`` is made of), when a C compiler
is at hand at install time; it is optional, and the build goes on without it. The classes here
are the ones of ``reader``, ``writer`` and ``follow`` with the methods that run on every change
bound, in their constructors, to the C core's: they behave the same, step for step (the test
suite runs both). PRICEFEED_PURE=1 leaves the C code unloaded.

Nothing here chooses which implementation runs: the package's ``__init__`` does, once.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, List, Optional, Tuple

from .._errors import BadSegment
from . import follow, reader, writer
from . import layout as L
from .header import Geometry

_speedups: Any
try:
    if os.environ.get("PRICEFEED_PURE"):
        raise ImportError("PRICEFEED_PURE is set")
    from . import _speedups  # type: ignore[attr-defined, no-redef]
except ImportError:
    _speedups = None

if _speedups is not None and getattr(_speedups, "LAYOUT_DIGEST", None) != L.digest():
    # Its offsets are compiled in: one built before layout.py changed would read the wrong bytes.
    warnings.warn(
        f"pricefeed's C accelerator ({_speedups.__file__}) was built from another layout than "
        f"pricefeed/_protocol/layout.py (digest {getattr(_speedups, 'LAYOUT_DIGEST', None)}, expected "
        f"{L.digest()}); running the pure-Python implementation. Rebuild it: pip install -e .",
        RuntimeWarning,
        stacklevel=2,
    )
    _speedups = None

_LINUX = sys.platform.startswith("linux")

#: True when the C core is built and may run in this process.
AVAILABLE: bool = _speedups is not None


def _bind(self: reader.FeedReader, buf: memoryview, geometry: Geometry, address: Optional[int], wake: bool) -> Any:
    if address is None:
        raise ValueError("the C implementation reads a feed at its address: address=None")
    types = bytes(kind for _, kind in geometry.fields)  # one byte per field: L.TYPE_F64 or L.TYPE_I64
    fast = _speedups.Feed(address, geometry.capacity, geometry.ring_size, types, reader.SPIN_TRIES, BadSegment, wake)
    self.spin = fast.spin  # type: ignore[method-assign]
    self.read_slot = fast.read_slot  # type: ignore[method-assign]
    self.read_slots = fast.read_slots  # type: ignore[method-assign]
    self.read_record = fast.read_record  # type: ignore[method-assign]
    self.read_quote = fast.read_quote  # type: ignore[method-assign]
    return fast


class FeedReader(reader.FeedReader):
    """``reader.FeedReader``, its slot, record and spin reads in C."""

    def __init__(self, buf: memoryview, geometry: Geometry, address: Optional[int] = None) -> None:
        super().__init__(buf, geometry)
        try:
            self._fast = _bind(self, buf, geometry, address, False)
        except BaseException:
            super().release()  # the views, or the caller's mapping cannot close
            raise
        if _LINUX:  # the follow loop's own sleep on the futex words, for a caller that must act first
            self.wait_head = self._fast.wait_head

    @property
    def woken(self) -> int:
        return int(self._fast.woken)

    def release(self) -> None:
        self._fast.close()  # before the mapping goes: it holds a bare pointer
        super().release()


class FeedWriter(writer.FeedWriter):
    """``writer.FeedWriter``, its commits (and reads) in C. With ``wake``, a commit makes the
    wake-up system call too (FUTEX_WAKE_OP): only for words that are kernel futexes here."""

    def __init__(self, buf: memoryview, geometry: Geometry, address: Optional[int] = None, wake: bool = False) -> None:
        super().__init__(buf, geometry)
        try:
            self._fast = fast = _bind(self, buf, geometry, address, wake)
        except BaseException:
            super().release()
            raise
        self.commit = fast.commit  # type: ignore[method-assign]
        self.commit_many = fast.commit_many  # type: ignore[method-assign]
        self.merge = _speedups.merge  # type: ignore[method-assign]
        self.commit_merge = fast.commit_merge  # type: ignore[method-assign]
        self.wakes = wake

    @property
    def woken(self) -> int:
        return int(self._fast.woken)

    def release(self) -> None:
        self._fast.close()
        super().release()


def Follow(
    reader: reader.FeedReader, names: List[str], known: int, interest: Optional[bytearray], quote: Any,
    words: Optional[Tuple[int, ...]], cursor: int, epoch: int, slice: float, spin: float, deadline: float,
    wait: follow.Wait, futex: bool = False, on: int = 0,
) -> Any:  # fmt: skip
    """``follow.Follow`` in C, over a reader of this implementation. With ``futex``, it sleeps
    on the wake words itself (they are kernel futex words here), else through ``wait``. It
    makes each quote as an instance of ``quote`` (the feed's Quote class) directly, as
    ``quote._build`` would."""
    fast = getattr(reader, "_fast", None)
    if fast is None:
        raise TypeError("the C Follow needs a reader of the C implementation")
    if not hasattr(quote, "_build"):  # as follow.Follow, which uses it: a schema's Quote class, not the base
        raise AttributeError(f"type object {getattr(quote, '__name__', quote)!r} has no attribute '_build'")
    return _speedups.Follow(
        fast, names, known, interest, quote, words, cursor, epoch, slice, spin, deadline, wait, futex, on
    )
