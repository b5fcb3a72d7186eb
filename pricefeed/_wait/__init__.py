"""Wait/wake backends: how a subscriber sleeps until the publisher bumps the wake word.

The contract, which every backend implements and ``tests/backends/test_wait_conformance.py`` checks for
each of them:

``backend.word(address, view, key, writer=False) -> WakeWord``
    ``address`` is the address of an aligned 32-bit word inside a shared mapping, ``view`` a
    one-item ``memoryview`` of format ``"I"`` over the same word. A read-only mapping must be
    enough for waiting: subscribers never get write access to a feed. ``key`` (a ``WordKey``)
    names the word the same way in every process: ``space`` is one per segment (the feed's
    name and incarnation), ``number`` the word within it, 0 to ``MAX_INDEX``. Backends whose
    kernel keys waits by address ignore it; the Windows backend, whose cross-process wake-ups
    are named events, needs it. ``writer`` is True for the publisher's words.

``WakeWord.close()`` and ``MultiWait.close()``
    Give back what the object holds (a registration, a handle). Idempotent; the object is not
    used afterwards. Backends that hold nothing make it a no-op.

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

``backend.ring() -> Optional[WaitRing]``
    Where the kernel can wait on words without a thread and report the completion on a
    descriptor (Linux io_uring's futex waits, 6.7 and later, on x86-64), a new ``WaitRing``;
    None elsewhere. ``WaitRing.arm(words, expected, token)`` starts a wait on up to 128 of
    this backend's words that completes when any differs from its expected value or is woken,
    at once if one already differs (``token`` from 1 to 2**64 - 1); ``fileno()`` becomes
    readable when waits have completed; ``done()`` returns the tokens of those completed since
    the last call, each once; ``cancel(token)`` cancels a wait still armed (its token and a 0
    may then come out of ``done()``: a caller lets go of the token first and ignores both);
    ``close()`` cancels what is still armed and closes the descriptor. An event loop watches
    the descriptor, so its subscriptions sleep with no thread (``_roles.loopwait``).

``backend.futex_words`` (a capability, not a method)
    True when the words' waits and wake-ups are the kernel's futex on the word's address in
    this process, and nothing else: a caller that holds the address may then FUTEX_WAIT,
    futex_waitv and FUTEX_WAKE(_OP) on it directly, from C, and be woken by (and wake) this
    backend's waiters and wakers in every process. The C core does so on its hot paths (a
    commit that wakes in the same call, a follow loop that sleeps without the GIL); where it
    is False, callers wait and wake through ``word()`` and ``multi()`` only. Roles ask this,
    never a backend's name.

Backends are chosen by feature test, never by a platform ``if`` in the publisher or subscriber:
``select(name)`` returns the named one, or the best that works here. One module per mechanism
sits beside this file.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, NamedTuple, Optional, Protocol, Sequence

from .._errors import UnsupportedPlatform

__all__ = [
    "WakeWord",
    "MultiWait",
    "WaitRing",
    "Backend",
    "WordKey",
    "MAX_INDEX",
    "select",
    "available",
    "native",
    "waker",
    "ENV",
]

#: The highest ``WordKey.number``: a feed uses 0-127 for its wake table and 128 for the header.
MAX_INDEX = 255


class WordKey(NamedTuple):
    space: str
    number: int


class WakeWord(Protocol):
    def wait(self, expected: int, timeout: Optional[float]) -> bool: ...

    def wake(self) -> None: ...

    def wake_with(self, other: Any) -> None: ...

    def close(self) -> None: ...


class MultiWait(Protocol):
    def wait(self, expected: Sequence[int], timeout: Optional[float]) -> bool: ...

    def close(self) -> None: ...


class WaitRing(Protocol):
    def fileno(self) -> int: ...

    def arm(self, words: Sequence[Any], expected: Sequence[int], token: int) -> None: ...

    def done(self) -> List[int]: ...

    def cancel(self, token: int) -> None: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    futex_words: bool

    def usable(self) -> bool: ...

    def word(self, address: int, view: memoryview, key: WordKey, writer: bool = False) -> WakeWord: ...

    def can_wait_many(self) -> bool: ...

    def multi(self, words: Sequence[Any]) -> MultiWait: ...

    def ring(self) -> Optional[WaitRing]: ...


#: The environment variable that picks a backend when the code does not (``backend=None``):
#: ``PRICEFEED_WAIT=polling`` makes every subscriber poll, for instance.
ENV = "PRICEFEED_WAIT"


def _candidates() -> Dict[str, Backend]:
    """Every backend this build has, best first; each module imports on every platform and
    says through ``usable()`` whether it works on this one."""
    from . import _darwin, _freebsd, _futex_linux, _polling, _windows

    found: Dict[str, Backend] = {}
    for backend in (
        _futex_linux.BACKEND,
        _windows.BACKEND,
        _darwin.BACKEND,
        _freebsd.BACKEND,
        _polling.BACKEND,
    ):
        found[backend.name] = backend
    return found


def available() -> Dict[str, bool]:
    """Every backend this build knows, and whether it works on this machine."""
    return {name: b.usable() for name, b in _candidates().items()}


def native() -> Optional[Backend]:
    """The kernel-wait backend that works here, or None where only polling does."""
    for backend in _candidates().values():
        if backend.name != "polling" and backend.usable():
            return backend
    return None


def waker(name: Optional[str] = None) -> Backend:
    """The backend a publisher wakes with: ``select(name)``, except that polling is replaced
    by the kernel backend wherever one works. Subscribers choose how they wait, each for
    itself; the publisher must wake the ones that sleep in the kernel whatever it was asked."""
    chosen = select(name)
    if chosen.name == "polling":
        return native() or chosen
    return chosen


def select(name: Optional[str] = None) -> Backend:
    """The backend called ``name``; when None, the one named by ``$PRICEFEED_WAIT``, or else the
    first that works here (the platform's kernel wait, then polling)."""
    found = _candidates()
    if name is None:
        name = os.environ.get(ENV) or None
    if name is not None:
        if name not in found:
            raise UnsupportedPlatform(f"unknown wait backend {name!r}; expected one of {sorted(found)}")
        if not found[name].usable():
            raise UnsupportedPlatform(
                f"wait backend {name!r} does not work on this machine; the ones that do: "
                f"{sorted(n for n, b in found.items() if b.usable())}"
            )
        return found[name]
    for backend in found.values():
        if backend.usable():
            return backend
    raise UnsupportedPlatform("no wait backend works on this machine")  # pragma: no cover
