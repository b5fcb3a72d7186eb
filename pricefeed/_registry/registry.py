"""A feed's subscriber registry: created by the publisher, an entry per subscriber, read by tools.

Who may do what, and why:

* The publisher creates the registry with the feed (and when it takes over a feed without
  one, or with one left by an earlier feed of the name, or with another mode than the feed's),
  owned by the feed's owner and with the feed's own mode. It is built under a temporary name and
  renamed into place, so nobody ever opens a registry whose header is still being written.
  Nothing on the publish path touches it.
* A subscriber registers only if it may write the registry, which is exactly who may write
  the feed; it refuses a registry that more users may write than the feed. Letting every reader
  write it would let any of them shrink the file, and every registered subscriber would die of
  SIGBUS at its next store into a page that is gone; the same power over the feed is already
  theirs. Readers that may not write it run unregistered.
* **An entry is held by a lock**: its subscriber holds an open-file-description write lock
  (``F_OFD_SETLK``) on the entry's bytes for as long as it is registered. Taking that lock is
  the claim (two claimers cannot both get it), and the kernel drops it when the subscriber's
  process dies, whatever the signal, so an entry whose lock nobody holds is free, whatever it
  says. Liveness never depends on a pid, which is reused, means nothing in another pid
  namespace (a container), and stays with a zombie or across an exec; the pid and start time
  an entry records say who it is, not whether it lives. (These locks belong to the open file
  description, not to the process: closing some other descriptor of the file does not drop
  them, as it would a classic fcntl lock.)
* Every reader treats the registry as untrusted: the file must be a regular file of the
  feed's owner, of a size the header accounts for and within bounds; the header must name this
  incarnation of the feed; each entry is checked word by word, and an entry that fails is
  counted, not shown. Tools read it with ``pread``, never a mapping, so a file shrunk under them
  cannot kill them. Nothing read from it is ever acted on.

POSIX shared memory outside Linux (macOS, FreeBSD) is not in a file system, and neither those
nor Windows have open-file-description locks: there, for now, subscribers run unregistered and
tools say so.
"""

from __future__ import annotations

import mmap
import os
import secrets
import stat
import struct
import sys
import time
import weakref
from typing import Callable, List, NamedTuple, Optional, Tuple

from .._errors import InvalidInput
from .._protocol.ordering import fence_release
from .._segment.common import check_name
from . import layout as R
from .procs import start_time
from .types import IDLE, STATE_NAMES, WAITING, WORKING

_LINUX = sys.platform.startswith("linux")
SHM_DIR = "/dev/shm"
#: Never follow a link, never block (a FIFO under the name), never take a terminal. (getattr:
#: Windows has none of them, and never opens a registry.)
_OPEN_FLAGS = sum(getattr(os, flag, 0) for flag in ("O_CLOEXEC", "O_NOFOLLOW", "O_NONBLOCK", "O_NOCTTY"))
#: The largest pid a Linux system can give (PID_MAX_LIMIT).
PID_MAX = 1 << 22
UNSUPPORTED = "the subscriber registry is not available on this platform yet"
#: ``struct flock`` on Linux (x86-64 and aarch64 alike): type, whence, start, len, pid.
_FLOCK = struct.Struct("hhxxxxqqixxxx")
#: A temporary file a publisher died before renaming into place is removed after this long.
STALE_TEMP_SECONDS = 60.0


class Unavailable(Exception):
    """Why there is no registry to register in or to read (a sentence)."""


def path(feed: str) -> str:
    return f"{SHM_DIR}/{R.PREFIX}{check_name(feed)}"


def check_label(label: object) -> Optional[str]:
    """A subscriber's label: None, or 1 to LABEL_MAX bytes of printable UTF-8."""
    if label is None:
        return None
    if not isinstance(label, str) or not label or not label.isprintable() or len(label.encode()) > R.LABEL_MAX:
        raise InvalidInput(f"label must be 1 to {R.LABEL_MAX} bytes of printable text (UTF-8): label={label!r}"[:200])
    return label


# -- entry locks ------------------------------------------------------------------------------------
def _entry_lock(fd: int, slot: int, command: int, kind: int) -> int:
    """fcntl ``command`` (F_OFD_SETLK, F_OFD_GETLK) for ``kind`` of lock on entry ``slot``'s
    bytes: the lock type found (GETLK), or raises OSError (SETLK refused)."""
    import fcntl  # here: Windows has none, and never gets this far

    got = fcntl.fcntl(fd, command, _FLOCK.pack(kind, os.SEEK_SET, R.entry_offset(slot), R.SLOT_SIZE, 0))
    return int(_FLOCK.unpack(got)[0])


def _take(fd: int, slot: int) -> bool:
    """Take entry ``slot``'s lock, at once or not at all."""
    import fcntl

    try:
        _entry_lock(fd, slot, fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
    except OSError:  # EAGAIN/EACCES: somebody holds it (a live subscriber, or anyone's read lock)
        return False
    return True


def _held(fd: int, slot: int) -> bool:
    """Whether anyone holds a lock on entry ``slot``: whether its subscriber lives."""
    import fcntl

    return _entry_lock(fd, slot, fcntl.F_OFD_GETLK, fcntl.F_WRLCK) != fcntl.F_UNLCK


# -- the publisher's side -------------------------------------------------------------------------
def ensure(feed: str, incarnation: int, mode: int, owner: Optional[int]) -> Optional[str]:
    """Make sure the feed has a registry for ``incarnation``, owned by the feed's ``owner`` with
    the feed's ``mode``: kept if it has one, else created (replacing one of another incarnation
    or mode, or a damaged one). Only the feed's owner makes one: a registry of another user
    would be refused by every subscriber. Returns None, or why there is none; never raises for
    the registry's sake (a feed works without it)."""
    if not _LINUX:
        return UNSUPPORTED
    try:
        return _ensure(feed, incarnation, mode & 0o666, owner)
    except (OSError, ValueError) as exc:
        return f"cannot make the registry: {exc}"


def _ensure(feed: str, incarnation: int, mode: int, owner: Optional[int]) -> Optional[str]:
    if owner is not None and owner != os.geteuid():
        return "the registry is made by the feed's owner"
    final = path(feed)
    try:
        found = _read_header(final, os.geteuid())
        if found.incarnation == incarnation and found.mode == mode:
            return None
    except Unavailable:
        pass
    _remove_stale_temps(feed)
    tmp = f"{SHM_DIR}/.{R.PREFIX}{feed}.{secrets.token_hex(8)}"
    fd = os.open(tmp, _OPEN_FLAGS | os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        if sys.platform.startswith("linux"):  # (spelled out for mypy)
            os.posix_fallocate(fd, 0, R.size(R.SLOTS))  # reserved: a store never hits a missing page
        header = bytearray(R.HEADER_SIZE)
        for name, value in (
            ("magic", R.MAGIC), ("version", R.VERSION), ("slot_size", R.SLOT_SIZE), ("slots", R.SLOTS),
            ("incarnation", incarnation), ("created_ns", time.time_ns()),
        ):  # fmt: skip
            header[R.H[name] : R.H[name] + 8] = value.to_bytes(8, "little")
        os.pwrite(fd, bytes(header), 0)
        os.rename(tmp, final)  # atomic; refused over another user's file (sticky /dev/shm)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
    return None


def _remove_stale_temps(feed: str) -> None:
    """Temporary registries of this feed that a publisher killed mid-creation left behind."""
    prefix = f".{R.PREFIX}{feed}."
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        try:
            st = os.lstat(f"{SHM_DIR}/{name}")
            if st.st_uid == os.geteuid() and time.time() - st.st_mtime > STALE_TEMP_SECONDS:
                os.unlink(f"{SHM_DIR}/{name}")
        except OSError:
            pass


def remove(feed: str, incarnation: Optional[int] = None) -> None:
    """Remove the feed's registry (with the feed), quietly. With ``incarnation``, only that
    incarnation's: a feed created anew under the name meanwhile keeps its own."""
    if not _LINUX:
        return
    where = path(feed)
    if incarnation is not None:
        try:
            if _read_header(where, None).incarnation != incarnation:
                return
        except Unavailable:
            pass  # damaged, or not a registry at all: nobody's, and in the way
    try:
        os.unlink(where)
    except OSError:
        pass


# -- opening ----------------------------------------------------------------------------------
class Header(NamedTuple):
    slots: int
    incarnation: int
    size: int
    uid: int
    mode: int


def _open(where: str, writable: bool) -> int:
    if not _LINUX:
        raise Unavailable(UNSUPPORTED)
    try:
        return os.open(where, _OPEN_FLAGS | (os.O_RDWR if writable else os.O_RDONLY))
    except FileNotFoundError:
        raise Unavailable("the feed has no registry (made by a publisher without one?)") from None
    except PermissionError:
        raise Unavailable("no permission to " + ("write" if writable else "read") + " the registry") from None
    except OSError as exc:
        raise Unavailable(f"cannot open the registry: {exc.strerror or exc}") from None


def _check(fd: int, where: str, owner: Optional[int]) -> Header:
    """The registry's header, from a descriptor of it: checked, or Unavailable saying why."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise Unavailable(f"{where} is not a regular file: ignored")
    if owner is not None and st.st_uid != owner:
        raise Unavailable(
            f"the registry belongs to another user (uid {st.st_uid}) than the feed (uid {owner}): ignored"
        )
    if not R.HEADER_SIZE <= st.st_size <= R.size(R.MAX_SLOTS):
        raise Unavailable(f"the registry is damaged: {st.st_size} bytes")
    raw = os.pread(fd, R.HEADER_SIZE, 0)
    if len(raw) < R.HEADER_SIZE:
        raise Unavailable("the registry is damaged: its header was cut short")
    words = {name: int.from_bytes(raw[off : off + 8], "little") for name, off, _ in R.HEADER}
    if words["magic"] != R.MAGIC:
        raise Unavailable("the registry is damaged: no registry magic")
    if words["version"] != R.VERSION or words["slot_size"] != R.SLOT_SIZE:
        raise Unavailable(
            f"the registry has layout version {words['version']}; this pricefeed reads version {R.VERSION}"
        )
    if not 1 <= words["slots"] <= R.MAX_SLOTS or R.size(words["slots"]) > st.st_size:
        raise Unavailable(f"the registry is damaged: {words['slots']} entries in {st.st_size} bytes")
    return Header(words["slots"], words["incarnation"], R.size(words["slots"]), st.st_uid, stat.S_IMODE(st.st_mode))


def _read_header(where: str, owner: Optional[int]) -> Header:
    fd = _open(where, writable=False)
    try:
        return _check(fd, where, owner)
    finally:
        os.close(fd)


def _current(fd: int, feed: str, incarnation: int, owner: Optional[int]) -> Header:
    found = _check(fd, path(feed), owner)
    if found.incarnation != incarnation:
        raise Unavailable("the registry belongs to an earlier feed of this name (its publisher has not renewed it)")
    return found


# -- a subscriber's entry -------------------------------------------------------------------------
_SEQ, _DELIVERED = R.W["seq"], R.W["delivered"]
_STATE, _STATE_NS = R.W["state"], R.W["state_ns"]
#: Every registration of this process, so that a forked child can let go of them (below).
_LIVE: weakref.WeakSet[Registration] = weakref.WeakSet()


class Registration:
    """This subscriber's entry: claimed at open (its lock taken), its activity words stored as
    they change, freed at close. The subscriber keeps its own counts and only ever stores them:
    what the registry holds is never read back (another writer of the feed could change it)."""

    def __init__(self, fd: int, mm: mmap.mmap, slot: int, cell: memoryview) -> None:
        self._fd = fd
        self._mm: Optional[mmap.mmap] = mm
        self.slot = slot
        self.cell: Optional[memoryview] = cell
        self.pid = os.getpid()
        self.state = IDLE
        self.delivered = 0
        self.gaps = 0
        self.missed = 0
        _LIVE.add(self)

    @classmethod
    def claim(
        cls, feed: str, incarnation: int, owner: Optional[int], feed_mode: Optional[int], label: Optional[str]
    ) -> Registration:
        fd = _open(path(feed), writable=True)
        try:
            found = _current(fd, feed, incarnation, owner)
            if feed_mode is not None and found.mode & 0o222 & ~feed_mode:
                raise Unavailable(
                    f"the registry lets more users write it (mode {found.mode:04o}) than the feed "
                    f"(mode {feed_mode:04o}): ignored"
                )
            mm = mmap.mmap(fd, found.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                slot, cell = _claim(fd, mm, found.slots, label)
            except BaseException:
                mm.close()
                raise
        except BaseException:
            os.close(fd)  # and with it any entry lock taken
            raise
        return cls(fd, mm, slot, cell)

    def enter(self, state: int) -> None:
        cell = self.cell
        if cell is not None:
            self.state = state
            cell[_STATE] = state
            cell[_STATE_NS] = time.time_ns()

    def give(self, seq: int, count: int) -> None:
        """``count`` more quotes were given, the last of them change ``seq``, which the
        subscriber is now working on."""
        cell = self.cell
        if cell is not None:
            self.delivered += count
            cell[_SEQ] = seq
            cell[_DELIVERED] = self.delivered
            if self.state != WORKING:
                self.enter(WORKING)

    def count(self, count: int) -> None:
        """``count`` more quotes were given."""
        cell = self.cell
        if cell is not None:
            self.delivered += count
            cell[_DELIVERED] = self.delivered

    def waiting(self, cursor: int, count: int) -> None:
        """``count`` more quotes were given; every change up to ``cursor`` is dealt with, and
        the subscriber waits for the next."""
        cell = self.cell
        if cell is not None:
            if count:
                self.delivered += count
                cell[_DELIVERED] = self.delivered
            cell[_SEQ] = cursor
            if self.state != WAITING:
                self.enter(WAITING)

    def follow_flags(self, flags: int) -> None:
        if self.cell is not None:
            self.cell[R.W["flags"]] = flags

    def gap(self, missed: int) -> None:
        cell = self.cell
        if cell is not None:
            self.gaps += 1
            self.missed += missed
            cell[R.W["gaps"]] = self.gaps
            cell[R.W["missed"]] = self.missed

    def _let_go(self) -> None:
        """In a forked child: the entry is the parent's. Store nothing more into it, and never
        free it (the child's copy of the descriptor shares the parent's lock: closing it leaves
        the lock to the parent)."""
        self.cell = None

    def close(self) -> None:
        cell, self.cell = self.cell, None
        if cell is not None and os.getpid() == self.pid:
            cell[R.W["pid"]] = 0  # free, as readers see it; the lock goes with the descriptor below
        if cell is not None:
            cell.release()
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _after_fork_in_child() -> None:
    for reg in list(_LIVE):
        reg._let_go()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _claim(fd: int, mm: mmap.mmap, slots: int, label: Optional[str]) -> Tuple[int, memoryview]:
    """Take the first entry whose lock nobody holds, and write this process's identity into it,
    bracketed by ``gen``. Entries that name a process are tried first: those whose subscriber
    died are taken again rather than left to pile up (tools count them as gone until then);
    a live one refuses at once. Holding its lock, nobody else writes the entry's identity: a
    claimer that died mid-claim left it to us with its lock."""
    pids = _pids(memoryview(mm), slots)
    taken = [slot for slot, pid in enumerate(pids) if pid]
    for slot in taken + [slot for slot, pid in enumerate(pids) if not pid]:
        if _take(fd, slot):
            break
    else:
        raise Unavailable(f"the registry is full ({slots} entries held)")
    off = R.entry_offset(slot)
    cell = memoryview(mm)[off : off + R.SLOT_SIZE].cast("Q")
    w = R.W
    gen = cell[w["gen"]] | 1
    cell[w["gen"]] = gen  # odd: being written
    fence_release()
    pid = os.getpid()
    for name, value in (
        ("pid", pid), ("start", start_time(pid) or 0), ("uid", os.geteuid()),
        ("registered_ns", time.time_ns()), ("flags", 0), ("state", IDLE), ("seq", 0), ("delivered", 0),
        ("gaps", 0), ("missed", 0), ("state_ns", time.time_ns()),
    ):  # fmt: skip
        cell[w[name]] = value
    raw = (label or "").encode()
    cell[w["label_len"]] = len(raw)
    as_bytes = cell.cast("B")
    try:
        as_bytes[R.E["label"] : R.E["label"] + R.LABEL_MAX] = raw.ljust(R.LABEL_MAX, b"\0")
    finally:
        as_bytes.release()
    fence_release()
    cell[w["gen"]] = (gen + 1) & 0xFFFF_FFFF_FFFF_FFFF  # even, and new: stable
    return slot, cell


# -- reading -----------------------------------------------------------------------------------
class Entry(NamedTuple):
    """An entry as found, checked, before its lag is worked out against the feed."""

    slot: int
    pid: int
    label: Optional[str]
    uid: int
    state: str
    seq: int
    delivered: int
    gaps: int
    missed: int
    registered_ns: int
    state_ns: int
    flags: int


class Found(NamedTuple):
    capacity: int
    entries: List[Entry]
    dead: int
    invalid: int


_U63 = 1 << 63
_IDENTITY = R.E["state"]  # the identity is the entry's bytes before its activity words


def read(feed: str, incarnation: int, owner: Optional[int], head: Callable[[], int]) -> Tuple[Found, int]:
    """The live entries of the feed's registry (Unavailable if there is none to read), and the
    feed's head (``head()``), read after them: an entry that claims a later change than that
    claims one the feed has not made, and is invalid.

    The file is read twice with ``pread`` (never mapped: a file shrunk meanwhile cannot kill the
    reader), and an entry counts only if its ``gen`` and identity are the same in both copies
    (else it was being claimed: it will be there next time). Whether its subscriber lives is
    asked of its lock."""
    fd = _open(path(feed), writable=False)
    try:
        found = _current(fd, feed, incarnation, owner)
        first = os.pread(fd, found.size, 0)
        second = os.pread(fd, found.size, 0)
        if len(first) < found.size or len(second) < found.size:
            raise Unavailable("the registry was cut short while it was read")
        candidates: List[Entry] = []
        invalid = 0
        named = [slot for slot, pid in enumerate(_pids(memoryview(second), found.slots)) if pid]
        for slot in named:  # the others are free: passed over at the cost of a load
            off = R.entry_offset(slot)
            got = _entry(slot, first[off : off + R.SLOT_SIZE], second[off : off + R.SLOT_SIZE])
            if isinstance(got, Entry):
                candidates.append(got)
            elif got is _INVALID:
                invalid += 1
        now = head()
        entries: List[Entry] = []
        dead = 0
        for entry in candidates:
            if entry.seq > now:
                invalid += 1
            elif not _held(fd, entry.slot):
                dead += 1
            else:
                entries.append(entry)
        return Found(found.slots, entries, dead, invalid), now
    except OSError as exc:
        raise Unavailable(f"cannot read the registry: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


_INVALID = object()


def _pids(data: memoryview, slots: int) -> List[int]:
    """The ``pid`` word of every entry, from the registry's bytes."""
    words = data[: R.size(slots)].cast("Q")
    try:
        first = R.HEADER_SIZE // 8 + R.W["pid"]
        return list(words[first :: R.SLOT_SIZE // 8][:slots])
    finally:
        words.release()


def _entry(slot: int, before: bytes, after: bytes) -> object:
    """The entry in two copies of its bytes: None if free or being claimed, _INVALID if it fails
    a check, else an Entry (its activity words from the later copy)."""
    if before[:_IDENTITY] != after[:_IDENTITY]:
        return None
    words = {name: int.from_bytes(after[i * 8 : i * 8 + 8], "little") for name, i in R.W.items()}
    pid = words["pid"]
    if pid == 0 or words["gen"] & 1:
        return None
    n = words["label_len"]
    if not (
        pid < PID_MAX
        and words["uid"] < 1 << 32
        and words["state"] < len(STATE_NAMES)
        and n <= R.LABEL_MAX
        and not words["flags"] & ~(R.FLAG_CONFLATE | R.FLAG_FILTERED | R.FLAG_ASYNC)
        and all(words[k] < _U63 for k in ("seq", "delivered", "gaps", "missed", "registered_ns", "state_ns"))
    ):
        return _INVALID
    label: Optional[str] = None
    if n:
        try:
            label = after[R.E["label"] : R.E["label"] + n].decode("utf-8")
        except UnicodeDecodeError:
            return _INVALID
        if not label.isprintable():
            return _INVALID
    return Entry(
        slot, pid, label, words["uid"], STATE_NAMES[words["state"]], words["seq"], words["delivered"],
        words["gaps"], words["missed"], words["registered_ns"], words["state_ns"], words["flags"],
    )  # fmt: skip
