"""The state file of ``--state``: where a restarted pool resumes, and what it must not run again.

It is a JSON object::

    {"format": "pricefeed-actions", "version": 1, "feed": "prices", "incarnation": 1234,
     "resume": 4070, "symbols": {"AAPL": 4075, "MSFT": 4068}}

``symbols`` maps a symbol to the sequence of its last completed action (it succeeded, or it
failed and the error policy gave up on it: either way it is never run again). ``resume`` is a
low-water mark: every change with a sequence <= it is finished, superseded, dropped and
reported, or was not wanted; a restart follows the feed from just after it.

Rule 1: the file is replaced, never rewritten in place: the new text goes to a temporary file in
the same directory, which is flushed to disk (fsync) and renamed over the old one, and then the
directory is flushed, so a crash at any moment leaves the old state or the new, whole.

Rule 2: a file that is not exactly this shape is refused with InvalidInput naming the file and
what was wrong (exit 7 on the command line), never half-used: the pool will not guess which
actions already ran.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from .._errors import InvalidInput, PricefeedError
from .._values import check_symbol, short_repr

__all__ = ["State", "load", "save", "check_path", "FORMAT", "VERSION"]

FORMAT = "pricefeed-actions"
VERSION = 1
#: A state file larger than this is refused unread: a million symbols take about 40 MB.
MAX_BYTES = 256 * 1024 * 1024
_KEYS = {"format", "version", "feed", "incarnation", "resume", "symbols"}


@dataclass
class State:
    feed: str
    incarnation: int
    resume: int = 0
    symbols: Dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "feed": self.feed,
                "incarnation": self.incarnation,
                "resume": self.resume,
                "symbols": self.symbols,
            },
            separators=(",", ":"),
        )


def check_path(path: str) -> str:
    """The path, absolute; InvalidInput if its directory is missing or it names a directory."""
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise InvalidInput(f"state file {path!r}: its directory {folder!r} does not exist")
    if os.path.isdir(full):
        raise InvalidInput(f"state file {path!r} is a directory")
    return full


def _bad(path: str, what: str) -> InvalidInput:
    return InvalidInput(f"state file {path!r} is not a pricefeed action state: {what}")


def _seq(path: str, name: str, value: Any) -> int:
    if type(value) is not int or value < 0:
        raise _bad(path, f"{name} must be a whole number >= 0: got {short_repr(value)}")
    return value


def load(path: str) -> Optional[State]:
    """The state saved at ``path``, or None if there is no file there."""
    try:
        # Non-blocking, so that a FIFO planted at the path cannot stall the open; then only a
        # regular file is read (not a FIFO, a device such as /dev/zero, or a directory).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PricefeedError(f"state file {path!r} cannot be read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _bad(path, "it is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PricefeedError(f"state file {path!r} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:
        raise _bad(path, f"it is larger than {MAX_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad(path, "it is not UTF-8 text") from None
    except RecursionError:
        raise _bad(path, "it is not valid JSON (nested too deep)") from None
    except ValueError as exc:
        raise _bad(path, f"it is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _bad(path, f"it must be a JSON object, not {type(data).__name__}")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise _bad(
            path,
            f"format must be {FORMAT!r} version {VERSION}: got {short_repr(data.get('format'))} "
            f"version {short_repr(data.get('version'))}",
        )
    unknown = sorted(set(data) - _KEYS)
    missing = sorted(_KEYS - set(data))
    if unknown or missing:
        raise _bad(path, f"unknown keys {unknown}" if unknown else f"missing keys {missing}")
    feed = data["feed"]
    if not isinstance(feed, str) or not feed:
        raise _bad(path, f"feed must be a feed name: got {short_repr(feed)}")
    incarnation = _seq(path, "incarnation", data["incarnation"])
    resume = _seq(path, "resume", data["resume"])
    symbols = data["symbols"]
    if not isinstance(symbols, dict):
        raise _bad(path, f"symbols must be an object of symbol: seq, not {type(symbols).__name__}")
    for symbol, seq in symbols.items():
        try:
            check_symbol(symbol)
        except InvalidInput:
            raise _bad(path, f"symbols has a key that is no symbol: {short_repr(symbol)}") from None
        _seq(path, f"the seq of symbol {symbol!r}", seq)
    return State(feed, incarnation, resume, dict(symbols))


def save(path: str, state: State) -> None:
    """Replace the file at ``path`` with ``state``, atomically and durably (Rule 1)."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    data = state.to_json().encode("utf-8")
    # O_EXCL: never write through something already at the temporary name (a symlink another
    # user planted, say); what is there is removed first: a leftover of a run that died.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:
            os.unlink(tmp)
            fd = os.open(tmp, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        sync_folder(folder)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise PricefeedError(f"state file {path!r} cannot be written: {exc.strerror or exc}") from None


def sync_folder(folder: str) -> None:
    """Flush the rename to disk. Windows cannot open a directory: there the rename is what
    MoveFileEx made durable."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
