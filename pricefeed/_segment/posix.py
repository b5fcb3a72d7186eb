"""Named POSIX shared-memory segments (Linux, macOS, FreeBSD): creation, mapping, the publisher lock.

Why each mechanism (the failure it avoids):

* On Linux a segment is the file of its name in /dev/shm, opened (``_shm_open``) as glibc's
  ``shm_open`` opens it, but with O_NONBLOCK too, and checked with ``fstat`` on the descriptor
  afterwards: anyone may put a FIFO under a name there, and a blocking open of a FIFO never
  returns (a look at the name before the open leaves a window in which it can change).
* Elsewhere ``posix_ipc.SharedMemory`` opens segments, and is given ``size`` never: opening an
  existing segment with a size whose ftruncate fails (a read-only open, say) makes it unlink
  the segment. We size a new segment ourselves with ``posix_fallocate``, which also reserves its pages: ftruncate alone
  on a full tmpfs succeeds and the first write then dies of SIGBUS.
  macOS has no ``posix_fallocate`` and allows exactly one ``ftruncate`` per segment (xnu
  ``pshm_truncate``), which rounds the size up to a page (16 KiB on Apple Silicon): fstat then
  reports the rounded size. FreeBSD's segments are swap-backed VM objects with nothing like a
  full tmpfs, and its ``posix_fallocate`` on a segment (13.0 and later) only grows it: both use
  ``ftruncate``.
* ``mode`` is masked by the umask at creation on Linux and FreeBSD, so we ``fchmod`` right
  after. macOS applies no umask to ``shm_open`` and refuses ``fchmod`` on a segment (EINVAL).
* The single-publisher lock is ``flock(LOCK_EX | LOCK_NB)``. The kernel drops it when the
  holder dies, kill -9 included, so there is never a stale lock to clean up. (POSIX fcntl
  locks would be dropped when *any* descriptor of the file closes.) On Linux it is taken on
  the segment's descriptor. macOS and FreeBSD refuse ``flock`` on a shared-memory descriptor
  (ENOTSUP, EOPNOTSUPP: both kernels' ``flock`` accept vnodes only), so there it is on a small
  lock file per feed in ``LOCK_DIR`` (``/var/tmp``: shared by all users, sticky, and not
  emptied by macOS's daily /tmp cleaner), which also holds the holder's pid (no /proc/locks
  there) and lists the feeds (neither system can list its segments from a file system).
* Nothing here attaches through ``multiprocessing.shared_memory``: before 3.13 its resource
  tracker unlinks every segment a process merely attached to when that process exits.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import secrets
import stat
import subprocess
import sys
import time
from typing import List, Optional

import posix_ipc

from .._errors import (
    BadSegment,
    FeedExists,
    FeedNotFound,
    FeedNotTrusted,
    FeedPermissionError,
    PricefeedError,
)
from .common import LOCK_RETRY_SECONDS, PREFIX, Pin, busy_error, is_feed_entry, segment_name, user_name

SHM_DIR = "/dev/shm"

_LINUX = sys.platform.startswith("linux")
_DARWIN = sys.platform == "darwin"
_FREEBSD = sys.platform.startswith("freebsd")
#: Where the publisher locks live where a segment's descriptor cannot be locked (macOS,
#: FreeBSD): one ``pf-<feed>.lock`` per feed, created with the feed and removed with it.
LOCK_DIR = os.environ.get("PRICEFEED_LOCK_DIR") or "/var/tmp"
_LOCK_SUFFIX = ".lock"


def list_feeds() -> List[str]:
    """Names of every feed segment on this machine: read from /dev/shm on Linux, from
    ``posixshmcontrol ls`` on FreeBSD, and on macOS (which cannot list segments at all) from
    the feeds' lock files, keeping those whose segment still opens."""
    if _FREEBSD:
        entries = _freebsd_segments()
    elif not _LINUX:
        try:
            files = os.listdir(LOCK_DIR)
        except OSError:
            return []
        entries = [f[: -len(_LOCK_SUFFIX)] for f in files if f.endswith(_LOCK_SUFFIX)]
        entries = [e for e in entries if e.startswith(PREFIX) and _segment_exists("/" + e)]
    else:
        try:
            entries = os.listdir(SHM_DIR)
        except OSError:
            return []
    return sorted(e[len(PREFIX) :] for e in entries if is_feed_entry(e))


def _freebsd_segments() -> List[str]:
    """Segment names without the slash, from ``posixshmcontrol ls`` (FreeBSD 12.1 and later):
    a header line, then MODE OWNER GROUP SIZE PATH separated by tabs."""
    try:
        out = subprocess.run(
            ["posixshmcontrol", "ls", "-n"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    names = []
    for line in out.splitlines()[1:]:
        path = line.rsplit("\t", 1)[-1]
        if path.startswith("/"):
            names.append(path[1:])
    return names


def _segment_exists(name: str) -> bool:
    try:
        posix_ipc.SharedMemory(name, 0, read_only=True).close_fd()
    except posix_ipc.ExistentialError:
        return False
    except (posix_ipc.Error, OSError):
        return True  # there, but not ours to open: listed, as /dev/shm would show it
    return True


def segment_path(feed: str) -> str:
    """Where the segment shows in the file system (Linux)."""
    return SHM_DIR + segment_name(feed)


def _os_error(exc: BaseException, feed: str, action: str) -> PricefeedError:
    if isinstance(exc, (posix_ipc.ExistentialError, FileExistsError, FileNotFoundError)):
        if action == "create":  # O_CREAT | O_EXCL found the name taken
            return FeedExists(f"feed {feed!r} already exists")
        return FeedNotFound(f"no feed named {feed!r} on this machine")
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

    def __init__(self, feed: str, fd: int, writable: bool) -> None:
        self.feed = feed
        self.writable = writable
        self.fd = fd
        st = os.fstat(self.fd)
        self.size = st.st_size  # macOS: rounded up to a page
        self.mode: Optional[int] = st.st_mode & 0o777
        self.uid: Optional[int] = st.st_uid
        self._lockfd = -1  # the lock file's descriptor (not Linux)
        # The lock file's token, a random number written when the segment is created: it tells
        # this incarnation of the feed from a later one of the same name (not Linux).
        self._token = None if _LINUX else _token_of(feed)
        self.inode = (st.st_dev, st.st_ino)
        if self.inode == (0, 0):
            # macOS's fstat of a segment fills in mode, owner and size only (xnu pshm_stat):
            # the token stands in for the inode.
            self.inode = (0, int(self._token or "0", 16))
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
        fd = _shm_open(feed, create=True, writable=True, mode=mode)
        try:
            if not _DARWIN:
                os.fchmod(fd, mode)
            if sys.platform.startswith("linux"):  # (spelled out so that mypy knows the platform)
                os.posix_fallocate(fd, 0, size)
            else:
                os.ftruncate(fd, size)  # macOS: the one ftruncate a segment may have
            if not _LINUX:
                # A new lock file for a new segment (one left by an earlier feed of this name
                # goes: a publisher still holding it is publishing to a removed segment).
                _remove_lock_file(feed)
                os.close(_open_lock(feed, mode, create=True, owner=os.geteuid()))
            seg = cls(feed, fd, writable=True)
            seg.map(size)
            return seg
        except BaseException as exc:
            # Leave nothing half-created behind.
            try:
                os.close(fd)
            finally:
                _unlink_quietly(name)
            if isinstance(exc, OSError):
                raise _os_error(exc, feed, "create") from None
            raise

    @classmethod
    def open(cls, feed: str, writable: bool) -> Segment:
        return cls(feed, _shm_open(feed, create=False, writable=writable), writable)

    # -- the publisher lock -------------------------------------------------------------------
    def try_lock(self) -> bool:
        """Take the publisher lock if nobody holds it. A liveness probe (below) holds a shared
        lock for a few microseconds, so a refusal is retried for LOCK_RETRY_SECONDS."""
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        moved = 0
        while True:
            fd = self._lock_fd(create=True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)
                continue
            if _LINUX:
                return True
            if not _names_lock_file(fd, _lock_path(self.feed)):
                # Removed or replaced between our open and our lock: the lock that counts is on
                # the file the path names now. Drop this one and take that.
                self._close_lock()
                moved += 1
                if moved > 100:  # pragma: no cover - something keeps replacing the file
                    raise PricefeedError(f"feed {self.feed!r}: its lock file {_lock_path(self.feed)} keeps changing")
                continue
            token = _read_token(fd)
            if self._token is None:
                self._token = token  # a feed made before lock files, or whose file was lost
            elif token != self._token:
                self._close_lock()
                raise PricefeedError(f"feed {self.feed!r} was removed and re-created since it was opened")
            _write_pid(fd, token)
            return True

    def _lock_fd(self, create: bool) -> int:
        """The descriptor the publisher lock is taken on: the segment's own on Linux, else the
        feed's lock file (opened once, kept until close())."""
        if _LINUX:
            return int(self.fd)
        if self._lockfd < 0:
            self._lockfd = _open_lock(self.feed, self.mode or 0o600, create=create and self.writable, owner=self.uid)
        return self._lockfd

    def _close_lock(self) -> None:
        if self._lockfd >= 0:
            os.close(self._lockfd)  # also drops the flock, if this descriptor held it
            self._lockfd = -1

    def lock_publisher(self) -> None:
        """Take the single-publisher lock or raise FeedBusy naming the holder."""
        if self.try_lock():
            return
        raise busy_error(self.feed, self.holder_pid())

    def held(self) -> bool:
        """Whether a publisher holds the lock, without naming it: what ``holder_pid`` asks of
        the lock itself, without reading /proc/locks (which grows with every lock on the
        machine: each registered subscriber holds one)."""
        try:
            fd = self._lock_fd(create=False)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    def holder_pid(self) -> Optional[int]:
        """None when nobody holds the publisher lock; otherwise the holder's pid, or 0 when the
        system cannot say (no /proc/locks, or a holder in another pid namespace).

        Whether the lock is held is asked of the lock itself: a shared lock is refused while a
        publisher holds its exclusive one (and given back at once when granted). /proc/locks
        only names the holder: it shows pid 0 for holders it cannot name, so it cannot be
        trusted to say that nobody holds the lock."""
        if not self.held():  # (no lock file: nobody ever published, or the feed was removed)
            return None
        return (_flock_holder(self.inode) if _LINUX else _read_pid(self._lock_fd(create=False))) or 0

    def still_linked(self) -> bool:
        """True while the feed's name still leads to this segment (not removed or replaced)."""
        try:
            other = _shm_open(self.feed, create=False, writable=False)
        except PricefeedError:
            return False
        try:
            st = os.fstat(other)
        finally:
            os.close(other)
        if (st.st_dev, st.st_ino) == (0, 0):  # macOS: see __init__ (no token: cannot tell)
            return self._token is None or _token_of(self.feed) == self._token
        return (st.st_dev, st.st_ino) == self.inode

    def unlink(self) -> None:
        try:
            _unlink_quietly(segment_name(self.feed))
        except (posix_ipc.Error, OSError) as exc:
            raise _os_error(exc, self.feed, "remove") from None
        if not _LINUX:
            # A publisher that opened the old file and locks it later sees that the path no
            # longer names it (try_lock), so removing it never lets two publishers in.
            _remove_lock_file(self.feed)

    def close(self) -> None:
        self.view.release()
        if self._pin is not None:
            self._pin.release()
            self._pin = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self._close_lock()
        if self.fd >= 0:
            os.close(self.fd)  # also drops the flock, if this descriptor held it
            self.fd = -1


#: Flags of every open of a segment or lock file: never follow a link, never block (a FIFO
#: under the name would block an ordinary open forever), never become a controlling terminal.
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


def _shm_open(feed: str, create: bool, writable: bool, mode: int = 0o600) -> int:
    """A descriptor of the feed's segment, which is a regular file: never blocks.

    On Linux a segment is a file in SHM_DIR, and glibc's ``shm_open`` is an ``open`` of it with
    O_NOFOLLOW: but without O_NONBLOCK, so a FIFO put under the name (renamed into place by
    anyone who may write SHM_DIR) would block it forever, and checking the name first with
    ``lstat`` leaves a window in which the name can change. So the open itself cannot block,
    and ``fstat`` on the descriptor checks what was opened. Elsewhere the segments are not in
    any file system, a FIFO cannot stand in for one, and ``shm_open`` is used as it is."""
    name = segment_name(feed)
    action = "create" if create else ("open for writing" if writable else "open")
    if not _LINUX:
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX if create else 0, mode=mode, read_only=not writable)
        except (posix_ipc.Error, OSError) as exc:
            raise _os_error(exc, feed, action) from None
        fd = int(os.dup(shm.fd))
        shm.close_fd()
        return fd
    path = SHM_DIR + name
    flags = _OPEN_FLAGS | (os.O_RDWR if writable else os.O_RDONLY) | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadSegment(f"feed {feed!r} is not a pricefeed segment: {path} is a symbolic link") from None
        if exc.errno == errno.EISDIR:
            raise BadSegment(f"feed {feed!r} is not a pricefeed segment: {path} is a directory") from None
        if exc.errno in (errno.ENXIO, errno.ENODEV, errno.ENOTDIR):
            raise BadSegment(f"feed {feed!r} is not a pricefeed segment: {path} is not a regular file") from None
        raise _os_error(exc, feed, action) from None
    try:
        _check_regular(fd, f"feed {feed!r} is not a pricefeed segment: {path}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(fd: int, what: str) -> None:
    """BadSegment unless ``fd`` is a regular file (``what`` says which, for the message)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "not a regular file"
        )
        raise BadSegment(f"{what} is {kind}")


def _unlink_quietly(name: str) -> None:
    try:
        if _LINUX:
            os.unlink(SHM_DIR + name)  # what shm_unlink does there
        else:
            posix_ipc.unlink_shared_memory(name)
    except (posix_ipc.ExistentialError, FileNotFoundError):
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


# -- lock files (macOS, FreeBSD) ----------------------------------------------------------------


def _lock_path(feed: str) -> str:
    return os.path.join(LOCK_DIR, segment_name(feed)[1:] + _LOCK_SUFFIX)


def _open_lock(feed: str, mode: int, create: bool, owner: Optional[int]) -> int:
    """Open (and with ``create``, make) the feed's lock file. A reader that may not write it
    opens it read-only, which is enough for flock and for reading the holder's pid. Never
    follows a symbolic link and never blocks (LOCK_DIR is shared by every user, who may put a
    FIFO there), and refuses a lock file that another user than the segment's ``owner`` made:
    whoever owns it could hold it, or rewrite the token that tells incarnations apart."""
    path = _lock_path(feed)
    fd = -1
    if create:
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            fd = -1
        else:
            try:
                os.fchmod(fd, mode)  # the umask applied at creation
                os.write(fd, f"{secrets.token_hex(16)}\n".encode())
            except BaseException:
                os.close(fd)
                raise
    if fd < 0:
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_RDWR)
        except PermissionError:
            fd = os.open(path, _OPEN_FLAGS | os.O_RDONLY)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise BadSegment(f"feed {feed!r}: its lock file {path} is not a regular file") from None
            raise
    try:
        _check_regular(fd, f"feed {feed!r}: its lock file {path}")
        uid = os.fstat(fd).st_uid
        if owner is not None and uid != owner:
            raise FeedNotTrusted(
                f"feed {feed!r}: its lock file {path} belongs to {user_name(uid)}, not to the segment's owner "
                f"{user_name(owner)}; another user made it, so it is not used (remove it, or set "
                "PRICEFEED_LOCK_DIR to a directory only trusted users may write)"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_lock_file(feed: str) -> None:
    path = _lock_path(feed)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except PermissionError:
        # LOCK_DIR is sticky: only the owner of a file there may remove it.
        uid = os.stat(path, follow_symlinks=False).st_uid
        raise FeedNotTrusted(
            f"feed {feed!r}: a lock file {path} made by {user_name(uid)} is in the way and cannot be removed; "
            "ask its owner to remove it, or set PRICEFEED_LOCK_DIR to a directory only trusted users may write"
        ) from None


def _names_lock_file(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open on ``fd``."""
    try:
        a = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    b = os.fstat(fd)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# A lock file holds two lines: the token (32 hex digits, written once, when the segment is
# created) and the pid of the publisher that last took the lock.


def _read_token(fd: int) -> Optional[str]:
    try:
        token = os.pread(fd, 33, 0).split(b"\n", 1)[0].decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    return token if len(token) == 32 else None


def _token_of(feed: str) -> Optional[str]:
    try:
        fd = os.open(_lock_path(feed), _OPEN_FLAGS | os.O_RDONLY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return _read_token(fd)
    finally:
        os.close(fd)


def _write_pid(fd: int, token: Optional[str]) -> None:
    """Write the holder's pid after the token (best effort: a read-only open cannot)."""
    line = f"{token or '0' * 32}\n{os.getpid()}\n".encode()
    try:
        os.pwrite(fd, line, 0)
        os.ftruncate(fd, len(line))
    except OSError:
        pass


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 64, 0).split()[1])
    except (OSError, ValueError, IndexError):
        return 0
