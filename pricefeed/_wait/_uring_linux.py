"""Futex waits whose completion an event loop can watch: Linux io_uring (6.7 and later).

An event loop sleeps in ``epoll_wait``, which no futex wake-up ends. io_uring's futex wait
operations (``IORING_OP_FUTEX_WAIT`` and ``IORING_OP_FUTEX_WAITV``) wait on the same words as
``FUTEX_WAIT`` and ``futex_waitv`` and are woken by the same ``FUTEX_WAKE`` (the publisher's,
unchanged), but complete into the ring, whose descriptor becomes readable: the loop watches it
like a socket, and a wake-up reaches it with no thread in between.

Why this shape:

* The ring is driven from Python through ctypes: ``io_uring_setup`` and ``io_uring_enter`` are
  the same system call numbers on every Linux CPU (425 and 426), and the rings are shared
  memory mapped from the ring's descriptor.
* A wait that outlives every caller sleeping on it (their slices passed, their tasks were
  cancelled) is cancelled (``IORING_OP_ASYNC_CANCEL``), so that the ring holds only waits
  someone sleeps on; callers sleeping on the same words and values at once share one.
* Only x86-64 uses it: its loads and stores are ordered as the ring protocol needs (the tail
  is stored after the entry; the completions are read after the tail). Other CPUs would need
  acquire and release fences from Python; they wait in a thread instead.
* The probe submits a real futex wait on a word that does not hold the expected value: a kernel
  without the operation answers EINVAL, one with it EAGAIN, and a seccomp filter that forbids
  io_uring (container defaults often do) fails the setup.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
from typing import Any, Dict, List, Optional, Sequence

from ._futex_linux import _FUTEX2_SIZE_U32, _MAX_WAITV, _libc, _Waitv

__all__ = ["FutexRing", "usable"]

_SETUP, _ENTER = 425, 426
_OP_ASYNC_CANCEL, _OP_FUTEX_WAIT, _OP_FUTEX_WAITV = 14, 51, 53
_OFF_SQES = 0x10000000
_MATCH_ANY = 0xFFFFFFFF
_ENTER_GETEVENTS = 1
_SETUP_CQSIZE = 1 << 3
_SQ_CQ_OVERFLOW = 1 << 1  # in the SQ ring's flags: completions wait in the kernel's overflow list


class _SqOffsets(ctypes.Structure):
    _fields_ = [
        *((n, ctypes.c_uint32) for n in ("head", "tail", "ring_mask", "ring_entries", "flags", "dropped", "array")),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    ]


class _CqOffsets(ctypes.Structure):
    _fields_ = [
        *((n, ctypes.c_uint32) for n in ("head", "tail", "ring_mask", "ring_entries", "overflow", "cqes", "flags")),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    ]


class _Params(ctypes.Structure):
    _fields_ = [
        *(
            (n, ctypes.c_uint32)
            for n in ("sq_entries", "cq_entries", "flags", "sq_thread_cpu", "sq_thread_idle", "features", "wq_fd")
        ),
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", _SqOffsets),
        ("cq_off", _CqOffsets),
    ]


class _Sqe(ctypes.Structure):
    _fields_ = [
        ("opcode", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("ioprio", ctypes.c_uint16),
        ("fd", ctypes.c_int32),  # futex2 flags for the futex operations
        ("off", ctypes.c_uint64),  # the expected value (FUTEX_WAIT)
        ("addr", ctypes.c_uint64),  # the word (FUTEX_WAIT) or the futex_waitv array
        ("len", ctypes.c_uint32),  # how many words (FUTEX_WAITV)
        ("op_flags", ctypes.c_uint32),
        ("user_data", ctypes.c_uint64),
        ("buf_index", ctypes.c_uint16),
        ("personality", ctypes.c_uint16),
        ("file_index", ctypes.c_int32),
        ("addr3", ctypes.c_uint64),  # the bitset mask (FUTEX_WAIT)
        ("pad", ctypes.c_uint64),
    ]


class _Cqe(ctypes.Structure):
    _fields_ = [("user_data", ctypes.c_uint64), ("res", ctypes.c_int32), ("flags", ctypes.c_uint32)]


if _libc is not None:
    from ._futex_linux import _syscall
_X86 = platform.machine().lower() in ("x86_64", "amd64")


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} failed: {os.strerror(err)}")
    return result


class FutexRing:
    """An io_uring of futex waits. ``arm`` starts a wait on some words; ``fileno()`` becomes
    readable when one completes; ``done()`` gives the tokens of those that completed."""

    def __init__(self, entries: int = 256, completions: int = 4096) -> None:
        params = _Params()
        params.flags = _SETUP_CQSIZE  # room for many waits completing between two looks
        params.cq_entries = completions
        self._fd = _check(_syscall(_SETUP, entries, ctypes.byref(params)), "io_uring_setup")
        try:
            sq, cq = params.sq_off, params.cq_off
            size = max(sq.array + params.sq_entries * 4, cq.cqes + params.cq_entries * ctypes.sizeof(_Cqe))
            rw = mmap.PROT_READ | mmap.PROT_WRITE
            # One mapping holds both rings (IORING_FEAT_SINGLE_MMAP, Linux 5.4 and later).
            self._rings: Optional[mmap.mmap] = mmap.mmap(self._fd, size, mmap.MAP_SHARED, rw, offset=0)
            self._sqe_map: Optional[mmap.mmap] = mmap.mmap(
                self._fd, params.sq_entries * ctypes.sizeof(_Sqe), mmap.MAP_SHARED, rw, offset=_OFF_SQES
            )
        except BaseException:
            os.close(self._fd)
            raise
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._rings))
        word = ctypes.c_uint32.from_address
        self._sq_tail = word(base + sq.tail)
        self._sq_flags = word(base + sq.flags)
        self._sq_mask = word(base + sq.ring_mask).value
        self._sq_array: Any = (ctypes.c_uint32 * params.sq_entries).from_address(base + sq.array)
        self._cq_head = word(base + cq.head)
        self._cq_tail = word(base + cq.tail)
        self._cq_mask = word(base + cq.ring_mask).value
        self._cqes: Any = (_Cqe * params.cq_entries).from_address(base + cq.cqes)
        self._sqes: Any = (_Sqe * params.sq_entries).from_buffer(self._sqe_map)
        self._sqe_size = ctypes.sizeof(_Sqe)
        #: Arrays of futex_waitv handed to the kernel, kept until their waits complete.
        self._arrays: Dict[int, Any] = {}

    def fileno(self) -> int:
        return self._fd

    def arm(self, words: Sequence[Any], expected: Sequence[int], token: int) -> None:
        """Wait until any of ``words`` (the futex backend's, which know their ``address``)
        differs from its ``expected`` value or is woken; the completion carries ``token`` (an
        int from 1 to 2**64 - 1: 0 is the cancellations')."""
        addresses = [w.address for w in words]
        n = len(addresses)
        if not 1 <= n <= _MAX_WAITV:
            raise ValueError(f"a ring wait takes 1 to {_MAX_WAITV} words: got {n}")
        sqe = self._next_entry(token)
        if n == 1:
            sqe.opcode = _OP_FUTEX_WAIT
            sqe.addr = addresses[0]
            sqe.off = expected[0]
            sqe.addr3 = _MATCH_ANY
            sqe.fd = _FUTEX2_SIZE_U32
        else:
            array = (_Waitv * n)()
            for k in range(n):
                array[k].uaddr = addresses[k]
                array[k].val = expected[k]
                array[k].flags = _FUTEX2_SIZE_U32
            self._arrays[token] = array
            sqe.opcode = _OP_FUTEX_WAITV
            sqe.addr = ctypes.addressof(array)
            sqe.len = n
        self._submit()

    def cancel(self, token: int) -> None:
        """Cancel the wait armed with ``token``, if it is still armed. The cancellation's own
        completion carries token 0, and the wait's (if it was still armed) its own token:
        callers let go of the token first, and ignore both."""
        sqe = self._next_entry(0)
        sqe.opcode = _OP_ASYNC_CANCEL
        sqe.addr = token
        self._submit()

    def _next_entry(self, token: int) -> Any:
        sqe = self._sqes[self._sq_tail.value & self._sq_mask]
        ctypes.memset(ctypes.addressof(sqe), 0, self._sqe_size)
        sqe.user_data = token
        return sqe

    def _submit(self) -> None:
        """Publish the entry just written and hand it to the kernel: one at a time, so the
        submission queue never holds more than that one."""
        tail = self._sq_tail.value
        index = tail & self._sq_mask
        self._sq_array[index] = index
        self._sq_tail.value = (tail + 1) & 0xFFFFFFFF  # after the entry (x86-64 keeps stores in order)
        while True:
            if _syscall(_ENTER, self._fd, 1, 0, 0, None, 0) >= 0:
                return
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise OSError(err, f"io_uring_enter failed: {os.strerror(err)}")

    def done(self) -> List[int]:
        """The tokens of the waits that completed since the last call (woken, or a word that
        already differed when it was armed), each once. Completions the ring had no room for
        wait in the kernel; they are brought into the ring and taken too."""
        out = self._take()
        while self._sq_flags.value & _SQ_CQ_OVERFLOW:
            _syscall(_ENTER, self._fd, 0, 0, _ENTER_GETEVENTS, None, 0)  # flushes the overflow
            more = self._take()
            if not more:
                break
            out += more
        return out

    def _take(self) -> List[int]:
        head = self._cq_head.value
        tail = self._cq_tail.value  # before the entries (x86-64 keeps loads in order)
        out = []
        cqes, mask = self._cqes, self._cq_mask
        while head != tail:
            token = cqes[head & mask].user_data
            self._arrays.pop(token, None)
            out.append(token)
            head = (head + 1) & 0xFFFFFFFF
        self._cq_head.value = head
        return out

    def close(self) -> None:
        """Closing the ring cancels every wait still armed."""
        if self._rings is None:
            return
        self._sqes = self._cqes = self._sq_array = None
        self._sq_tail = self._sq_flags = self._cq_head = self._cq_tail = None  # type: ignore[assignment]
        self._sqe_map.close()  # type: ignore[union-attr]
        self._rings.close()
        self._rings = self._sqe_map = None
        os.close(self._fd)
        self._arrays.clear()


class _Address:
    def __init__(self, address: int) -> None:
        self.address = address


_usable: Optional[bool] = None


def usable() -> bool:
    """Whether futex waits through io_uring work here (x86-64 Linux 6.7+, io_uring allowed)."""
    global _usable
    if _usable is None:
        _usable = _X86 and _libc is not None and _probe()
    return _usable


def _probe() -> bool:
    try:
        ring = FutexRing(entries=4)
    except OSError:
        return False
    try:
        value = ctypes.c_uint32(1)
        word = _Address(ctypes.addressof(value))
        ring.arm([word], [0], 1)  # the word holds 1, not 0: completes at once
        ring.arm([word, word], [0, 0], 2)
        results = {}
        for _ in range(1000):
            _syscall(_ENTER, ring.fileno(), 0, 1, _ENTER_GETEVENTS, None, 0)
            head = ring._cq_head.value
            while head != ring._cq_tail.value:
                cqe = ring._cqes[head & ring._cq_mask]
                results[cqe.user_data] = cqe.res
                head += 1
            ring._cq_head.value = head
            if len(results) == 2:
                break
        return results == {1: -errno.EAGAIN, 2: -errno.EAGAIN}
    except OSError:
        return False
    finally:
        ring.close()
