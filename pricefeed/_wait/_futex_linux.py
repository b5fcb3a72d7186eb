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
from typing import Optional

# The syscall number is the only per-CPU fact here.
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_WAKE_ALL = 0x7FFFFFFF
_MAX_SLICE = 86400.0  # longest single FUTEX_WAIT; longer timeouts wait in several


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc: Optional[ctypes.CDLL] = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
if _libc is not None:
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long
_NR = _SYS_FUTEX.get(platform.machine().lower())


class FutexWord:
    __slots__ = ("_addr", "_ts", "_ts_ref")

    def __init__(self, address: int) -> None:
        self._addr = ctypes.c_void_p(address)
        self._ts = _Timespec()
        self._ts_ref = ctypes.byref(self._ts)

    def wake(self) -> None:
        if _syscall(_NR, self._addr, _FUTEX_WAKE, _WAKE_ALL, None, None, 0) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"FUTEX_WAKE failed: {os.strerror(err)}")

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


class _Futex:
    name = "futex"

    def usable(self) -> bool:
        if _libc is None or _NR is None:
            return False
        probe = ctypes.c_uint32(0)
        # A wake with no waiter returns 0; ENOSYS or a seccomp refusal returns -1.
        return bool(_syscall(_NR, ctypes.c_void_p(ctypes.addressof(probe)), _FUTEX_WAKE, 1, None, None, 0) == 0)

    def word(self, address: int, view: memoryview) -> FutexWord:
        return FutexWord(address)


BACKEND = _Futex()
