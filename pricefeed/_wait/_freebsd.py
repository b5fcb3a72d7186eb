"""FreeBSD backend ("umtx"): ``_umtx_op(2)`` shared waits and wakes, through ctypes.

Written to the FreeBSD manual page and kernel source; it has not been run here (no FreeBSD
machine). ``pricefeed selftest`` and ``tests/backends/test_wait_conformance.py`` are what prove it.

* ``UMTX_OP_WAIT_UINT`` (11) and ``UMTX_OP_WAKE`` (3), never the ``_PRIVATE`` variants (15, 16):
  a private op always uses the process-private sleep queue, so a wake from the publisher's
  process would never reach a subscriber. The non-private ops pick the process-shared queue
  from the mapping (``AUTO_SHARE``: shared for a ``MAP_SHARED`` mapping), keyed by the VM object
  and offset, so every process that maps the segment finds the same sleep queue.
* The timeout is a ``struct _umtx_time`` (``_timeout``, ``_flags`` = 0 for relative,
  ``_clockid`` = CLOCK_MONOTONIC) passed by address in ``uaddr2`` with its size in ``uaddr``:
  the kernel tells it from a bare ``timespec`` by that size (``umtx_copyin_umtx_time``). A
  relative timeout is not restarted after a signal: the call returns EINTR (the kernel turns
  ERESTART into EINTR for this op), and we wait again for what is left of the deadline, so a
  signal neither shortens nor lengthens the timeout, and Python signal handlers (Ctrl-C) run
  between the two calls. ETIMEDOUT also just goes round: the deadline, measured with
  ``time.monotonic()``, decides. Each kernel wait lasts at most ``SLICE`` seconds, a backstop
  for a signal delivered to another thread of the process.
* A value that already differs returns 0, like a wake-up: both are True.
* ctypes ``argtypes`` on ``_umtx_op`` (it is not variadic): ``val`` is a ``u_long`` (64-bit), and
  pointers must be ``c_void_p`` (a bare Python int would be passed as a 32-bit C int).
* ``UMTX_OP_WAKE`` with ``INT_MAX`` wakes every waiter; with nobody waiting it returns 0.
* No WAKE_OP and no multi-word wait: ``wake_with`` makes two wakes, ``can_wait_many()`` is
  False, and ``multi()`` polls (correct, but subscribers never call it in production here).

READ-ONLY MAPPINGS (the open risk): the kernel computes a shared key with
``vm_map_lookup(..., VM_PROT_WRITE, ...)`` (``sys/kern/kern_umtx.c``, ``umtx_key_get``), which
fails with KERN_PROTECTION_FAILURE on a mapping without write permission, and the wait returns
EFAULT. Subscribers map feeds read-only, so on the kernels whose source was read for this
module a subscriber cannot wait this way. ``usable()`` therefore tests exactly that (a wait on a
read-only shared mapping whose word already differs must return at once) and says False where
it fails; pricefeed then polls. ``BACKEND.mechanism`` and ``BACKEND.reason`` say what was found.

Sources: freebsd-src ``lib/libc/sys/_umtx_op.2``, ``sys/sys/umtx.h``, ``sys/sys/_umtx.h``,
``sys/kern/kern_umtx.c``; rust-lang/rust ``library/std/src/sys/pal/unix/futex.rs`` and
ziglang/zig ``lib/std/Thread/Futex.zig`` (both use the _PRIVATE ops, being thread-only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import sys
import time
from typing import Any, Callable, List, Optional, Sequence, cast

from ._polling import _poll

# sys/sys/umtx.h
UMTX_OP_WAKE = 3
UMTX_OP_WAIT_UINT = 11
_INT_MAX = 0x7FFFFFFF
# sys/sys/_clock_id.h: CLOCK_MONOTONIC is 4 on FreeBSD (1 on Linux): ask the platform.
_CLOCK_MONOTONIC: int = getattr(time, "CLOCK_MONOTONIC", 4)

_WORD_SIZE = 4
_UINT32_MAX = 0xFFFFFFFF
#: The longest single kernel wait, in seconds.
SLICE = 0.5
_MAX_SECONDS = 86400  # a time_t of seconds holds far more; a slice never needs it


class _Timespec(ctypes.Structure):
    # struct timespec { time_t tv_sec; long tv_nsec; }: both 64-bit on amd64 and arm64.
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_long)]


class _UmtxTime(ctypes.Structure):
    # sys/sys/_umtx.h: struct _umtx_time { struct timespec _timeout; __uint32_t _flags;
    # __uint32_t _clockid; };  24 bytes on LP64.
    _fields_ = [("_timeout", _Timespec), ("_flags", ctypes.c_uint32), ("_clockid", ctypes.c_uint32)]


def _load() -> Optional[Any]:
    """libc, or None anywhere but FreeBSD (nothing is loaded at import elsewhere)."""
    if not sys.platform.startswith("freebsd"):
        return None
    for name in ("libc.so.7", ctypes.util.find_library("c"), None):
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:  # pragma: no cover - only on an unusual FreeBSD
            continue
    return None  # pragma: no cover


def _fn(lib: Any, name: str, restype: Any, argtypes: List[Any]) -> Optional[Callable[..., int]]:
    if lib is None:
        return None
    try:
        f = lib[name]
    except AttributeError:
        return None
    f.restype = restype
    f.argtypes = argtypes
    return cast(Callable[..., int], f)


_lib = _load()
_c_int = ctypes.c_int
_c_ulong = ctypes.c_ulong
_c_size = ctypes.c_size_t
_c_ptr = ctypes.c_void_p
# int _umtx_op(void *obj, int op, u_long val, void *uaddr, void *uaddr2);
# uaddr carries an integer (the timeout struct's size) cast to a pointer: c_void_p takes an int.
_umtx_op = _fn(_lib, "_umtx_op", _c_int, [_c_ptr, _c_int, _c_ulong, _c_ptr, _c_ptr])
_TM_SIZE = ctypes.c_void_p(ctypes.sizeof(_UmtxTime))


class UmtxWord:
    __slots__ = ("_addr", "_tm", "_tm_addr", "_view", "address")

    def __init__(self, address: int, view: memoryview) -> None:
        if address % _WORD_SIZE:
            raise ValueError(f"a wake word must be 4-byte aligned: address {address:#x}")
        self.address = address
        self._addr = ctypes.c_void_p(address)  # built once, reused by every call
        self._view = view
        self._tm = _UmtxTime()
        self._tm._flags = 0  # relative (no UMTX_ABSTIME)
        self._tm._clockid = _CLOCK_MONOTONIC
        self._tm_addr = ctypes.c_void_p(ctypes.addressof(self._tm))

    def close(self) -> None:
        return None

    def wake(self) -> None:
        assert _umtx_op is not None
        if _umtx_op(self._addr, UMTX_OP_WAKE, _INT_MAX, None, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"UMTX_OP_WAKE failed: {os.strerror(err)}")

    def wake_with(self, other: Any) -> None:
        # No WAKE_OP in _umtx_op: two calls. Each is ordered after the caller's stores.
        self.wake()
        other.wake()

    def wait(self, expected: int, timeout: Optional[float]) -> bool:
        assert _umtx_op is not None
        view = self._view
        if timeout is not None and timeout <= 0:
            return bool(view[0] != expected)
        deadline = None if timeout is None else time.monotonic() + timeout
        val = expected & _UINT32_MAX  # compared with the 32-bit word, zero-extended
        tm = self._tm._timeout
        while True:
            if deadline is None:
                seconds = SLICE
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                seconds = min(left, SLICE, _MAX_SECONDS)
            sec = int(seconds)
            tm.tv_sec = sec
            tm.tv_nsec = max(0, min(999_999_999, int((seconds - sec) * 1e9)))
            if _umtx_op(self._addr, UMTX_OP_WAIT_UINT, val, _TM_SIZE, self._tm_addr) == 0:
                return True  # woken, or the word already differed
            err = ctypes.get_errno()
            if err in (errno.EINTR, errno.ETIMEDOUT):  # go round with what is left
                continue
            if err == errno.EFAULT:
                raise OSError(
                    err,
                    "UMTX_OP_WAIT_UINT refused the word (EFAULT): this kernel cannot wait on a "
                    "read-only shared mapping; use the polling backend",
                )
            raise OSError(err, f"UMTX_OP_WAIT_UINT failed: {os.strerror(err)}")


class PollingMulti:
    """Any of several words, by polling (_umtx_op has no multi-word wait)."""

    __slots__ = ("_views",)

    def __init__(self, words: Sequence[UmtxWord]) -> None:
        self._views = [w._view for w in words]

    def close(self) -> None:
        return None

    def wait(self, expected: Sequence[int], timeout: Optional[float]) -> bool:
        views = self._views
        return _poll(lambda: any(v[0] != e for v, e in zip(views, expected)), timeout)


def _probe() -> str:
    """'' when the backend works here, else why not. A shared wake with nobody waiting must
    return 0 (the syscall is there and not refused), and a shared wait on a READ-ONLY shared
    mapping whose word already differs must return 0 at once (subscribers map read-only)."""
    if _umtx_op is None:
        return "_umtx_op is not available (not FreeBSD)"
    probe = ctypes.c_uint32(0)
    if _umtx_op(ctypes.c_void_p(ctypes.addressof(probe)), UMTX_OP_WAKE, _INT_MAX, None, None) != 0:
        return f"UMTX_OP_WAKE failed: {os.strerror(ctypes.get_errno())}"
    # void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset): off_t is 64-bit.
    mmap_fn = _fn(_lib, "mmap", _c_ptr, [_c_ptr, _c_size, _c_int, _c_int, _c_int, ctypes.c_int64])
    munmap_fn = _fn(_lib, "munmap", _c_int, [_c_ptr, _c_size])
    if mmap_fn is None or munmap_fn is None:  # pragma: no cover
        return "mmap is not available"
    size = mmap.PAGESIZE
    # PROT_READ, MAP_SHARED and MAP_ANON are 1, 1 and 0x1000 on both macOS and FreeBSD.
    prot: int = getattr(mmap, "PROT_READ", 1)
    flags: int = getattr(mmap, "MAP_SHARED", 1) | getattr(mmap, "MAP_ANON", 0x1000)
    addr = cast(Optional[int], mmap_fn(None, size, prot, flags, -1, 0))
    if addr is None or addr == ctypes.c_void_p(-1).value:
        return f"mmap failed: {os.strerror(ctypes.get_errno())}"
    try:
        view = memoryview((ctypes.c_uint8 * _WORD_SIZE).from_address(addr)).cast("B").cast("I")
        try:
            if UmtxWord(addr, view).wait(1, 0.05) is True:  # the word holds 0
                return ""
            return "a wait on a read-only mapping did not see that the word differs"
        except OSError as exc:
            return f"a wait on a read-only shared mapping failed ({exc.strerror or exc})"
        finally:
            view.release()
    finally:
        munmap_fn(addr, size)


class _Umtx:
    name = "umtx"
    #: The words are not plain futexes: callers go through word() and multi() (the contract).
    futex_words = False
    #: "umtx" when usable, "none" otherwise; ``reason`` says why not.
    mechanism = "none"
    reason = "not tested yet"
    _ok: Optional[bool] = None

    def usable(self) -> bool:
        if self._ok is None:
            cls = type(self)
            cls.reason = _probe()
            cls._ok = cls.reason == ""
            cls.mechanism = "umtx" if cls._ok else "none"
        return bool(self._ok)

    def word(self, address: int, view: memoryview, key: Any = None, writer: bool = False) -> UmtxWord:
        if _umtx_op is None:
            raise OSError(errno.ENOSYS, "_umtx_op is only available on FreeBSD")
        return UmtxWord(address, view)

    def can_wait_many(self) -> bool:
        return False

    def multi(self, words: Sequence[Any]) -> PollingMulti:
        return PollingMulti(words)

    def ring(self) -> None:
        return None  # no kernel wait that completes into a descriptor: see the contract


BACKEND = _Umtx()
