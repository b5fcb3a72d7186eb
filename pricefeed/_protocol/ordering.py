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
  before making it even again. They come through ctypes (about 0.1 µs a call; the ``atomics``
  package costs 4 to 8 µs an operation) from the first of these that the system has:

  - ``atomic_thread_fence``, the C11 fence as an exported function: libatomic's on Linux (and
    on FreeBSD with a GCC port installed), and libSystem's where it exports one (compiler-rt
    has the function; whether Apple's build exports it is a feature test, not an assumption);
  - macOS only: libSystem's ``OSMemoryBarrier``, a full barrier (``dmb ish`` on arm64: stronger
    than acquire or release, at the same price). It is deprecated but still exported; Apple
    Silicon has no libatomic.

  FreeBSD's base system exports no fence (its libgcc_s leaves compiler-rt's atomics out), so
  there an arm64 machine needs libatomic from a GCC package (``pkg install gcc``).
  An x86-64 Python run by Rosetta 2 on Apple Silicon reports x86_64 and needs no fences:
  Rosetta runs translated code with the x86 memory order.
* Anything else is refused at import with ``UnsupportedPlatform``: on a 32-bit CPython an
  8-byte ``memcpy`` may become two stores, and a torn sequence number breaks every guarantee.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import platform
import sys
from typing import Any, Callable, List, Optional

from .._errors import UnsupportedPlatform

_X86_64 = {"x86_64", "amd64"}
_ARM64 = {"aarch64", "arm64"}

# C11 memory_order values, as libatomic takes them.
_ACQUIRE = 2
_RELEASE = 3


def _noop() -> None:
    return None


def _libatomic_names() -> List[Optional[str]]:
    """Where libatomic may be: the linker's idea first, then GCC ports' private directories
    (FreeBSD installs /usr/local/lib/gccNN/libatomic.so.1 and may not register it)."""
    names: List[Optional[str]] = [ctypes.util.find_library("atomic")]
    if sys.platform.startswith("linux"):
        names.append("libatomic.so.1")
    elif sys.platform.startswith("freebsd"):
        names.extend(sorted(glob.glob("/usr/local/lib/gcc*/libatomic.so*"), reverse=True))
    return list(dict.fromkeys(n for n in names if n))


def _fences_from(lib: Any, name: str) -> Optional[tuple[Callable[[], None], Callable[[], None]]]:
    """Acquire and release fences made of the function ``name`` exported by ``lib``, or None.
    ``atomic_thread_fence(int order)`` takes a C11 memory order; ``OSMemoryBarrier(void)`` is a
    full barrier, and is then both fences itself, called with no Python frame in between."""
    try:
        fn = lib[name]
    except AttributeError:
        return None
    fn.restype = None
    if name == "OSMemoryBarrier":
        fn.argtypes = []
        barrier: Callable[[], None] = fn
        return barrier, barrier
    fn.argtypes = [ctypes.c_int]

    def acquire() -> None:
        fn(_ACQUIRE)

    def release() -> None:
        fn(_RELEASE)

    return acquire, release


def _arm64_fences() -> tuple[Callable[[], None], Callable[[], None]]:
    """Acquire and release fences for a 64-bit Arm CPU, from the first source that has them."""
    tried: List[str] = []
    for name in _libatomic_names():
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            tried.append(f"{name}: {exc}")
            continue
        found = _fences_from(lib, "atomic_thread_fence")
        if found is not None:
            return found
        tried.append(f"{name}: no atomic_thread_fence")
    if sys.platform == "darwin":
        system = ctypes.CDLL("/usr/lib/libSystem.B.dylib")
        found = _fences_from(system, "atomic_thread_fence") or _fences_from(system, "OSMemoryBarrier")
        if found is not None:
            return found
        tried.append("libSystem: neither atomic_thread_fence nor OSMemoryBarrier")  # pragma: no cover
    # pragma: no cover - only on an aarch64 host without any of them
    hint = "pkg install gcc (it ships libatomic)" if sys.platform.startswith("freebsd") else "install libatomic1"
    raise UnsupportedPlatform(
        f"64-bit Arm needs acquire/release fences from libatomic's atomic_thread_fence (or, on macOS, "
        f"libSystem's OSMemoryBarrier) and none could be loaded ({'; '.join(tried) or 'nothing found'}); {hint}"
    )


MACHINE = platform.machine().lower()
_64BIT = ctypes.sizeof(ctypes.c_void_p) == 8

if MACHINE in _X86_64 and _64BIT:
    FENCES = False
    fence_acquire: Callable[[], None] = _noop
    fence_release: Callable[[], None] = _noop
elif MACHINE in _ARM64 and _64BIT:  # pragma: no cover - exercised by the aarch64 lane
    FENCES = True
    fence_acquire, fence_release = _arm64_fences()
else:  # pragma: no cover
    raise UnsupportedPlatform(
        f"pricefeed's lock-free reads are proven for 64-bit x86-64 and aarch64 only; "
        f"this is {platform.machine() or 'an unknown machine'} "
        f"({'64' if _64BIT else '32'}-bit Python)"
    )
