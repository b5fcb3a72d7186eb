"""Linux futex backend: FUTEX_WAIT / FUTEX_WAKE through ``syscall(2)`` with ctypes.

Why this shape (each point is a failure it avoids):

* Never FUTEX_PRIVATE_FLAG: a private waiter is keyed by its own address space and is never
  woken by another process's wake.
* ``syscall`` is variadic and gets no ``argtypes``: declaring them measured 1.2 µs a wake
  against 0.6 µs without. The address must still be a ``c_void_p`` (a bare Python int is
  passed as a C int, truncated to 32 bits, and the call fails with EFAULT); it is built once
  per word and reused. The expected value is passed as a ``c_long`` since it may not fit a C
  int; the operation and the count are small ints and safe as they are.
* FUTEX_WAIT's timeout is relative: after EINTR we wait again for what is left, so a signal
  never shortens (or lengthens) the caller's timeout. Between the EINTR and the next wait the
  interpreter runs the Python signal handlers, which is how Ctrl-C ends a wait at once.
* FUTEX_WAIT and FUTEX_WAKE both work on a read-only shared mapping, so subscribers keep the
  read-only mapping the contract promises.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
import time
from typing import Any, Optional, Sequence

# The syscall number is the only per-CPU fact here (futex_waitv has one number everywhere).
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
_SYS_FUTEX_WAITV = 449
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_FUTEX_WAKE_OP = 5
_WAKE_ALL = 0x7FFFFFFF
# FUTEX_WAKE_OP's encoded operation: OR 0 into the second word (no change), then wake its
# waiters if its old value, as a signed int, is >= 0: always, for a word kept below 2**31.
_OP_OR, _CMP_GE = 2, 5
_WAKE_OP_ALWAYS = (_OP_OR << 28) | (_CMP_GE << 24)
_FUTEX2_SIZE_U32 = 0x02  # futex_waitv flags: a 32-bit word, shared (no FUTEX2_PRIVATE)
_CLOCK_MONOTONIC = 1
_MAX_WAITV = 128
_MAX_SLICE = 86400.0  # longest single FUTEX_WAIT; longer timeouts wait in several


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc: Optional[ctypes.CDLL] = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
if _libc is not None:
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long
_NR = _SYS_FUTEX.get(platform.machine().lower())


class _Waitv(ctypes.Structure):
    _fields_ = [
        ("val", ctypes.c_uint64),
        ("uaddr", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class FutexWord:
    __slots__ = ("_addr", "_ts", "_ts_ref", "address")

    def __init__(self, address: int) -> None:
        self.address = address
        self._addr = ctypes.c_void_p(address)
        self._ts = _Timespec()
        self._ts_ref = ctypes.byref(self._ts)

    def close(self) -> None:
        return None

    def wake(self) -> None:
        if _syscall(_NR, self._addr, _FUTEX_WAKE, _WAKE_ALL, None, None, 0) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"FUTEX_WAKE failed: {os.strerror(err)}")

    def wake_with(self, other: FutexWord) -> None:
        # val2 (how many to wake on the second word) travels in the timeout argument's place.
        if _syscall(_NR, self._addr, _FUTEX_WAKE_OP, _WAKE_ALL, _WAKE_ALL, other._addr, _WAKE_OP_ALWAYS) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"FUTEX_WAKE_OP failed: {os.strerror(err)}")

    def wait(self, expected: int, timeout: Optional[float]) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        expected_arg = ctypes.c_long(expected)
        while True:
            if deadline is None:
                ts = None
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                left = min(left, _MAX_SLICE)  # a C long of seconds cannot hold every float
                sec = int(left)
                self._ts.tv_sec = sec
                self._ts.tv_nsec = int((left - sec) * 1e9)
                ts = self._ts_ref
            if _syscall(_NR, self._addr, _FUTEX_WAIT, expected_arg, ts, None, 0) == 0:
                return True
            err = ctypes.get_errno()
            if err == errno.EAGAIN:  # the word already differs
                return True
            if err not in (errno.EINTR, errno.ETIMEDOUT):  # both: go round, with what is left
                raise OSError(err, f"FUTEX_WAIT failed: {os.strerror(err)}")


class FutexMulti:
    """futex_waitv over a fixed list of words; the array is built once and only the expected
    values change between waits."""

    __slots__ = ("_arr", "_n", "_ts", "_ts_ref")

    def __init__(self, words: Sequence[FutexWord]) -> None:
        if not 1 <= len(words) <= _MAX_WAITV:
            raise ValueError(f"futex_waitv takes 1 to {_MAX_WAITV} words: got {len(words)}")
        self._n = len(words)
        self._arr = (_Waitv * self._n)()
        for k, w in enumerate(words):
            self._arr[k].uaddr = w.address
            self._arr[k].flags = _FUTEX2_SIZE_U32
        self._ts = _Timespec()
        self._ts_ref = ctypes.byref(self._ts)

    def close(self) -> None:
        return None

    def wait(self, expected: Sequence[int], timeout: Optional[float]) -> bool:
        arr = self._arr
        for k in range(self._n):
            arr[k].val = expected[k]
        ts = None
        if timeout is not None:
            # futex_waitv's timeout is absolute on CLOCK_MONOTONIC, which time.monotonic() reads.
            deadline = time.monotonic() + min(timeout, _MAX_SLICE)
            sec = int(deadline)
            self._ts.tv_sec = sec
            self._ts.tv_nsec = int((deadline - sec) * 1e9)
            ts = self._ts_ref
        while True:
            if _syscall(_SYS_FUTEX_WAITV, arr, self._n, 0, ts, _CLOCK_MONOTONIC) >= 0:
                return True
            err = ctypes.get_errno()
            if err == errno.EAGAIN:  # a word already differs
                return True
            if err == errno.ETIMEDOUT:
                return False
            if err != errno.EINTR:  # the deadline is absolute: just go round
                raise OSError(err, f"futex_waitv failed: {os.strerror(err)}")


#: futex and futex_waitv as /proc/PID/syscall shows them. /proc gives the host kernel's number,
#: which differs from the process's own under an emulator (qemu-user runs an aarch64 futex, 98,
#: as the x86-64 host's 202), so for an emulated process every futex number counts.
_OWN_FUTEX = {str(_NR), str(_SYS_FUTEX_WAITV)}
_ANY_FUTEX = {str(n) for n in (*_SYS_FUTEX.values(), _SYS_FUTEX_WAITV)}


def sleeping_in_futex(pid: int) -> Optional[bool]:
    """Whether process ``pid`` sits in futex or futex_waitv now (Linux /proc); None: cannot tell."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            first = f.read().split(" ", 1)[0]
    except OSError:
        return None
    try:
        emulated = "qemu" in os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        emulated = False
    return first in (_ANY_FUTEX if emulated else _OWN_FUTEX)


def waitv_missing() -> bool:
    """True when futex_waitv is not there (ENOSYS), whatever the kernel's version says: an
    emulator or a seccomp filter may lack it on a new kernel."""
    if _libc is None:
        return True
    _syscall(_SYS_FUTEX_WAITV, None, 0, 0, None, 0)
    return ctypes.get_errno() != errno.EINVAL


class _Futex:
    name = "futex"
    #: The words are kernel futexes at their addresses (see the contract in __init__).
    futex_words = True
    _waitv: Optional[bool] = None

    def usable(self) -> bool:
        if _libc is None or _NR is None:
            return False
        probe = ctypes.c_uint32(0)
        # A wake with no waiter returns 0; ENOSYS or a seccomp refusal returns -1.
        return bool(_syscall(_NR, ctypes.c_void_p(ctypes.addressof(probe)), _FUTEX_WAKE, 1, None, None, 0) == 0)

    def word(self, address: int, view: memoryview, key: Any = None, writer: bool = False) -> FutexWord:
        return FutexWord(address)

    def can_wait_many(self) -> bool:
        if self._waitv is None:
            # With no words the call fails at once: EINVAL where futex_waitv exists (Linux
            # 5.16 and later), ENOSYS where it does not.
            type(self)._waitv = not waitv_missing()
        return bool(self._waitv)

    def multi(self, words: Sequence[Any]) -> FutexMulti:
        return FutexMulti(words)

    def ring(self) -> Optional[Any]:
        from . import _uring_linux

        if not _uring_linux.usable():
            return None
        try:
            return _uring_linux.FutexRing()
        except OSError:  # out of descriptors or locked memory: the caller waits another way
            return None


BACKEND = _Futex()
