"""Windows: a feed is a mapping of a real file, locked with a byte-range lock.

Why each mechanism (the failure it avoids):

* **A real file, not the paging file.** A named paging-file mapping vanishes when its last
  handle closes: a publisher restarting with no subscriber attached would find its feed gone,
  sequence numbers and all. A mapping of a file in ``feed_dir()`` outlives every process, as
  /dev/shm does on Linux (and, unlike it, a reboot too: the next publisher takes it over like
  any other). The file is opened with ``FILE_ATTRIBUTE_TEMPORARY``, which asks the cache
  manager to keep its pages in memory rather than write them back eagerly.
* **Every handle shares delete.** ``CreateFileW`` with ``FILE_SHARE_DELETE`` (Python's ``open``
  and ``os.open`` never ask for it), so ``pricefeed rm`` can take the name away while
  subscribers still map the file: it renames the file to a hidden tombstone, then deletes it.
  Windows refuses to delete a file that is still mapped, so a tombstone in use stays until its
  last mapping closes and is swept up by a later ``create``, ``rm`` or ``ls``. The name is free
  at once, which is what re-creating a feed needs.
* **The single-publisher lock is ``LockFileEx``** (exclusive, fail-immediately) on one byte far
  beyond the end of the file, where it can never overlap data anyone reads. Windows releases
  a dead process's locks itself, so there is never a stale lock to clean up. Subscribers ask
  whether a publisher is alive by trying a shared lock on the same byte, given back at once.
  Windows cannot name a lock's holder: the pid reported is the one the publisher wrote into
  the header (informational, as on every platform).
* ``mode`` is checked but not applied: a file in the per-user ``feed_dir()`` gets that
  directory's access rules. Share a feed between users with ``PRICEFEED_DIR`` set to a
  directory they may all use.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import msvcrt  # type: ignore[import-not-found,unused-ignore]
import os
import secrets
import stat
import struct
import sys
import time
from typing import List, Optional

from .._errors import (
    BadSegment,
    FeedExists,
    FeedNotFound,
    FeedPermissionError,
    PricefeedError,
)
from .._protocol import layout as L
from .common import LOCK_RETRY_SECONDS, PREFIX, Pin, busy_error, check_name, is_feed_entry

assert sys.platform == "win32"

#: Overrides where feeds live (every process of a feed must agree on it).
ENV_DIR = "PRICEFEED_DIR"
_TOMBSTONE = ".removed-"

_GENERIC_READ = 0x80000000
_GENERIC_WRITE = 0x40000000
_SHARE_ALL = 0x1 | 0x2 | 0x4  # FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
_CREATE_NEW = 1
_OPEN_EXISTING = 3
_FILE_ATTRIBUTE_TEMPORARY = 0x100
_LOCKFILE_FAIL_IMMEDIATELY = 0x1
_LOCKFILE_EXCLUSIVE_LOCK = 0x2
_ERROR_LOCK_VIOLATION = 33
_ERROR_IO_PENDING = 997
#: The locked byte: 2**40, far past any feed's end.
_LOCK_OFFSET = 1 << 40

_HANDLE = ctypes.c_void_p
_INVALID_HANDLE = ctypes.c_void_p(-1).value


class _Overlapped(ctypes.Structure):
    _fields_ = [
        ("Internal", ctypes.c_void_p),
        ("InternalHigh", ctypes.c_void_p),
        ("Offset", ctypes.c_uint32),
        ("OffsetHigh", ctypes.c_uint32),
        ("hEvent", _HANDLE),
    ]


_k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
_CreateFileW = _k32.CreateFileW
_CreateFileW.argtypes = [
    ctypes.c_wchar_p,
    ctypes.c_uint32,
    ctypes.c_uint32,
    ctypes.c_void_p,
    ctypes.c_uint32,
    ctypes.c_uint32,
    _HANDLE,
]
_CreateFileW.restype = _HANDLE
_LockFileEx = _k32.LockFileEx
_LockFileEx.argtypes = [_HANDLE, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p]
_LockFileEx.restype = ctypes.c_int
_UnlockFileEx = _k32.UnlockFileEx
_UnlockFileEx.argtypes = [_HANDLE, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p]
_UnlockFileEx.restype = ctypes.c_int


def feed_dir() -> str:
    """Where feed files live: ``%PRICEFEED_DIR%``, else ``%LOCALAPPDATA%\\pricefeed``."""
    found = os.environ.get(ENV_DIR)
    if found:
        return found
    base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    return os.path.join(base, "pricefeed")


def segment_path(feed: str) -> str:
    return os.path.join(feed_dir(), PREFIX + check_name(feed))


def list_feeds() -> List[str]:
    """Names of every feed in ``feed_dir()``."""
    try:
        entries = os.listdir(feed_dir())
    except OSError:
        return []
    _sweep()
    return sorted(e[len(PREFIX) :] for e in entries if is_feed_entry(e))


def _sweep() -> None:
    """Delete the tombstones of removed feeds whose last mapping has closed."""
    try:
        entries = os.listdir(feed_dir())
    except OSError:
        return
    for e in entries:
        if e.startswith(_TOMBSTONE):
            try:
                os.remove(os.path.join(feed_dir(), e))
            except OSError:
                pass  # still mapped somewhere


def _os_error(exc: OSError, feed: str, action: str) -> PricefeedError:
    if isinstance(exc, FileExistsError):
        return FeedExists(f"feed {feed!r} already exists")
    if isinstance(exc, FileNotFoundError):
        return FeedNotFound(f"no feed named {feed!r} on this machine")
    if isinstance(exc, PermissionError):
        return FeedPermissionError(f"permission denied to {action} feed {feed!r}: {exc}")
    if exc.errno == errno.ENOSPC:
        return PricefeedError(f"no room in {feed_dir()} to {action} feed {feed!r}: {exc}")
    return PricefeedError(f"cannot {action} feed {feed!r}: {exc}")


def _open_file(path: str, writable: bool, create: bool) -> int:
    """A C runtime descriptor for ``path`` whose handle shares read, write and delete."""
    access = _GENERIC_READ | (_GENERIC_WRITE if writable else 0)
    disposition = _CREATE_NEW if create else _OPEN_EXISTING
    handle = _CreateFileW(path, access, _SHARE_ALL, None, disposition, _FILE_ATTRIBUTE_TEMPORARY, None)
    if handle is None or handle == _INVALID_HANDLE:
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined,unused-ignore]
    flags = (os.O_RDWR if writable else os.O_RDONLY) | getattr(os, "O_BINARY", 0)
    try:
        return int(msvcrt.open_osfhandle(handle, flags))
    except BaseException:
        _k32.CloseHandle(_HANDLE(handle))
        raise


class Segment:
    """One open file and one mapping of a feed (the same interface as the POSIX module)."""

    def __init__(self, feed: str, fd: int, writable: bool) -> None:
        self.feed = feed
        self.writable = writable
        self.fd = fd
        st = os.fstat(fd)
        self.size = st.st_size
        self.inode = (st.st_dev, st.st_ino)
        # Who owns the file is not looked at here: the feeds live in the user's own
        # %LOCALAPPDATA% (docs/platforms.md), so check_trust has nothing to check.
        self.uid: Optional[int] = None
        self.mode: Optional[int] = None
        self._mm: Optional[mmap.mmap] = None
        self._pin: Optional[Pin] = None
        self.view: memoryview = memoryview(b"")
        self.address = 0
        self._locked = False

    def map(self, length: int) -> None:
        access = mmap.ACCESS_WRITE if self.writable else mmap.ACCESS_READ
        self._mm = mmap.mmap(self.fd, length, access=access)
        self._pin = Pin(self._mm)
        self.address = self._pin.address
        self.view = memoryview(self._mm)

    # -- creation and opening -----------------------------------------------------------------
    @classmethod
    def create(cls, feed: str, size: int, mode: int) -> Segment:
        path = segment_path(feed)
        try:
            os.makedirs(feed_dir(), exist_ok=True)
            _refuse_non_files(feed, path)
            fd = _open_file(path, writable=True, create=True)
        except OSError as exc:
            raise _os_error(exc, feed, "create") from None
        _sweep()
        try:
            os.ftruncate(fd, size)  # the file reads as zeros: an unfinished feed (Initialising)
            seg = cls(feed, fd, writable=True)
            seg.map(size)
            return seg
        except BaseException as exc:
            os.close(fd)
            _remove_path(path)
            if isinstance(exc, OSError):
                raise _os_error(exc, feed, "create") from None
            raise

    @classmethod
    def open(cls, feed: str, writable: bool) -> Segment:
        path = segment_path(feed)
        _refuse_non_files(feed, path)
        try:
            fd = _open_file(path, writable, create=False)
        except OSError as exc:
            raise _os_error(exc, feed, "open for writing" if writable else "open") from None
        return cls(feed, fd, writable)

    # -- the publisher lock -------------------------------------------------------------------
    def _lock(self, flags: int) -> bool:
        ov = _Overlapped(Offset=_LOCK_OFFSET & 0xFFFFFFFF, OffsetHigh=_LOCK_OFFSET >> 32)
        if _LockFileEx(msvcrt.get_osfhandle(self.fd), flags | _LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ctypes.byref(ov)):
            return True
        err = ctypes.get_last_error()
        if err in (_ERROR_LOCK_VIOLATION, _ERROR_IO_PENDING):
            return False
        raise ctypes.WinError(err)  # type: ignore[attr-defined,unused-ignore]

    def _unlock(self) -> None:
        ov = _Overlapped(Offset=_LOCK_OFFSET & 0xFFFFFFFF, OffsetHigh=_LOCK_OFFSET >> 32)
        _UnlockFileEx(msvcrt.get_osfhandle(self.fd), 0, 1, 0, ctypes.byref(ov))

    def try_lock(self) -> bool:
        """Take the publisher lock if nobody holds it (retried for LOCK_RETRY_SECONDS, since a
        liveness probe holds a shared lock for a moment)."""
        if self._locked:
            return True
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        while True:
            if self._lock(_LOCKFILE_EXCLUSIVE_LOCK):
                self._locked = True
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

    def lock_publisher(self) -> None:
        """Take the single-publisher lock or raise FeedBusy naming the holder."""
        if self.try_lock():
            return
        raise busy_error(self.feed, self.holder_pid())

    def held(self) -> bool:
        """Whether a publisher holds the lock, without naming it."""
        return self.holder_pid() is not None

    def holder_pid(self) -> Optional[int]:
        """None when nobody holds the publisher lock; otherwise the pid the publisher wrote in
        the header (0 if there is none yet)."""
        if self._locked:
            return os.getpid()
        if not self._lock(0):  # a shared lock is refused while a publisher holds its own
            return self._header_pid()
        self._unlock()
        return None

    def _header_pid(self) -> int:
        try:
            if self._mm is not None and len(self._mm) >= L.HEADER_SIZE:
                return int(struct.unpack_from("<I", self._mm, L.OFF_PUBLISHER_PID)[0])
            with open(segment_path(self.feed), "rb") as f:
                f.seek(L.OFF_PUBLISHER_PID)
                raw = f.read(4)
            return int(struct.unpack("<I", raw)[0]) if len(raw) == 4 else 0
        except OSError:
            return 0

    def still_linked(self) -> bool:
        """True while the feed's name still leads to this file (not removed or replaced). The
        identity comes from a handle, not ``os.stat``, which may report 0 for both (seen under
        Wine)."""
        try:
            fd = _open_file(segment_path(self.feed), writable=False, create=False)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # there, but we cannot tell: assume it is ours rather than reset
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return (st.st_dev, st.st_ino) == self.inode

    def unlink(self) -> None:
        try:
            _remove_path(segment_path(self.feed))
        except OSError as exc:
            raise _os_error(exc, self.feed, "remove") from None

    def close(self) -> None:
        if self._locked:
            # First, and explicitly: if unmapping fails below (views still exported), the
            # mapping's duplicate of our handle keeps the file object, and with it the lock.
            self._unlock()
            self._locked = False
        try:
            self.view.release()
            if self._pin is not None:
                self._pin.release()
                self._pin = None
            if self._mm is not None:
                self._mm.close()
                self._mm = None
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def _remove_path(path: str) -> None:
    """Free the name at once: rename the file to a tombstone, then delete it if no mapping is
    left (a mapped file cannot be deleted on Windows; ``_sweep`` does it later)."""
    tomb = os.path.join(os.path.dirname(path), _TOMBSTONE + secrets.token_hex(8))
    try:
        os.rename(path, tomb)
    except FileNotFoundError:
        return
    try:
        os.remove(tomb)
    except OSError:
        pass
    _sweep()


def _refuse_non_files(feed: str, path: str) -> None:
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode) or getattr(st, "st_reparse_tag", 0):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise BadSegment(f"feed {feed!r} is not a pricefeed segment: {path} is {kind}")
