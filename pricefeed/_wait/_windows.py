"""Windows backend: named auto-reset events across processes, WaitOnAddress within one.

``WaitOnAddress`` is the futex of Windows, but it wakes threads of the calling process only,
so a subscriber in another process needs a kernel object that the publisher can signal:

* **A registry per feed incarnation**: a small named paging-file mapping
  (``Local\\pricefeed-<space>-wake``) of ``ENTRIES`` entries of 64 bytes. A waiting subscriber
  claims an entry, writes its pid and a 256-bit mask of the words it sleeps on, and waits on
  its own named auto-reset event (``...-ev-<i>``). Only the registry is writable by
  subscribers: the feed's data stays mapped read-only.
* **Claiming without a lock, freed by death.** An entry ``i`` belongs to whoever *created* the
  named mutex ``...-alive-<i>`` (``CreateMutexW`` reports ``ERROR_ALREADY_EXISTS`` to everyone
  else, atomically) and keeps its only handle. A named object disappears with its last
  handle, which Windows closes when the process dies (kill included): the entry is then free
  for the next claimant, who overwrites what the dead one left. No subscriber ever waits for
  another, and none can keep an entry from a live one.
* **The publisher** keeps the entries it knows with their events opened, and re-reads the
  registry only when its generation word changed (each claimant writes a new random value
  after its entry). After storing a wake word it calls ``SetEvent`` for each entry whose mask
  has that word. An auto-reset event stays signalled until its waiter takes it, so a change
  that comes before the waiter sleeps is not lost: the wait returns at once. ``PulseEvent`` is
  never used (unreliable, as its documentation says).
* **A registration's first wait is capped at 1 ms.** The publisher's "store word, load
  registry" and the subscriber's "store entry, load word" may pass each other in the CPUs'
  store buffers (x86 allows a load to overtake an earlier store), so for a moment after
  registering, a change could miss the new entry. The cap bounds that to 1 ms, once per
  registration; a subscriber keeps its entry for as long as it keeps its waiting object.
* **Same process: WaitOnAddress.** Where the publisher of the feed lives in the waiter's own
  process (a writer word of the same space exists here), a single-word wait uses
  ``WaitOnAddress`` on the subscriber's own view, and the publisher calls
  ``WakeByAddressAll`` on the addresses registered in this process. Multi-word waits use the
  registry in every case.
* **Ctrl-C.** In the main thread a wait also waits on the interpreter's SIGINT event, so a
  Ctrl-C ends it at once; WaitOnAddress cannot, so it waits in slices of ``SLICE`` seconds.
* When all ``ENTRIES`` are taken, a waiter polls (as the polling backend does) rather than
  fail or take another's entry.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import sys
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from . import MAX_INDEX, _polling

ENTRIES = 256
ENTRY_BYTES = 64
REGISTRY_BYTES = 64 + ENTRIES * ENTRY_BYTES
_MASK_WORDS = (MAX_INDEX + 1) // 64  # one bit per WordKey.number
SLICE = 0.05  # WaitOnAddress slices in the main thread: how long Ctrl-C may take
FIRST_WAIT_CAP = 1e-3
FULL_RETRY = 1.0  # how often a waiter that found the registry full tries again

_WAIT_OBJECT_0 = 0
_WAIT_TIMEOUT = 0x102
_ERROR_ALREADY_EXISTS = 183
_ERROR_TIMEOUT = 1460
_EVENT_MODIFY_STATE = 0x0002

_HANDLE = ctypes.c_void_p
_ON = sys.platform == "win32"
_last_error: Callable[[], int] = getattr(ctypes, "get_last_error", lambda: 0)  # Windows only

if _ON:  # pragma: no cover - exercised by the Wine lane
    import mmap

    _k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    _CreateEventW = _k32.CreateEventW
    _CreateEventW.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_wchar_p]
    _CreateEventW.restype = _HANDLE
    _OpenEventW = _k32.OpenEventW
    _OpenEventW.argtypes = [ctypes.c_uint32, ctypes.c_int, ctypes.c_wchar_p]
    _OpenEventW.restype = _HANDLE
    _SetEvent = _k32.SetEvent
    _SetEvent.argtypes = [_HANDLE]
    _SetEvent.restype = ctypes.c_int
    _ResetEvent = _k32.ResetEvent
    _ResetEvent.argtypes = [_HANDLE]
    _ResetEvent.restype = ctypes.c_int
    _CreateMutexW = _k32.CreateMutexW
    _CreateMutexW.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_wchar_p]
    _CreateMutexW.restype = _HANDLE
    _CloseHandle = _k32.CloseHandle
    _CloseHandle.argtypes = [_HANDLE]
    _CloseHandle.restype = ctypes.c_int
    _WaitForMultipleObjects = _k32.WaitForMultipleObjects
    _WaitForMultipleObjects.argtypes = [ctypes.c_uint32, ctypes.POINTER(_HANDLE), ctypes.c_int, ctypes.c_uint32]
    _WaitForMultipleObjects.restype = ctypes.c_uint32
    try:
        _sync = ctypes.WinDLL("api-ms-win-core-synch-l1-2-0", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
        _WaitOnAddress = _sync.WaitOnAddress
        _WakeByAddressAll = _sync.WakeByAddressAll
    except (OSError, AttributeError):  # before Windows 8: events only
        _WaitOnAddress = _WakeByAddressAll = None
    if _WaitOnAddress is not None:
        _WaitOnAddress.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32]
        _WaitOnAddress.restype = ctypes.c_int
        _WakeByAddressAll.argtypes = [ctypes.c_void_p]
        _WakeByAddressAll.restype = None
    _sigint_event = getattr(ctypes.pythonapi, "_PyOS_SigintEvent", None)
    if _sigint_event is not None:
        _sigint_event.restype = _HANDLE
        _sigint_event.argtypes = []


def _name(space: str, what: str) -> str:
    # The feed's file name is case-insensitive on Windows, kernel object names are not: every
    # spelling of a feed's name must lead to the same registry and events.
    return f"Local\\pricefeed-{space.lower()}-{what}"


def _ms(seconds: float) -> int:
    return max(0, min(int(seconds * 1000 + 0.999), 0xFFFFFFFE))


# -- the registry ---------------------------------------------------------------------------------
class _Registry:
    """The shared table of one space, mapped once per process."""

    def __init__(self, space: str) -> None:
        self.space = space
        self._mm = mmap.mmap(-1, REGISTRY_BYTES, tagname=_name(space, "wake"))  # type: ignore[call-arg,unused-ignore]
        self.q = memoryview(self._mm).cast("Q")
        self.users = 0

    @staticmethod
    def entry_word(i: int) -> int:
        return (64 + i * ENTRY_BYTES) // 8

    def claim(self, mask: Sequence[int]) -> Optional[_Entry]:
        """An entry of our own with this mask, or None when every entry is taken."""
        for i in range(ENTRIES):
            alive = _CreateMutexW(None, 0, _name(self.space, f"alive-{i}"))
            if not alive:
                continue
            if _last_error() == _ERROR_ALREADY_EXISTS:
                _CloseHandle(alive)
                continue
            event = _CreateEventW(None, 0, 0, _name(self.space, f"ev-{i}"))
            if not event:  # e.g. another user's publisher holds ev-i: not an entry we can use
                _CloseHandle(alive)
                continue
            entry = _Entry(self, i, alive, event)
            entry.set_mask(mask)
            return entry
        return None

    def bump(self) -> None:
        self.q[0] = int.from_bytes(secrets.token_bytes(8), "little") | 1


class _Entry:
    __slots__ = ("alive", "event", "fresh", "index", "mask", "reg")

    def __init__(self, reg: _Registry, index: int, alive: int, event: int) -> None:
        self.reg = reg
        self.index = index
        self.alive = alive
        self.event = event
        self.mask: Tuple[int, ...] = ()
        self.fresh = True

    def set_mask(self, mask: Sequence[int]) -> None:
        if tuple(mask) == self.mask:
            return
        q, base = self.reg.q, _Registry.entry_word(self.index)
        for k in range(_MASK_WORDS):
            q[base + 1 + k] = mask[k]
        q[base] = os.getpid()
        self.reg.bump()
        self.mask = tuple(mask)
        self.fresh = True

    def release(self) -> None:
        q, base = self.reg.q, _Registry.entry_word(self.index)
        q[base] = 0
        for k in range(_MASK_WORDS):
            q[base + 1 + k] = 0
        self.reg.bump()
        _CloseHandle(self.event)
        _CloseHandle(self.alive)  # the entry is free from here


_registries: Dict[str, _Registry] = {}
_lock = threading.RLock()


def _acquire_registry(space: str) -> _Registry:
    with _lock:
        reg = _registries.get(space)
        if reg is None:
            reg = _registries[space] = _Registry(space)
        reg.users += 1
        return reg


def _release_registry(reg: _Registry) -> None:
    with _lock:
        reg.users -= 1
        if reg.users == 0 and _registries.get(reg.space) is reg:
            del _registries[reg.space]
            reg.q.release()
            reg._mm.close()


def _mask_of(indices: Sequence[int]) -> List[int]:
    mask = [0] * _MASK_WORDS
    for i in indices:
        mask[i >> 6] |= 1 << (i & 63)
    return mask


# -- this process's writers and WaitOnAddress waiters ------------------------------------------------
_local_writers: Dict[str, int] = {}
_local_waiters: Dict[Tuple[str, int], Dict[int, int]] = {}  # (space, index) -> {address: count}


class _Notifier:
    """The publisher's side of one space: the entries it knows, their events open."""

    def __init__(self, reg: _Registry) -> None:
        self.reg = reg
        self.gen = -1
        self.targets: List[Tuple[int, int]] = []  # (mask as one int, event handle)
        self.events: Dict[int, int] = {}

    def _rescan(self) -> None:
        q = self.reg.q
        self.gen = q[0]
        targets = []
        for i in range(ENTRIES):
            base = _Registry.entry_word(i)
            if not q[base]:
                continue
            mask = q[base + 1] | q[base + 2] << 64 | q[base + 3] << 128 | q[base + 4] << 192
            if not mask:
                continue
            event = self.events.get(i)
            if event is None:
                event = _OpenEventW(_EVENT_MODIFY_STATE, 0, _name(self.reg.space, f"ev-{i}"))
                if not event:
                    continue  # its owner died and the event went with it
                self.events[i] = event
            targets.append((mask, event))
        self.targets = targets

    def signal(self, bits: int, indices: Tuple[int, ...]) -> None:
        if self.reg.q[0] != self.gen:
            self._rescan()
        for mask, event in self.targets:
            if mask & bits:
                _SetEvent(event)
        if _local_waiters:
            space = self.reg.space
            for index in indices:
                for address in list(_local_waiters.get((space, index), ())):
                    _WakeByAddressAll(address)

    def close(self) -> None:
        for event in self.events.values():
            _CloseHandle(event)
        self.events.clear()
        self.targets = []


_notifiers: Dict[str, _Notifier] = {}


class _Waiting:
    """A waiter's registration: claimed at its first wait, kept until close()."""

    def __init__(self, space: str) -> None:
        self.space = space
        self.reg: Optional[_Registry] = None
        self.entry: Optional[_Entry] = None
        self.full_until = 0.0

    def handles(self, indices: Sequence[int]) -> Optional[Tuple[int, bool]]:
        """(event to wait on, whether this is the registration's first wait), or None when the
        registry is full (then: poll)."""
        if self.reg is None:
            if time.monotonic() < self.full_until:
                return None
            try:
                self.reg = _acquire_registry(self.space)
            except OSError:  # another user's registry (Local\\ objects carry their creator's DACL)
                self.full_until = time.monotonic() + FULL_RETRY
                return None
        mask = _mask_of(indices)
        if self.entry is None:
            if time.monotonic() < self.full_until:
                return None
            self.entry = self.reg.claim(mask)
            if self.entry is None:
                self.full_until = time.monotonic() + FULL_RETRY
                return None
        else:
            self.entry.set_mask(mask)
        fresh = self.entry.fresh
        self.entry.fresh = False
        return self.entry.event, fresh

    def close(self) -> None:
        if self.entry is not None:
            self.entry.release()
            self.entry = None
        if self.reg is not None:
            _release_registry(self.reg)
            self.reg = None


def _wait_event(event: int, timeout: Optional[float]) -> bool:
    """Wait for ``event`` (and, in the main thread, the SIGINT event) up to ``timeout``."""
    handles = [event]
    sigint = 0
    if _sigint_event is not None and threading.current_thread() is threading.main_thread():
        sigint = _sigint_event()
        if sigint:
            _ResetEvent(sigint)
            handles.append(sigint)
    arr = (_HANDLE * len(handles))(*handles)
    ms = 0xFFFFFFFF if timeout is None else _ms(timeout)  # INFINITE
    rc = _WaitForMultipleObjects(len(handles), arr, 0, ms)
    if rc == _WAIT_OBJECT_0:
        return True
    if rc == _WAIT_OBJECT_0 + 1:
        return False  # Ctrl-C: back to Python, whose handler runs before the next bytecode
    if rc == _WAIT_TIMEOUT:
        return False
    raise ctypes.WinError(_last_error(), "WaitForMultipleObjects")  # type: ignore[attr-defined,unused-ignore]


def _wait_loop(changed: Any, waiting: _Waiting, indices: Sequence[int], timeout: Optional[float]) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        got = waiting.handles(indices)
        if changed():
            return True
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        if got is None:  # registry full: poll for a while, then try to register again
            if _polling._poll(changed, FULL_RETRY if left is None else min(left, FULL_RETRY)):
                return True
            continue
        event, fresh = got
        limit = left
        if fresh:
            limit = FIRST_WAIT_CAP if left is None else min(left, FIRST_WAIT_CAP)
        if _wait_event(event, limit):
            return True


class WindowsWord:
    def __init__(self, address: int, view: memoryview, space: str, index: int, writer: bool) -> None:
        self.address = address
        self._view = view
        self.space = space
        self.index = index
        self.writer = writer
        self._bit = 1 << index
        self._waiting = _Waiting(space)
        self._notifier: Optional[_Notifier] = None
        self._closed = False
        self._own_notifier = False
        if writer:
            with _lock:
                notifier = _notifiers.get(space)
                if notifier is None:
                    notifier = _notifiers[space] = _Notifier(_acquire_registry(space))
                _local_writers[space] = _local_writers.get(space, 0) + 1  # only once it can wake
            self._notifier = notifier
        self._finalizer = weakref.finalize(self, _Waiting.close, self._waiting)

    # -- waking (the publisher) --
    def _notify(self) -> _Notifier:
        if self._notifier is None:  # a waiter's object asked to wake: fine, just slower
            # Its own notifier: not a local writer (that would send this process's waiters to
            # WaitOnAddress, which the real publisher elsewhere never wakes), not shared.
            self._notifier = _Notifier(_acquire_registry(self.space))
            self._own_notifier = True
        return self._notifier

    def wake(self) -> None:
        self._notify().signal(self._bit, (self.index,))

    def wake_with(self, other: WindowsWord) -> None:
        self._notify().signal(self._bit | other._bit, (self.index, other.index))

    # -- waiting (a subscriber) --
    def wait(self, expected: int, timeout: Optional[float]) -> bool:
        view = self._view
        if view[0] != expected:
            return True
        if _WaitOnAddress is not None and _local_writers.get(self.space):
            return self._wait_local(expected, timeout)
        return _wait_loop(lambda: view[0] != expected, self._waiting, (self.index,), timeout)

    def _wait_local(self, expected: int, timeout: Optional[float]) -> bool:
        key = (self.space, self.index)
        box = ctypes.c_uint32(expected)
        deadline = None if timeout is None else time.monotonic() + timeout
        with _lock:  # (the publisher's thread reads these; a waiter thread may be leaving)
            waiters = _local_waiters.setdefault(key, {})
            waiters[self.address] = waiters.get(self.address, 0) + 1
        try:
            while True:
                if self._view[0] != expected:
                    return True
                if not _local_writers.get(self.space):
                    return True  # the publisher went: the caller looks again, and waits by event
                left = SLICE if deadline is None else min(deadline - time.monotonic(), SLICE)
                if left <= 0:
                    return False
                if _WaitOnAddress(self.address, ctypes.byref(box), 4, _ms(left)):
                    return True
                if _last_error() != _ERROR_TIMEOUT:
                    raise ctypes.WinError(_last_error(), "WaitOnAddress")  # type: ignore[attr-defined,unused-ignore]
        finally:
            with _lock:
                left_count = waiters.get(self.address, 1) - 1
                if left_count:
                    waiters[self.address] = left_count
                else:
                    waiters.pop(self.address, None)
                    if not waiters and _local_waiters.get(key) is waiters:
                        del _local_waiters[key]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finalizer()  # a registration of this object's waits, if any
        if self._own_notifier and self._notifier is not None:
            self._notifier.close()
            _release_registry(self._notifier.reg)
            self._notifier = None
        if self.writer:
            with _lock:
                n = _local_writers.get(self.space, 0) - 1
                if n > 0:
                    _local_writers[self.space] = n
                    return
                _local_writers.pop(self.space, None)
                notifier = _notifiers.pop(self.space, None)
            # Local waiters sleeping in WaitOnAddress: wake them to wait by event from now on.
            for (space, _), waiters in list(_local_waiters.items()):
                if space == self.space:
                    for address in list(waiters):
                        _WakeByAddressAll(address)
            if notifier is not None:
                notifier.close()
                _release_registry(notifier.reg)


class WindowsMulti:
    def __init__(self, words: Sequence[WindowsWord]) -> None:
        spaces: Set[str] = {w.space for w in words}
        if len(spaces) != 1 or not 1 <= len(words) <= 128:
            raise ValueError("a multi-wait takes 1 to 128 words of one feed")
        self._views = [w._view for w in words]
        self._indices = [w.index for w in words]
        self._waiting = _Waiting(spaces.pop())
        self._finalizer = weakref.finalize(self, _Waiting.close, self._waiting)

    def wait(self, expected: Sequence[int], timeout: Optional[float]) -> bool:
        views = self._views
        return _wait_loop(
            lambda: any(v[0] != e for v, e in zip(views, expected)), self._waiting, self._indices, timeout
        )

    def close(self) -> None:
        self._finalizer()


class _Windows:
    name = "windows"
    #: The words are not plain futexes: callers go through word() and multi() (the contract).
    futex_words = False

    def usable(self) -> bool:
        return _ON

    def word(self, address: int, view: memoryview, key: Any = None, writer: bool = False) -> WindowsWord:
        if key is None:
            raise ValueError("the windows backend names its events after the word: key is required")
        space, index = key
        if not 0 <= index <= MAX_INDEX:
            raise ValueError(f"word number must be 0 to {MAX_INDEX}: number={index}")
        return WindowsWord(address, view, space, index, writer)

    def can_wait_many(self) -> bool:
        return True

    def multi(self, words: Sequence[Any]) -> WindowsMulti:
        return WindowsMulti(words)

    def ring(self) -> None:
        return None  # no kernel wait that completes into a descriptor: see the contract


BACKEND = _Windows()
