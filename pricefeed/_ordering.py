"""Memory ordering for the seqlocks and the ring: the one module that knows the CPU.

Every shared word is read and written with a single aligned load or store through a
``memoryview`` cast to ``"Q"`` or ``"I"`` (CPython copies such an item with one ``memcpy`` of
its size, which compilers emit as one instruction). Never ``struct.pack_into`` on a word that
another process may be reading: it zero-fills the target before writing, and a reader then sees
a 0 that was never published.

What that leaves is ordering between the loads (or stores) of different words:

* x86-64 keeps loads in program order and stores in program order (TSO), which is all a
  seqlock needs, so the fences below are no-ops and the hot paths skip them (``FENCES`` is
  False).
* aarch64 may reorder both. The reader needs an acquire fence after its first load of the
  lock word and before its second; the writer a release fence after making the lock odd and
  before making it even again. They come from libatomic's ``atomic_thread_fence`` through
  ctypes (about 0.1 µs a call; the ``atomics`` package costs 4 to 8 µs an operation).
* Anything else is refused at import with ``UnsupportedPlatform``: on a 32-bit CPython an
  8-byte ``memcpy`` may become two stores, and a torn sequence number breaks every guarantee.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import Callable

from ._errors import UnsupportedPlatform

_X86_64 = {"x86_64", "amd64"}
_ARM64 = {"aarch64", "arm64"}

# C11 memory_order values, as libatomic takes them.
_ACQUIRE = 2
_RELEASE = 3


def _noop() -> None:
    return None


def _libatomic_fences() -> tuple[Callable[[], None], Callable[[], None]]:
    name = ctypes.util.find_library("atomic") or "libatomic.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:  # pragma: no cover - only on an aarch64 host without libatomic
        raise UnsupportedPlatform(
            f"aarch64 needs libatomic for acquire/release fences, and it could not be loaded "
            f"({exc}); install libatomic1"
        ) from exc
    fence = lib.atomic_thread_fence
    fence.restype = None
    fence.argtypes = [ctypes.c_int]

    def acquire() -> None:
        fence(_ACQUIRE)

    def release() -> None:
        fence(_RELEASE)

    return acquire, release


MACHINE = platform.machine().lower()
_64BIT = ctypes.sizeof(ctypes.c_void_p) == 8

if MACHINE in _X86_64 and _64BIT:
    FENCES = False
    fence_acquire: Callable[[], None] = _noop
    fence_release: Callable[[], None] = _noop
elif MACHINE in _ARM64 and _64BIT:  # pragma: no cover - exercised by the aarch64 lane
    FENCES = True
    fence_acquire, fence_release = _libatomic_fences()
else:  # pragma: no cover
    raise UnsupportedPlatform(
        f"pricefeed's lock-free reads are proven for 64-bit x86-64 and aarch64 only; "
        f"this is {platform.machine() or 'an unknown machine'} "
        f"({'64' if _64BIT else '32'}-bit Python)"
    )
