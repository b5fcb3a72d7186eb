"""What every platform's segment module shares: feed names, and pinning a mapping's address.

The address of a mapping comes from ``PyObject_GetBuffer``, which works on a read-only mmap
(``ctypes.c_char.from_buffer`` refuses one) and pins the mapping until released.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
from typing import Optional, Protocol, Union

from .._errors import FeedBusy, FeedNotTrusted, InvalidInput, InvalidName, PricefeedError

#: A feed's segment is named PREFIX + feed name ("/" first where POSIX wants it). macOS allows
#: 31 bytes with the slash, so a feed name is at most NAME_MAX characters on every platform:
#: a name that works here works there.
PREFIX = "pf-"
NAME_MAX = 31 - 1 - len(PREFIX)
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")

#: How long a would-be publisher retries a lock held for a moment by ``pricefeed rm`` or by a
#: subscriber's liveness probe.
LOCK_RETRY_SECONDS = 0.05


def check_name(feed: str) -> str:
    if not isinstance(feed, str) or not feed or len(feed) > NAME_MAX or not NAME_RE.match(feed):
        raise InvalidName(
            f"feed name must be 1 to {NAME_MAX} characters of A-Z a-z 0-9 . _ - not starting with . or -: feed={feed!r}"
        )
    return feed


def segment_name(feed: str) -> str:
    """The POSIX shared-memory name of a feed; Windows uses it, without the slash, as a file name."""
    return "/" + PREFIX + check_name(feed)


def busy_error(feed: str, pid: Optional[int]) -> FeedBusy:
    """The refusal of a second publisher, naming the holder when the platform can."""
    who = f"pid {pid}" if pid else "another process"
    return FeedBusy(
        f"feed {feed!r} already has a publisher ({who}); a feed has one publisher at a time", holder_pid=pid or None
    )


# -- who may be trusted with a feed --------------------------------------------------------------
#
# A feed's name is in a namespace every local user shares (/dev/shm, or the lock directory),
# so the segment found under a name may be another user's: made first, on purpose, to be
# written by them while we publish into it, or read by our subscribers as if it were ours. So
# a publisher opens only its own user's segments (or those of the user it was told to trust),
# and no role opens a segment every user may write, unless told to.

Owner = Union[str, int, None]


class _Owned(Protocol):
    uid: Optional[int]
    mode: Optional[int]


def user_name(uid: Optional[int]) -> str:
    """'alice (uid 1000)', or 'uid 1234' for a uid with no name here."""
    if uid is None:
        return "an unknown user"
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def resolve_owner(owner: Owner) -> Optional[int]:
    """The uid meant by ``owner``: a user name or a uid; None stays None."""
    if owner is None:
        return None
    if isinstance(owner, int) and not isinstance(owner, bool) and owner >= 0:
        return owner
    if isinstance(owner, str) and owner:
        if owner.isdigit():
            return int(owner)
        try:
            import pwd

            return pwd.getpwnam(owner).pw_uid
        except ImportError:
            raise InvalidInput(
                f"owner cannot be named on this platform (it has no user database): owner={owner!r}"
            ) from None
        except KeyError:
            pass
    raise InvalidInput(f"owner must be the name or uid of a user of this machine: owner={owner!r}")


def check_trust(seg: _Owned, feed: str, publisher: bool, owner: Owner, allow_world_writable: bool) -> None:
    """Raise FeedNotTrusted, before anything is read or written, if the segment is not one this
    role may use: for a publisher, one owned by ``owner`` (default: its own user); for any
    role, one owned by ``owner`` if given; and, unless ``allow_world_writable``, one that users
    other than its owner and group cannot write. A platform that cannot tell (uid None) is
    trusted: there the feeds live in a directory of the user's own (docs/platforms.md)."""
    if seg.uid is None:
        return
    want = resolve_owner(owner)
    if want is None and publisher:
        want = os.geteuid() if hasattr(os, "geteuid") else None
    mode = seg.mode or 0
    if want is not None and seg.uid != want:
        told = "" if owner is None else " (as it was told)"
        them = _owner_hint(seg.uid)
        hint = (
            f"pass owner={them!r} (--owner {them}) if that user's feed is meant to be shared"
            if publisher
            else "check the feed's name, or who made it"
        )
        raise FeedNotTrusted(
            f"feed {feed!r} belongs to {user_name(seg.uid)} (mode {mode:04o}), not to {user_name(want)}; "
            f"a {'publisher' if publisher else 'subscriber'} opens only {user_name(want)}'s feeds{told}: {hint}"
        )
    if mode & 0o002 and not allow_world_writable:
        raise FeedNotTrusted(
            f"feed {feed!r} (owner {user_name(seg.uid)}) may be written by every user (mode {mode:04o}), so any local "
            f"user could change its prices; its owner can run chmod o-w on it (or re-create it with a mode such as "
            "0644), or pass allow_world_writable=True (--allow-world-writable) to use it anyway"
        )


def _owner_hint(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def is_feed_entry(entry: str) -> bool:
    """Whether a directory entry (no slash) is a feed's segment."""
    return entry.startswith(PREFIX) and NAME_RE.match(entry[len(PREFIX) :]) is not None and len(entry) <= 30


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_GetBuffer = ctypes.pythonapi.PyObject_GetBuffer
_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_GetBuffer.restype = ctypes.c_int
_ReleaseBuffer = ctypes.pythonapi.PyBuffer_Release
_ReleaseBuffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_ReleaseBuffer.restype = None


class Pin:
    """Holds a buffer of a mapping: its address stays valid (and the mapping cannot be closed
    under it) until ``release()``."""

    __slots__ = ("_buf", "address")

    def __init__(self, mm: mmap.mmap) -> None:
        buf = _PyBuffer()
        if _GetBuffer(mm, ctypes.byref(buf), 0) != 0:  # pragma: no cover
            raise PricefeedError("could not take the address of the mapping")
        self._buf: _PyBuffer | None = buf
        self.address = int(buf.buf or 0)

    def release(self) -> None:
        if self._buf is not None:
            _ReleaseBuffer(ctypes.byref(self._buf))
            self._buf = None
