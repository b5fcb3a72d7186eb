"""A feed's subscriber registry: created by the publisher, an entry per subscriber, read by tools.

Who may do what, and why:

* The publisher creates the registry with the feed (and when it takes over a feed without
  one, or with one left by an earlier feed of the name), with the feed's own owner and mode.
  It is built under a temporary name and renamed into place, so nobody ever opens a registry
  whose header is still being written. The publisher never reads it again: nothing in it can
  reach the price data or the publish path.
* A subscriber registers only if it may write the registry, which is exactly who may write
  the feed. Letting every reader write it would let any of them shrink the file, and every
  registered subscriber would die of SIGBUS at its next store into a page that is gone; the
  same power over the feed is already theirs. Readers that may not write it run unregistered.
* An entry is claimed under ``flock`` on the registry (never waited on for long: the lock may
  be held by anyone who can open the file), freed by its owner with one store, and reclaimed
  by the next claimer once the process it names is gone (pid and start time: ``procs``).
* Every reader treats the registry as untrusted: the file must be a regular file of the
  feed's owner, of a size the header accounts for and within bounds; the header must name
  this incarnation of the feed; each entry is checked word by word and an entry that fails
  is counted, not shown. Nothing read from it is ever acted on.

POSIX shared memory outside Linux (macOS, FreeBSD) is not in a file system, and Windows has
no flock: there, for now, subscribers run unregistered and tools say so.
"""

from __future__ import annotations

import mmap
import os
import secrets
import stat
import sys
import time
from typing import Callable, List, NamedTuple, Optional, Tuple

from .._errors import InvalidInput
from .._segment.common import check_name
from . import layout as R
from .procs import alive, start_time
from .types import IDLE, STATE_NAMES, WAITING, WORKING

_LINUX = sys.platform.startswith("linux")
SHM_DIR = "/dev/shm"
#: Never follow a link, never block (a FIFO under the name), never take a terminal. (getattr:
#: Windows has none of them, and never opens a registry.)
_OPEN_FLAGS = sum(getattr(os, flag, 0) for flag in ("O_CLOEXEC", "O_NOFOLLOW", "O_NONBLOCK", "O_NOCTTY"))
#: How long a subscriber tries for the registry's lock before running unregistered.
LOCK_PATIENCE = 0.5
#: The largest pid a Linux system can give (PID_MAX_LIMIT).
PID_MAX = 1 << 22
UNSUPPORTED = "the subscriber registry is not available on this platform yet"


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


# -- the publisher's side -------------------------------------------------------------------------
def ensure(feed: str, incarnation: int, mode: int) -> Optional[str]:
    """Make sure the feed has a registry for ``incarnation``: kept if it has one, else created
    (replacing one of another incarnation, or a damaged one). Returns None, or why there is
    none; never raises for the registry's sake (a feed works without it)."""
    if not _LINUX:
        return UNSUPPORTED
    final = path(feed)
    try:
        with _Opened(final, writable=False, owner=os.geteuid()) as reg:
            if reg.incarnation == incarnation:
                return None
    except Unavailable:
        pass
    tmp = f"{SHM_DIR}/.{R.PREFIX}{feed}.{secrets.token_hex(8)}"
    try:
        fd = os.open(tmp, _OPEN_FLAGS | os.O_RDWR | os.O_CREAT | os.O_EXCL, mode & 0o666)
        try:
            os.fchmod(fd, mode & 0o666)
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
        finally:
            os.close(fd)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return f"cannot create the registry {final}: {exc.strerror or exc}"
    return None


def remove(feed: str) -> None:
    """Remove the feed's registry (with the feed): quietly, whatever stands under the name."""
    if _LINUX:
        try:
            os.unlink(path(feed))
        except OSError:
            pass


# -- opening ----------------------------------------------------------------------------------
class _Opened:
    """The registry file, opened without following a link or blocking, checked (regular file,
    owned by ``owner``, size within bounds and accounted for by a valid header) and mapped."""

    def __init__(self, where: str, writable: bool, owner: Optional[int]) -> None:
        if not _LINUX:
            raise Unavailable(UNSUPPORTED)
        try:
            self.fd = os.open(where, _OPEN_FLAGS | (os.O_RDWR if writable else os.O_RDONLY))
        except FileNotFoundError:
            raise Unavailable("the feed has no registry (made by a publisher without one?)") from None
        except PermissionError:
            raise Unavailable("no permission to " + ("write" if writable else "read") + " the registry") from None
        except OSError as exc:
            raise Unavailable(f"cannot open the registry: {exc.strerror or exc}") from None
        self.mm: Optional[mmap.mmap] = None
        try:
            self._check(where, owner, writable)
        except BaseException:
            self.close()
            raise

    def _check(self, where: str, owner: Optional[int], writable: bool) -> None:
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unavailable(f"{where} is not a regular file: ignored")
        if owner is not None and st.st_uid != owner:
            raise Unavailable(
                f"the registry belongs to another user (uid {st.st_uid}) than the feed (uid {owner}): ignored"
            )
        if not R.HEADER_SIZE <= st.st_size <= R.size(R.MAX_SLOTS):
            raise Unavailable(f"the registry is damaged: {st.st_size} bytes")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.mm = mmap.mmap(self.fd, st.st_size, flags=mmap.MAP_SHARED, prot=prot)
        head = memoryview(self.mm)[: R.HEADER_SIZE].cast("Q")
        try:
            words = {name: head[off // 8] for name, off, _ in R.HEADER}
        finally:
            head.release()
        if words["magic"] != R.MAGIC:
            raise Unavailable("the registry is damaged: no registry magic")
        if words["version"] != R.VERSION or words["slot_size"] != R.SLOT_SIZE:
            raise Unavailable(
                f"the registry has layout version {words['version']}; this pricefeed reads version {R.VERSION}"
            )
        if not 1 <= words["slots"] <= R.MAX_SLOTS or R.size(words["slots"]) > st.st_size:
            raise Unavailable(f"the registry is damaged: {words['slots']} entries in {st.st_size} bytes")
        self.slots = int(words["slots"])
        self.incarnation = int(words["incarnation"])
        self.uid = st.st_uid

    def words(self) -> memoryview:
        """The whole registry as u64 words (header included), for a scan."""
        assert self.mm is not None
        return memoryview(self.mm)[: R.size(self.slots)].cast("Q")

    def entry(self, slot: int) -> memoryview:
        assert self.mm is not None
        off = R.entry_offset(slot)
        return memoryview(self.mm)[off : off + R.SLOT_SIZE].cast("Q")

    def close(self) -> None:
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:  # a view is still out: the mapping goes with the last one
                pass
            self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> _Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_current(feed: str, incarnation: int, owner: Optional[int], writable: bool) -> _Opened:
    reg = _Opened(path(feed), writable, owner)
    if reg.incarnation != incarnation:
        reg.close()
        raise Unavailable("the registry belongs to an earlier feed of this name (its publisher has not renewed it)")
    return reg


# -- a subscriber's entry -------------------------------------------------------------------------
_SEQ, _DELIVERED = R.W["seq"], R.W["delivered"]


class Registration:
    """This subscriber's entry: claimed at open, its activity words stored as they change,
    freed at close. The subscriber keeps its own counts and only ever stores them: what the
    registry holds is never read back (another writer of the feed could have changed it)."""

    def __init__(self, reg: _Opened, slot: int, cell: memoryview) -> None:
        self._reg = reg
        self.slot = slot
        self.cell: Optional[memoryview] = cell
        self.state = IDLE
        self.delivered = 0
        self.gaps = 0
        self.missed = 0

    @classmethod
    def claim(cls, feed: str, incarnation: int, owner: Optional[int], label: Optional[str]) -> Registration:
        reg = _open_current(feed, incarnation, owner, writable=True)
        try:
            slot, cell = _claim(reg, label)
        except BaseException:
            reg.close()
            raise
        return cls(reg, slot, cell)

    def enter(self, state: int) -> None:
        cell = self.cell
        if cell is not None:
            self.state = state
            cell[R.W["state"]] = state
            cell[R.W["state_ns"]] = time.time_ns()

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

    def close(self) -> None:
        cell, self.cell = self.cell, None
        if cell is not None:
            cell[R.W["pid"]] = 0  # one store frees it (see _claim: claimers bump gen)
            cell.release()
            self._reg.close()


def _claim(reg: _Opened, label: Optional[str]) -> Tuple[int, memoryview]:
    """Take a free entry (or one whose process is gone) under the registry's lock, and write
    this process's identity into it, bracketed by ``gen``."""
    import fcntl  # here: Windows has none, and never gets this far (_Opened refuses it)

    deadline = time.monotonic() + LOCK_PATIENCE
    while True:
        try:
            fcntl.flock(reg.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Unavailable("the registry stayed locked by another process") from None
            time.sleep(0.001)
    try:
        slot = _free_slot(reg)
        cell = reg.entry(slot)
        w = R.W
        gen = cell[w["gen"]] | 1
        cell[w["gen"]] = gen  # odd: being written
        pid = os.getpid()
        for name, value in (
            ("pid", pid), ("start", start_time(pid) or 0), ("uid", os.geteuid()),
            ("registered_ns", time.time_ns()), ("flags", 0), ("state", IDLE), ("seq", 0), ("delivered", 0),
            ("gaps", 0), ("missed", 0), ("state_ns", time.time_ns()),
        ):  # fmt: skip
            cell[w[name]] = value
        raw = (label or "").encode()
        cell[w["label_len"]] = len(raw)
        bytes_view = cell.cast("B")
        try:
            bytes_view[R.E["label"] : R.E["label"] + R.LABEL_MAX] = raw.ljust(R.LABEL_MAX, b"\0")
        finally:
            bytes_view.release()
        cell[w["gen"]] = (gen + 1) & 0xFFFF_FFFF_FFFF_FFFF  # even, and new: stable
        return slot, cell
    finally:
        fcntl.flock(reg.fd, fcntl.LOCK_UN)


def _free_slot(reg: _Opened) -> int:
    """The first entry nobody holds, after freeing every entry whose process is gone and every
    one a claimer that died left half-written (we hold the lock: nobody else is writing one).
    Sweeping them all, not just finding one, keeps the entries of the dead from piling up
    while there are free ones (tools count them until then)."""
    words = reg.words()
    try:
        first = -1
        step = R.SLOT_SIZE // 8
        gen_at, pid_at, start_at = R.W["gen"], R.W["pid"], R.W["start"]
        for slot in range(reg.slots):
            base = (R.HEADER_SIZE // 8) + slot * step
            gen, pid = words[base + gen_at], words[base + pid_at]
            if gen & 1 or (pid and alive(pid, words[base + start_at]) is False):
                # Freed the way its owner would free it, with gen moved on for readers.
                words[base + gen_at] = gen | 1
                words[base + pid_at] = 0
                words[base + gen_at] = ((gen | 1) + 1) & 0xFFFF_FFFF_FFFF_FFFF
                pid = 0
            if first < 0 and pid == 0:
                first = slot
    finally:
        words.release()
    if first < 0:
        raise Unavailable(f"the registry is full ({reg.slots} live subscribers)")
    return first


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


def read(feed: str, incarnation: int, owner: Optional[int], head: Callable[[], int]) -> Tuple[Found, int]:
    """The live entries of the feed's registry (Unavailable if there is none to read), and the
    feed's head (``head()``), read after them: an entry that claims a later change than that
    claims one the feed has not made, and is invalid."""
    with _open_current(feed, incarnation, owner, writable=False) as reg:
        found: List[Tuple[Entry, int]] = []
        invalid = 0
        words = reg.words()
        try:
            # The free entries are passed over with two loads each: a scan of them all is
            # what every look costs.
            step, gen_at, pid_at = R.SLOT_SIZE // 8, R.W["gen"], R.W["pid"]
            taken = [
                slot
                for slot in range(reg.slots)
                if words[R.HEADER_SIZE // 8 + slot * step + pid_at]
                and not words[R.HEADER_SIZE // 8 + slot * step + gen_at] & 1
            ]
        finally:
            words.release()
        for slot in taken:
            cell = reg.entry(slot)
            try:
                got = _entry(slot, cell)
            finally:
                cell.release()
            if isinstance(got, tuple):
                found.append(got)
            elif got is _INVALID:
                invalid += 1
        now = head()
        entries: List[Entry] = []
        dead = 0
        for entry, start in found:
            if entry.seq > now:
                invalid += 1
            elif alive(entry.pid, start) is False:
                dead += 1
            else:
                entries.append(entry)
        return Found(reg.slots, entries, dead, invalid), now


_INVALID = object()


def _entry(slot: int, cell: memoryview) -> object:
    """The entry in ``cell`` and its process's start time: None if free, _INVALID if it fails
    a check."""
    w = R.W
    gen = cell[w["gen"]]
    pid = cell[w["pid"]]
    if pid == 0:
        return None
    if gen & 1:
        return None  # being claimed right now (or by a claimer that died): nobody's yet
    words = {name: int(cell[i]) for name, i in w.items()}
    raw = cell.tobytes()[R.E["label"] : R.E["label"] + R.LABEL_MAX]
    if cell[w["gen"]] != gen:
        return None  # re-claimed while we read: it will be there next time
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
            label = raw[:n].decode("utf-8")
        except UnicodeDecodeError:
            return _INVALID
        if not label.isprintable():
            return _INVALID
    return Entry(
        slot, pid, label, words["uid"], STATE_NAMES[words["state"]], words["seq"], words["delivered"],
        words["gaps"], words["missed"], words["registered_ns"], words["state_ns"], words["flags"],
    ), words["start"]  # fmt: skip
