"""macOS backend ("os_sync"): Darwin's futex-like address waits, shared between processes.

Written to Apple's documentation and to how mature projects call the same functions; it has not
been run here (no macOS machine). ``pricefeed selftest`` and ``tests/backends/test_wait_conformance.py``
are what prove it on a Mac.

Mechanisms, chosen by feature test, best first (``BACKEND.mechanism`` says which one runs):

* ``os_sync``: ``os_sync_wait_on_address_with_timeout`` / ``os_sync_wake_by_address_all`` with
  ``OS_SYNC_WAIT_ON_ADDRESS_SHARED`` / ``OS_SYNC_WAKE_BY_ADDRESS_SHARED`` (public API, macOS 14.4
  and later; ``<os/os_sync_wait_on_address.h>``). A missing symbol means an older macOS.
* ``ulock_wait2`` (macOS 11+) and ``ulock_wait`` (10.12+): the PRIVATE syscalls ``__ulock_wait2``
  / ``__ulock_wait`` / ``__ulock_wake`` with ``UL_COMPARE_AND_WAIT_SHARED`` (and ``ULF_WAKE_ALL``)
  that os_sync wraps. They are not API: Apple may change them, which is why they are only the
  fallback. Constants from xnu ``bsd/sys/ulock.h``; the same calls are made by libpthread, by
  Rust's std (``library/std/src/sys/pal/unix/futex.rs``) and by Zig (``lib/std/Thread/Futex.zig``).

Why each detail (each point is a failure it avoids):

* Always the SHARED flag/opcode. Without it the kernel keys the wait by (task, address) and a
  wake from the publisher's process never finds the subscriber. With it, xnu keys by the VM
  object and offset under the address (``sys_ulock.c``: ``uaddr_findobj``), with no check of
  the mapping's protection, so a read-only mapping can wait.
* ctypes ``argtypes`` on every function: the expected value and the timeouts are 64-bit
  (``uint64_t``). Without a declaration ctypes passes a Python int as a C ``int``, and on arm64
  the upper half of the register is then undefined. Addresses are ``c_void_p`` for the same
  reason (a bare int would be truncated to 32 bits). None of these functions is variadic, so a
  declaration is also the correct calling convention on Apple arm64.
* Timeouts: ``os_sync_wait_on_address_with_timeout`` takes nanoseconds on
  ``OS_CLOCK_MACH_ABSOLUTE_TIME`` and refuses 0 (EINVAL); ``__ulock_wait2`` takes nanoseconds and
  ``__ulock_wait`` MICROseconds in a ``uint32_t``, where 0 means "forever". So every slice is at
  least 1 unit, and a timeout is never passed as 0.
* Each kernel wait lasts at most ``SLICE`` seconds and the deadline is recomputed from
  ``time.monotonic()`` after each return, so EINTR (a signal) and an early ETIMEDOUT neither
  shorten nor lengthen the caller's timeout. The wait itself is interruptible (xnu waits with
  THREAD_ABORTSAFE and returns EINTR), and between two calls the interpreter runs Python signal
  handlers: that is how Ctrl-C ends a wait. The slice is a backstop for a signal that the kernel
  delivers to another thread of the process (Python handlers only run in the main thread).
* A value that already differs is a success (return >= 0), as is a wake-up.
* EFAULT means the kernel could not read the word without faulting the page in (xnu reads it
  under a spinlock; Apple's header says to read the word and retry). We read it from Python,
  which faults it in, and go round; EFAULT that persists is an error.
* ``__ulock_wake`` may return EINTR (libpthread retries it) and returns ENOENT when nobody
  waits; both are normal. ``os_sync_wake_by_address_all`` also says ENOENT when nobody waits.
* There is no WAKE_OP and no multi-word wait on macOS: ``wake_with`` makes two wakes, and
  ``can_wait_many()`` is False. ``multi()`` still works (it polls) so that callers and the
  conformance suite can use it, but subscribers never call it in production here.

Sources: Apple, developer.apple.com/documentation/os/os_sync_wait_on_address (and
``os_sync_wait_on_address_with_timeout``, ``os_sync_wake_by_address_all``); apple-oss-distributions
xnu ``bsd/sys/ulock.h`` and ``bsd/kern/sys_ulock.c``; rust-lang/rust
``library/std/src/sys/pal/unix/futex.rs``; ziglang/zig ``lib/std/Thread/Futex.zig``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys
import time
from typing import Any, Callable, List, Optional, Sequence, cast

from ._polling import _poll

# <os/os_sync_wait_on_address.h> (macOS 14.4 SDK) and <os/clock.h>.
OS_SYNC_WAIT_ON_ADDRESS_SHARED = 0x00000001
OS_SYNC_WAKE_BY_ADDRESS_SHARED = 0x00000001
OS_CLOCK_MACH_ABSOLUTE_TIME = 32
# xnu bsd/sys/ulock.h (private).
UL_COMPARE_AND_WAIT_SHARED = 3
ULF_WAKE_ALL = 0x00000100
ULF_NO_ERRNO = 0x01000000  # the call returns -errno instead of setting errno

_WORD_SIZE = 4
_UINT32_MAX = 0xFFFFFFFF
#: The longest single kernel wait, in seconds (see the module docstring).
SLICE = 0.5
_MAX_FAULTS = 100  # consecutive EFAULT/ENOMEM returns before giving up

_WaitFn = Callable[[ctypes.c_void_p, ctypes.c_uint64, float], int]  # returns 0 or an errno
_WakeFn = Callable[[ctypes.c_void_p], int]  # returns 0 or an errno


def _load() -> Optional[Any]:
    """libSystem, or None anywhere but macOS (nothing is loaded at import elsewhere)."""
    if sys.platform != "darwin":
        return None
    try:
        # In the dyld shared cache since macOS 11: dlopen() finds it without a file on disk.
        return ctypes.CDLL("/usr/lib/libSystem.B.dylib", use_errno=True)
    except OSError:  # pragma: no cover - only on a broken macOS
        return None


def _fn(lib: Any, name: str, restype: Any, argtypes: List[Any]) -> Optional[Callable[..., int]]:
    """The exported function ``name`` with its C signature declared, or None when this macOS
    does not export it (the feature test). ``lib[name]`` rather than ``lib.name``: a name that
    starts with two underscores would be mangled inside a class, and reads oddly outside one."""
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
_c_u32 = ctypes.c_uint32
_c_u64 = ctypes.c_uint64
_c_size = ctypes.c_size_t
_c_ptr = ctypes.c_void_p

# int os_sync_wait_on_address_with_timeout(void *addr, uint64_t value, size_t size,
#     os_sync_wait_on_address_flags_t flags /* uint32_t */, os_clockid_t clockid /* uint32_t */,
#     uint64_t timeout_ns);
_os_sync_wait_timeout = _fn(
    _lib, "os_sync_wait_on_address_with_timeout", _c_int, [_c_ptr, _c_u64, _c_size, _c_u32, _c_u32, _c_u64]
)
# int os_sync_wait_on_address(void *addr, uint64_t value, size_t size, uint32_t flags);
# Looked up as part of the 14.4 feature set; waits here always pass a (sliced) timeout.
_os_sync_wait = _fn(_lib, "os_sync_wait_on_address", _c_int, [_c_ptr, _c_u64, _c_size, _c_u32])
# int os_sync_wake_by_address_all(void *addr, size_t size, os_sync_wake_by_address_flags_t flags);
_os_sync_wake_all = _fn(_lib, "os_sync_wake_by_address_all", _c_int, [_c_ptr, _c_size, _c_u32])
# int __ulock_wait2(uint32_t operation, void *addr, uint64_t value, uint64_t timeout_ns, uint64_t value2);
_ulock_wait2 = _fn(_lib, "__ulock_wait2", _c_int, [_c_u32, _c_ptr, _c_u64, _c_u64, _c_u64])
# int __ulock_wait(uint32_t operation, void *addr, uint64_t value, uint32_t timeout_us);
_ulock_wait = _fn(_lib, "__ulock_wait", _c_int, [_c_u32, _c_ptr, _c_u64, _c_u32])
# int __ulock_wake(uint32_t operation, void *addr, uint64_t wake_value);
_ulock_wake = _fn(_lib, "__ulock_wake", _c_int, [_c_u32, _c_ptr, _c_u64])


# -- the three mechanisms: a wait(addr, value, seconds) and a wake(addr) each -----------------
def _wait_os_sync(addr: ctypes.c_void_p, value: ctypes.c_uint64, seconds: float) -> int:
    assert _os_sync_wait_timeout is not None
    ns = max(1, int(seconds * 1e9))  # 0 would be EINVAL
    flags, clock = OS_SYNC_WAIT_ON_ADDRESS_SHARED, OS_CLOCK_MACH_ABSOLUTE_TIME
    if _os_sync_wait_timeout(addr, value, _WORD_SIZE, flags, clock, ns) >= 0:
        return 0
    return ctypes.get_errno()


def _wake_os_sync(addr: ctypes.c_void_p) -> int:
    assert _os_sync_wake_all is not None
    if _os_sync_wake_all(addr, _WORD_SIZE, OS_SYNC_WAKE_BY_ADDRESS_SHARED) == 0:
        return 0
    err = ctypes.get_errno()
    return 0 if err == errno.ENOENT else err  # ENOENT: nobody was waiting


def _wait_ulock2(addr: ctypes.c_void_p, value: ctypes.c_uint64, seconds: float) -> int:
    assert _ulock_wait2 is not None
    ns = max(1, int(seconds * 1e9))  # 0 would mean "forever"
    rc = _ulock_wait2(UL_COMPARE_AND_WAIT_SHARED | ULF_NO_ERRNO, addr, value, ns, 0)
    return 0 if rc >= 0 else -rc


def _wait_ulock(addr: ctypes.c_void_p, value: ctypes.c_uint64, seconds: float) -> int:
    assert _ulock_wait is not None
    us = min(max(1, int(seconds * 1e6)), _UINT32_MAX)  # MICROseconds; 0 would mean "forever"
    rc = _ulock_wait(UL_COMPARE_AND_WAIT_SHARED | ULF_NO_ERRNO, addr, value, us)
    return 0 if rc >= 0 else -rc


def _wake_ulock(addr: ctypes.c_void_p) -> int:
    assert _ulock_wake is not None
    while True:
        rc = _ulock_wake(UL_COMPARE_AND_WAIT_SHARED | ULF_WAKE_ALL | ULF_NO_ERRNO, addr, 0)
        if rc >= 0 or -rc == errno.ENOENT:  # ENOENT: nobody was waiting
            return 0
        if -rc != errno.EINTR:  # libpthread retries an interrupted wake; so do we
            return -rc


class _Mechanism:
    __slots__ = ("name", "wait", "wake")

    def __init__(self, name: str, wait: _WaitFn, wake: _WakeFn) -> None:
        self.name = name
        self.wait = wait
        self.wake = wake


def _offered() -> List[_Mechanism]:
    """The mechanisms whose symbols this macOS exports, best first."""
    found: List[_Mechanism] = []
    if _os_sync_wait_timeout is not None and _os_sync_wait is not None and _os_sync_wake_all is not None:
        found.append(_Mechanism("os_sync", _wait_os_sync, _wake_os_sync))
    if _ulock_wake is not None:
        if _ulock_wait2 is not None:
            found.append(_Mechanism("ulock_wait2", _wait_ulock2, _wake_ulock))
        if _ulock_wait is not None:
            found.append(_Mechanism("ulock_wait", _wait_ulock, _wake_ulock))
    return found


class DarwinWord:
    __slots__ = ("_addr", "_mech", "_view", "address")

    def __init__(self, address: int, view: memoryview, mech: _Mechanism) -> None:
        if address % _WORD_SIZE:
            raise ValueError(f"a wake word must be 4-byte aligned: address {address:#x}")
        self.address = address
        self._addr = ctypes.c_void_p(address)  # built once, reused by every call
        self._view = view
        self._mech = mech

    def close(self) -> None:
        return None

    def wake(self) -> None:
        err = self._mech.wake(self._addr)
        if err:
            raise OSError(err, f"{self._mech.name} wake failed: {os.strerror(err)}")

    def wake_with(self, other: Any) -> None:
        # No WAKE_OP on macOS: two calls. Each is ordered after the caller's stores.
        self.wake()
        other.wake()

    def wait(self, expected: int, timeout: Optional[float]) -> bool:
        view = self._view
        if timeout is not None and timeout <= 0:
            return bool(view[0] != expected)
        deadline = None if timeout is None else time.monotonic() + timeout
        value = ctypes.c_uint64(expected & _UINT32_MAX)
        wait = self._mech.wait
        faults = 0
        while True:
            if deadline is None:
                seconds = SLICE
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                seconds = min(left, SLICE)
            err = wait(self._addr, value, seconds)
            if err == 0:  # woken, or the word already differed
                return True
            if err in (errno.EINTR, errno.ETIMEDOUT):  # go round with what is left
                faults = 0
                continue
            if err in (errno.EFAULT, errno.ENOMEM):
                # Reading the word here faults its page in (EFAULT) and tells whether waiting
                # is still needed; Apple's header asks for exactly this before a retry.
                if view[0] != expected:
                    return True
                faults += 1
                if faults > _MAX_FAULTS:
                    raise OSError(err, f"{self._mech.name} wait keeps failing: {os.strerror(err)}")
                if err == errno.ENOMEM:
                    time.sleep(0.001)
                continue
            raise OSError(err, f"{self._mech.name} wait failed: {os.strerror(err)}")


class PollingMulti:
    """Any of several words, by polling (macOS has no multi-word kernel wait)."""

    __slots__ = ("_views",)

    def __init__(self, words: Sequence[DarwinWord]) -> None:
        self._views = [w._view for w in words]

    def close(self) -> None:
        return None

    def wait(self, expected: Sequence[int], timeout: Optional[float]) -> bool:
        views = self._views
        return _poll(lambda: any(v[0] != e for v, e in zip(views, expected)), timeout)


def _probe(mech: _Mechanism) -> bool:
    """Does this mechanism work here, for what pricefeed does with it? A wake with nobody
    waiting must succeed, and a wait on a READ-ONLY shared mapping whose word already differs
    must return at once (subscribers only ever map the feed read-only)."""
    probe = ctypes.c_uint32(0)
    if mech.wake(ctypes.c_void_p(ctypes.addressof(probe))) != 0:
        return False
    libc = _lib
    if libc is None:  # pragma: no cover - _probe only runs on macOS
        return False
    # void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset): off_t is 64-bit.
    mmap_fn = _fn(libc, "mmap", _c_ptr, [_c_ptr, _c_size, _c_int, _c_int, _c_int, ctypes.c_int64])
    munmap_fn = _fn(libc, "munmap", _c_int, [_c_ptr, _c_size])
    if mmap_fn is None or munmap_fn is None:  # pragma: no cover
        return False
    size = mmap.PAGESIZE
    # PROT_READ, MAP_SHARED and MAP_ANON are 1, 1 and 0x1000 on both macOS and FreeBSD.
    prot: int = getattr(mmap, "PROT_READ", 1)
    flags: int = getattr(mmap, "MAP_SHARED", 1) | getattr(mmap, "MAP_ANON", 0x1000)
    addr = cast(Optional[int], mmap_fn(None, size, prot, flags, -1, 0))
    if addr is None or addr == ctypes.c_void_p(-1).value:
        return False
    try:
        view = memoryview((ctypes.c_uint8 * _WORD_SIZE).from_address(addr)).cast("B").cast("I")
        try:
            return DarwinWord(addr, view, mech).wait(1, 0.05) is True  # the word holds 0
        except OSError:
            return False
        finally:
            view.release()
    finally:
        munmap_fn(addr, size)


class _OsSync:
    name = "os_sync"
    #: The words are not plain futexes: callers go through word() and multi() (the contract).
    futex_words = False
    #: Which mechanism runs: "os_sync", "ulock_wait2", "ulock_wait", or "none".
    mechanism = "none"
    _chosen: Optional[_Mechanism] = None
    _tested = False

    def _mech(self) -> Optional[_Mechanism]:
        if not self._tested:
            cls = type(self)
            cls._tested = True
            for mech in _offered():
                if _probe(mech):
                    cls._chosen = mech
                    cls.mechanism = mech.name
                    break
        return self._chosen

    def usable(self) -> bool:
        return self._mech() is not None

    def word(self, address: int, view: memoryview, key: Any = None, writer: bool = False) -> DarwinWord:
        mech = self._mech()
        if mech is None:
            raise OSError(errno.ENOSYS, "no shared address wait on this system (macOS 10.12 or later needed)")
        return DarwinWord(address, view, mech)

    def can_wait_many(self) -> bool:
        return False

    def multi(self, words: Sequence[Any]) -> PollingMulti:
        return PollingMulti(words)

    def ring(self) -> None:
        return None  # no kernel wait that completes into a descriptor: see the contract


BACKEND = _OsSync()
