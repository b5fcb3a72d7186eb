"""Named POSIX shared-memory segments (Linux, macOS, FreeBSD): creation, mapping, the publisher lock.

Why each mechanism (the failure it avoids):

* ``posix_ipc.SharedMemory`` is given ``size`` never: opening an existing segment with a size
  whose ftruncate fails (a read-only open, say) makes it unlink the segment. We size a new
  segment ourselves with ``posix_fallocate``, which also reserves its pages: ftruncate alone
  on a full tmpfs succeeds and the first write then dies of SIGBUS.
* ``mode`` is masked by the umask at creation, so we ``fchmod`` right after.
* The single-publisher lock is ``flock(LOCK_EX | LOCK_NB)`` on the segment's descriptor. The
  kernel drops it when the holder dies, kill -9 included, so there is never a stale lock to
  clean up. (POSIX fcntl locks would be dropped when *any* descriptor of the file closes.)
* Nothing here attaches through ``multiprocessing.shared_memory``: before 3.13 its resource
  tracker unlinks every segment a process merely attached to when that process exits.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import time
from typing import List, Optional

import posix_ipc

from ._errors import (
    BadSegment,
    FeedBusy,
    FeedExists,
    FeedNotFound,
    FeedPermissionError,
    PricefeedError,
)
from ._segment_common import LOCK_RETRY_SECONDS, PREFIX, Pin, is_feed_entry, segment_name

SHM_DIR = "/dev/shm"


def list_feeds() -> List[str]:
    """Names of every feed segment on this machine (read from /dev/shm where it exists)."""
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    return sorted(e[len(PREFIX) :] for e in entries if is_feed_entry(e))


def segment_path(feed: str) -> str:
    """Where the segment shows in the file system (Linux)."""
    return SHM_DIR + segment_name(feed)


def _os_error(exc: BaseException, feed: str, action: str) -> PricefeedError:
    if isinstance(exc, posix_ipc.ExistentialError):
        if action == "create":  # O_CREAT | O_EXCL found the name taken
            return FeedExists(f"feed {feed!r} already exists (use open, or pricefeed rm first)")
        return FeedNotFound(f"no feed named {feed!r} on this machine (create it with pricefeed create)")
    if isinstance(exc, posix_ipc.PermissionsError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM)
    ):
        return FeedPermissionError(f"permission denied to {action} feed {feed!r}: {exc}")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return PricefeedError(
            f"no room in shared memory ({SHM_DIR}) to {action} feed {feed!r}: {os.strerror(exc.errno)}"
        )
    return PricefeedError(f"cannot {action} feed {feed!r}: {exc}")


class Segment:
    """One open descriptor and one mapping of a feed segment.

    ``view`` is a memoryview over the whole mapping (read-only unless ``writable``); ``address``
    its start, pinned until ``close()``.
    """

    def __init__(self, feed: str, shm: posix_ipc.SharedMemory, writable: bool) -> None:
        self.feed = feed
        self.writable = writable
        self._shm = shm
        self.fd = shm.fd
        st = os.fstat(self.fd)
        self.size = st.st_size
        self.inode = (st.st_dev, st.st_ino)
        self._mm: Optional[mmap.mmap] = None
        self._pin: Optional[Pin] = None
        self.view: memoryview = memoryview(b"")
        self.address = 0

    def map(self, length: int) -> None:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if self.writable else 0)
        self._mm = mmap.mmap(self.fd, length, flags=mmap.MAP_SHARED, prot=prot)
        self._pin = Pin(self._mm)
        self.address = self._pin.address
        self.view = memoryview(self._mm)

    # -- creation and opening -----------------------------------------------------------------
    @classmethod
    def create(cls, feed: str, size: int, mode: int) -> Segment:
        name = segment_name(feed)
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode)
        except (posix_ipc.Error, OSError) as exc:
            raise _os_error(exc, feed, "create") from None
        try:
            os.fchmod(shm.fd, mode)
            os.posix_fallocate(shm.fd, 0, size)
            seg = cls(feed, shm, writable=True)
            seg.map(size)
            return seg
        except BaseException as exc:
            # Leave nothing half-created behind.
            try:
                shm.close_fd()
            finally:
                _unlink_quietly(name)
            if isinstance(exc, OSError):
                raise _os_error(exc, feed, "create") from None
            raise

    @classmethod
    def open(cls, feed: str, writable: bool) -> Segment:
        name = segment_name(feed)
        _refuse_non_files(feed, name)
        try:
            shm = posix_ipc.SharedMemory(name, 0, read_only=not writable)
        except (posix_ipc.Error, OSError) as exc:
            raise _os_error(exc, feed, "open for writing" if writable else "open") from None
        return cls(feed, shm, writable)

    # -- the publisher lock -------------------------------------------------------------------
    def try_lock(self) -> bool:
        """Take the publisher lock if nobody holds it. A liveness probe (below) holds a shared
        lock for a few microseconds, so a refusal is retried for LOCK_RETRY_SECONDS."""
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)

    def lock_publisher(self) -> None:
        """Take the single-publisher lock or raise FeedBusy naming the holder."""
        if self.try_lock():
            return
        pid = self.holder_pid()
        who = f"pid {pid}" if pid else "another process"
        raise FeedBusy(
            f"feed {self.feed!r} already has a publisher ({who}); a feed has one publisher at a time",
            holder_pid=pid or None,
        )

    def holder_pid(self) -> Optional[int]:
        """None when nobody holds the publisher lock; otherwise the holder's pid, or 0 when the
        system cannot say (no /proc/locks, or a holder in another pid namespace).

        Whether the lock is held is asked of the lock itself: a shared lock is refused while a
        publisher holds its exclusive one (and given back at once when granted). /proc/locks
        only names the holder: it shows pid 0 for holders it cannot name, so it cannot be
        trusted to say that nobody holds the lock."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _flock_holder(self.inode) or 0
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        return None

    def still_linked(self) -> bool:
        """True while the feed's name still leads to this segment (not removed or replaced)."""
        try:
            other = posix_ipc.SharedMemory(segment_name(self.feed), 0, read_only=True)
        except (posix_ipc.Error, OSError):
            return False
        try:
            st = os.fstat(other.fd)
        finally:
            other.close_fd()
        return (st.st_dev, st.st_ino) == self.inode

    def unlink(self) -> None:
        try:
            _unlink_quietly(segment_name(self.feed))
        except (posix_ipc.Error, OSError) as exc:
            raise _os_error(exc, self.feed, "remove") from None

    def close(self) -> None:
        self.view.release()
        if self._pin is not None:
            self._pin.release()
            self._pin = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self.fd >= 0:
            self._shm.close_fd()  # also drops the flock, if this descriptor held it
            self.fd = -1


def _refuse_non_files(feed: str, name: str) -> None:
    """Look before shm_open where the segments are visible: a FIFO under the feed's name would
    block the open forever, and a directory or device would fail later with a confusing error.
    (shm_open itself refuses symbolic links.)"""
    try:
        st = os.lstat(os.path.join(SHM_DIR, name[1:]))
    except OSError:
        return  # missing (shm_open will say so), or a system without SHM_DIR
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a symbolic link"
            if stat.S_ISLNK(st.st_mode)
            else "not a regular file"
        )
        raise BadSegment(f"feed {feed!r} is not a pricefeed segment: {SHM_DIR}/{name[1:]} is {kind}")


def _unlink_quietly(name: str) -> None:
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        pass


def _flock_holder(inode: tuple[int, int]) -> int:
    """From /proc/locks: the pid holding an exclusive flock on this inode, 0 if not found."""
    dev, ino = inode
    want = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:19:5678 0 EOF"; blocked waiters say "1: ->" and
        # so never have "FLOCK" second.
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[3] == "WRITE" and parts[5] == want:
            return int(parts[4])
    return 0
