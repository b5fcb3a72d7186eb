"""What every platform's segment module shares: feed names, and pinning a mapping's address.

The address of a mapping comes from ``PyObject_GetBuffer``, which works on a read-only mmap
(``ctypes.c_char.from_buffer`` refuses one) and pins the mapping until released.
"""

from __future__ import annotations

import ctypes
import mmap
import re
from typing import Optional

from ._errors import FeedBusy, InvalidName, PricefeedError

#: A feed's segment is named PREFIX + feed name ("/" first where POSIX wants it). macOS allows
#: 31 bytes with the slash, so a feed name is at most NAME_MAX characters on every platform:
#: a name that works here works there.
PREFIX = "pf-"
NAME_MAX = 31 - 1 - len(PREFIX)
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")

#: How long a would-be publisher retries a lock held for a moment by ``pricefeed rm`` or by a
#: subscriber's liveness probe.
LOCK_RETRY_SECONDS = 0.05


def check_name(feed: str) -> str:
    if not isinstance(feed, str) or not feed or len(feed) > NAME_MAX or not NAME_RE.match(feed):
        raise InvalidName(
            f"feed name must be 1 to {NAME_MAX} characters of A-Z a-z 0-9 . _ - not starting with . or -: feed={feed!r}"
        )
    return feed


def segment_name(feed: str) -> str:
    """The POSIX shared-memory name of a feed; Windows uses it, without the slash, as a file name."""
    return "/" + PREFIX + check_name(feed)


def busy_error(feed: str, pid: Optional[int]) -> FeedBusy:
    """The refusal of a second publisher, naming the holder when the platform can."""
    who = f"pid {pid}" if pid else "another process"
    return FeedBusy(
        f"feed {feed!r} already has a publisher ({who}); a feed has one publisher at a time", holder_pid=pid or None
    )


def is_feed_entry(entry: str) -> bool:
    """Whether a directory entry (no slash) is a feed's segment."""
    return entry.startswith(PREFIX) and NAME_RE.match(entry[len(PREFIX) :]) is not None and len(entry) <= 30


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_GetBuffer = ctypes.pythonapi.PyObject_GetBuffer
_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_GetBuffer.restype = ctypes.c_int
_ReleaseBuffer = ctypes.pythonapi.PyBuffer_Release
_ReleaseBuffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_ReleaseBuffer.restype = None


class Pin:
    """Holds a buffer of a mapping: its address stays valid (and the mapping cannot be closed
    under it) until ``release()``."""

    __slots__ = ("_buf", "address")

    def __init__(self, mm: mmap.mmap) -> None:
        buf = _PyBuffer()
        if _GetBuffer(mm, ctypes.byref(buf), 0) != 0:  # pragma: no cover
            raise PricefeedError("could not take the address of the mapping")
        self._buf: _PyBuffer | None = buf
        self.address = int(buf.buf or 0)

    def release(self) -> None:
        if self._buf is not None:
            _ReleaseBuffer(ctypes.byref(self._buf))
            self._buf = None
