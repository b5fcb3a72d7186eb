"""Wait/wake backends: how a subscriber sleeps until the publisher bumps the wake word.

The contract, which every backend implements and ``tests/test_wait_conformance.py`` checks for
each of them:

``backend.word(address, view) -> WakeWord``
    ``address`` is the address of an aligned 32-bit word inside a shared mapping, ``view`` a
    one-item ``memoryview`` of format ``"I"`` over the same word. A read-only mapping must be
    enough for waiting: subscribers never get write access to a feed.

``WakeWord.wait(expected, timeout) -> bool``
    Sleep without using CPU while the word holds ``expected``. Returns True as soon as the word
    differs or a wake-up arrives (which may be spurious: the caller re-checks its condition),
    False when ``timeout`` seconds (None: no limit) pass first. A signal delivered to the
    thread does not shorten the timeout; a Python signal handler that raises (Ctrl-C) does
    end the wait, promptly, with that exception.

``WakeWord.wake() -> None``
    Wake every process waiting on the word. The caller stores the new value first, then always
    calls wake(): the kernel's wake path orders the two, so a waiter that loaded the old value
    either sleeps and is woken or sees the new value and never sleeps. No waiter count is kept,
    because keeping one would need subscribers to write to the feed.

``WakeWord.wake_with(other) -> None``
    Wake every waiter of this word and of ``other``, in one system call where the platform has
    one. ``other`` must be writable by the caller and hold a value below 2**31.

``backend.multi(words) -> MultiWait`` and ``MultiWait.wait(expected, timeout) -> bool``
    Sleep until any of up to 128 words differs from its expected value or is woken; the same
    return values as ``WakeWord.wait``. ``backend.can_wait_many()`` says whether this is a
    real kernel wait here; where it is not (Linux before 5.16), callers wait on one word that
    every change wakes instead.

Backends are chosen by feature test, never by a platform ``if`` in the publisher or subscriber:
``select(name)`` returns the named one, or the best that works here. One module per mechanism
sits beside this file.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Protocol, Sequence

from .._errors import UnsupportedPlatform

__all__ = ["WakeWord", "MultiWait", "Backend", "select", "available"]


class WakeWord(Protocol):
    def wait(self, expected: int, timeout: Optional[float]) -> bool: ...

    def wake(self) -> None: ...

    def wake_with(self, other: Any) -> None: ...


class MultiWait(Protocol):
    def wait(self, expected: Sequence[int], timeout: Optional[float]) -> bool: ...


class Backend(Protocol):
    name: str

    def usable(self) -> bool: ...

    def word(self, address: int, view: memoryview) -> WakeWord: ...

    def can_wait_many(self) -> bool: ...

    def multi(self, words: Sequence[Any]) -> MultiWait: ...


def _candidates() -> Dict[str, Backend]:
    from . import _futex_linux, _polling

    return {"futex": _futex_linux.BACKEND, "polling": _polling.BACKEND}


def available() -> Dict[str, bool]:
    """Every backend this build knows, and whether it works on this machine."""
    return {name: b.usable() for name, b in _candidates().items()}


def select(name: Optional[str] = None) -> Backend:
    """The backend called ``name``, or when None the first that works here (futex, then polling)."""
    found = _candidates()
    if name is not None:
        if name not in found:
            raise UnsupportedPlatform(f"unknown wait backend {name!r}; expected one of {sorted(found)}")
        if not found[name].usable():
            raise UnsupportedPlatform(f"wait backend {name!r} does not work on this machine")
        return found[name]
    for backend in found.values():
        if backend.usable():
            return backend
    raise UnsupportedPlatform("no wait backend works on this machine")  # pragma: no cover
