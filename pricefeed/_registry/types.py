"""What a tool reads from a feed's subscriber registry: one ReaderInfo per live subscriber."""

from __future__ import annotations

from typing import List, NamedTuple, Optional

#: A subscriber's state, as the registry words say it.
IDLE, WAITING, WORKING = 0, 1, 2
STATE_NAMES = ("idle", "waiting", "working")


class ReaderInfo(NamedTuple):
    """One registered subscriber, as its entry says (untrusted: validated, never acted on)."""

    #: Index of its entry in the registry.
    slot: int
    pid: int
    #: The optional name it gave (``Subscriber(..., label=...)``, ``subscribe --label``), or None.
    label: Optional[str]
    #: The user id it runs as, as its entry says.
    uid: int
    #: "idle" (attached, not following), "waiting" (blocked for its next change) or "working"
    #: (holding a change it was given).
    state: str
    #: The last change it has dealt with: every change up to this one was delivered to it or
    #: passed over as not asked for.
    seq: int
    #: Changes (quotes) given to it, gaps reported to it, and the changes those gaps missed.
    delivered: int
    gaps: int
    missed: int
    #: Wall-clock times (ns since the epoch): when it registered, and when it entered ``state``.
    registered_ns: int
    state_ns: int
    #: How it follows: newest value per symbol only; some symbols only; from asyncio.
    conflate: bool
    filtered: bool
    is_async: bool
    #: Changes published after ``seq`` that it has not dealt with yet (0 for a subscriber to
    #: some symbols that is waiting: the changes of other symbols are not its concern); None
    #: while it is idle.
    lag: Optional[int]
    #: How long the oldest of those changes has waited, in seconds (0.0 with no lag; None
    #: while idle, or when the ring no longer holds that change: see ``lag_lower_bound``).
    lag_seconds: Optional[float]
    #: True when the oldest change it has not dealt with has left the ring: ``lag_seconds`` is
    #: then the age of the oldest change the ring still holds, a lower bound (it will see a Gap).
    lag_lower_bound: bool


class Readers(NamedTuple):
    """The feed's registry as a tool sees it."""

    #: Whether a registry was found and could be read: with False, ``reason`` says why and
    #: ``entries`` is empty (subscribers still work, unregistered).
    available: bool
    reason: Optional[str]
    #: The live subscribers, by slot.
    entries: List[ReaderInfo]
    #: How many entries the registry has room for.
    capacity: int
    #: Entries left by processes that are gone (reclaimed by the next subscriber to register).
    dead: int
    #: Entries that failed validation (corrupt or hostile): skipped, counted.
    invalid: int
