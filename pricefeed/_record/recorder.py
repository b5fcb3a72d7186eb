"""The recorder: follows a feed and appends each change, whole, to a recording (docs/recording.md).

How it keeps its promises:

- Every change once, in order: it follows with ``Subscriber.updates(after=...)``, and a file
  that exists resumes after the last change it holds, so nothing is recorded twice, and nothing
  the feed's ring still holds is missed. What the ring no longer holds is a gap entry.
- A kill -9 loses nothing written: the file only ever grows by whole entries (a buffer of
  complete entries, written in order), so a killed recorder leaves at most one entry torn at
  the end, which the next run cuts off before appending (format.py, Rule 3).
- It keeps up: a change is one ``struct.pack`` (a precompiled struct per symbol length) and one
  ``crc32``; entries are written in batches, one ``write`` whenever it has caught up with the
  feed's head or holds BUFFER bytes. ``fsync`` runs in a thread of its own (every second by
  default), so the disk never holds the loop up.
- A stop (SIGINT, SIGTERM) writes every complete entry and syncs before it exits. The signal
  handlers raise only outside a write: during one they leave a note, acted on after it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import zlib
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

from .._act.state import sync_folder
from .._errors import FeedReset, InvalidInput, PricefeedError
from .._roles.subscriber import Subscriber
from .._values import Gap, PublisherGone, PublisherRestarted, Reset, quote_type
from . import format as F

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one recorder per file is then up to the user
    fcntl = None  # type: ignore[assignment]

__all__ = ["Recorder", "RecordResult", "parse_fsync", "record", "run_command", "DEFAULT_FSYNC"]

#: Write when this many bytes of entries wait (and whenever the recorder has caught up).
BUFFER = 1 << 20
#: fsync every this many seconds by default (while anything was written since the last).
DEFAULT_FSYNC = 1.0
#: Most seconds between two fsyncs that --fsync accepts.
MAX_FSYNC = 3600.0

Fsync = Union[float, str]  # seconds, "batch" or "never"
Report = Callable[[str], None]


def parse_fsync(text: Union[str, float]) -> Fsync:
    """--fsync: "batch" (after every write), "never" (leave it to the system), or seconds
    between two syncs (greater than 0, at most an hour); InvalidInput otherwise."""
    if isinstance(text, str) and text.strip().lower() in ("batch", "never"):
        return text.strip().lower()
    try:
        seconds = float(text)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not 0 < seconds <= MAX_FSYNC:
        raise InvalidInput(
            f"--fsync is batch, never, or seconds between two syncs (more than 0, at most {MAX_FSYNC:g}): got {text!r}"
        )
    return seconds


class RecordResult(NamedTuple):
    """How a recording run ended: "ended" (the feed was ended for good), "interrupted"
    (SIGINT) or "terminated" (SIGTERM); what it appended."""

    reason: str
    changes: int
    gaps: int
    missed: int
    bytes: int
    resumed_after: int
    #: From the start of following to the end.
    seconds: float


class _Stop(BaseException):
    """Raised by the signal handlers (outside a write) to end the loop."""


def _noop(line: str) -> None:
    pass


class Recorder:
    """Records ``feed`` into the file at ``path``: ``run()`` follows it until it ends (or a
    signal under ``run_command``; a KeyboardInterrupt elsewhere, after writing what waits).

    A new file starts with every change the feed still holds, from its first (the ring's
    older ones as a gap entry and the latest value of each symbol they changed), or with
    ``from_now`` after its head. A file that exists must be a recording of this feed's
    incarnation; it resumes after the last change it holds, its torn tail cut off first.
    ``fsync``: seconds between syncs, "batch" or "never"."""

    def __init__(
        self,
        feed: str,
        path: str,
        *,
        from_now: bool = False,
        fsync: Fsync = DEFAULT_FSYNC,
        wait: Union[bool, float] = False,
        owner: Any = None,
        allow_world_writable: bool = False,
        report: Optional[Report] = None,
    ) -> None:
        self.feed = feed
        self.path = path
        self.from_now = from_now
        self.fsync = parse_fsync(fsync)
        self.wait = wait
        self.owner = owner
        self.allow_world_writable = allow_world_writable
        self.report = report or _noop
        self._fd: Optional[int] = None
        self._sub: Optional[Subscriber] = None
        self._buf = bytearray()
        #: The file offset the buffer's first byte goes to.
        self._buf_at = 0
        self._dirty = False
        self._stopping: Optional[str] = None
        self._critical = False
        self._sync_stop = threading.Event()
        self._syncer: Optional[threading.Thread] = None
        self._sync_error: Optional[OSError] = None
        self.changes = self.gaps = self.missed = 0
        self._written_from = 0

    # -- the file ----------------------------------------------------------------------------------
    def _open(self) -> Optional[Tuple[F.Header, F.End]]:
        """Open and lock the file if it exists: its header and where it ends (not cut yet);
        None if there is no file."""
        try:
            fd = F.open_regular(self.path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            return None
        self._fd = fd
        self._lock(fd)
        header = F.read_header(fd, self.path)
        try:
            end = F.locate_end(fd, header, os.fstat(fd).st_size, self.path)
        except OSError as exc:
            raise PricefeedError(f"recording {self.path!r} cannot be read: {exc.strerror or exc}") from None
        return header, end

    def _lock(self, fd: int) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PricefeedError(
                f"recording {self.path!r} is being written by another recorder; one recorder per file"
            ) from None

    def _create(self, header: F.Header) -> bool:
        """Make the file with its header, whole or not at all: written and synced under a
        temporary name, then linked to the path (which fails if a file appeared there meanwhile:
        False). Where the file system cannot link, the file is created in place."""
        full = os.path.abspath(self.path)
        folder = os.path.dirname(full)
        tmp = os.path.join(folder, f".{os.path.basename(full)}.{os.getpid()}.tmp")
        data = F.encode_header(header)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            try:
                fd = os.open(tmp, flags, 0o600)
            except FileExistsError:  # a leftover of a run that died here
                os.unlink(tmp)
                fd = os.open(tmp, flags, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, full)
            except FileExistsError:
                return False
            except OSError:  # no hard links here: create it in place
                try:
                    fd = os.open(full, flags, 0o600)
                except FileExistsError:
                    return False
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            sync_folder(folder)
            return True
        except OSError as exc:
            raise PricefeedError(f"recording {self.path!r} cannot be created: {exc.strerror or exc}") from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    # -- starting --------------------------------------------------------------------------------------
    def _start(self) -> int:
        """Open (or create) the file and the feed, check they belong together, cut a torn
        tail: the sequence to follow after."""
        found = self._open()  # a bad file is refused before the feed is even looked at
        sub = self._sub = Subscriber(
            self.feed,
            wait=self.wait,
            owner=self.owner,
            allow_world_writable=self.allow_world_writable,
            label="pricefeed record",
        )
        if found is not None:
            return self._prepare(found)
        g = sub.geometry
        created = self._create(F.Header(self.feed, g.incarnation, g.created_ns, time.time_ns(), g.fields))
        found = self._open()
        if found is None:
            raise PricefeedError(f"recording {self.path!r} vanished as it was created")
        if not created:  # another process made it meanwhile (and holds it, most likely)
            return self._prepare(found)
        return self._prepare(found, after=sub.head if self.from_now else 0)

    def _prepare(self, found: Tuple[F.Header, F.End], after: Optional[int] = None) -> int:
        header, end = found
        sub = self._sub
        assert sub is not None and self._fd is not None
        g = sub.geometry
        path = self.path
        if header.feed != self.feed:
            raise InvalidInput(
                f"recording {path!r} is of feed {header.feed!r}, not {self.feed!r}; record into another file"
            )
        if header.fields != g.fields:
            raise F.schema_mismatch(self.feed, g.fields, header.fields)
        if header.incarnation != g.incarnation:
            raise InvalidInput(
                f"recording {path!r} is of an earlier feed {self.feed!r} (incarnation {header.incarnation:#x}), which "
                f"was removed and created anew since (incarnation {g.incarnation:#x}): its sequence started again, "
                "so record it into another file"
            )
        head = sub.head
        if after is None:
            after = end.last_seq
            if after > head:
                raise InvalidInput(
                    f"recording {path!r} ends at change {after}, but feed {self.feed!r} has only {head}: "
                    "it is not a recording of this feed"
                )
        size = os.fstat(self._fd).st_size
        if end.offset < size:
            os.ftruncate(self._fd, end.offset)
            os.fsync(self._fd)
            self.report(f"cut off a torn tail of {size - end.offset} bytes at byte {end.offset}")
        self._buf_at = self._written_from = end.offset
        return after

    # -- running ---------------------------------------------------------------------------------------
    def run(self) -> RecordResult:
        """Record until the feed is ended for good ("ended") or a signal stops it."""
        reason = "ended"
        after = 0
        began = time.monotonic()
        try:
            after = self._start()
            assert self._sub is not None
            events = self._sub.updates(after=after, reattach=False)
            g = self._sub.geometry
            self.report(
                f"recording feed {self.feed!r} (incarnation {g.incarnation:#x}) into {self.path!r} after change {after}"
            )
            self._append(F.Encoder.start(time.time_ns(), after, os.getpid()))
            self._flush()
            began = time.monotonic()
            self._start_syncer()
            self._loop(events)
            self._append(F.Encoder.ended(time.time_ns(), self._sub.head))
        except _Stop:
            reason = self._stopping or "interrupted"
        except FeedReset:
            raise FeedReset(
                f"feed {self.feed!r} was removed and created anew: its recording {self.path!r} ends here, after "
                f"{self.changes} changes; record the new feed into another file"
            ) from None
        finally:
            self._finish()
        written = self._buf_at - self._written_from
        return RecordResult(reason, self.changes, self.gaps, self.missed, written, after, time.monotonic() - began)

    def _signal(self, name: str) -> None:
        self._stopping = self._stopping or name
        if not self._critical:
            raise _Stop

    def _loop(self, events: Any) -> None:
        sub = self._sub
        assert sub is not None
        qt = quote_type(sub.fields)
        encoder = F.Encoder(sub.fields)
        known: Dict[str, Tuple[Callable[..., bytes], int, bytes, int]] = {}
        buf = self._buf
        add = buf.extend
        crc = zlib.crc32
        flush = self._flush
        head = 0
        count = 0
        try:
            for item in events:
                if type(item) is qt:
                    symbol = item[0]
                    how = known.get(symbol)
                    if how is None:
                        how = known[symbol] = encoder.symbol(symbol)
                    pack, first, raw, n = how
                    framed = pack(first, *item[1:], raw, n)
                    add(framed + crc(framed).to_bytes(4, "little"))  # one extend: a signal cannot split it
                    count += 1
                    if len(buf) >= BUFFER:
                        flush()
                    elif item[-2] >= head:
                        head = sub.head
                        if item[-2] >= head:  # caught up: write what waits
                            flush()
                    continue
                self._event(item)
                flush()
        finally:
            self.changes += count

    def _event(self, item: Any) -> None:
        now = time.time_ns()
        if isinstance(item, Gap):
            self.gaps += 1
            self.missed += item.missed
            self._append(F.Encoder.gap(now, item.missed, item.first_seq, item.last_seq))
            self.report(
                f"gap: changes {item.first_seq} to {item.last_seq} left the feed's ring before they were recorded; "
                f"{item.missed} missed, the latest value of each symbol they changed follows"
            )
        elif isinstance(item, PublisherGone):
            self._append(F.Encoder.publisher_gone(now, item.head_seq, item.pid, item.clean))
            self.report(f"publisher gone (pid {item.pid}, {'clean' if item.clean else 'not clean'}) at {item.head_seq}")
        elif isinstance(item, PublisherRestarted):
            self._append(F.Encoder.publisher_restarted(now, item.head_seq, item.pid, item.epoch))
            self.report(f"publisher restarted (pid {item.pid}, epoch {item.epoch}) at {item.head_seq}")
        elif isinstance(item, Reset):  # not with reattach=False; never recorded as the same feed
            raise FeedReset(f"feed {self.feed!r} was removed and created anew")

    def _append(self, data: bytes) -> None:
        self._buf.extend(data)

    def _flush(self) -> None:
        """Write every entry that waits (a signal meanwhile is acted on after)."""
        buf = self._buf
        if not buf:
            return
        fd = self._fd
        assert fd is not None
        self._critical = True
        try:
            self._write_buffer(fd)
            self._dirty = True
            if self.fsync == "batch":
                self._sync()
        finally:
            self._critical = False
        if self._stopping:
            raise _Stop
        if self._sync_error is not None:
            raise _io_error(self.path, "synced", self._sync_error)

    def _sync(self) -> None:
        fd = self._fd
        if fd is None:
            return
        self._dirty = False
        try:
            os.fsync(fd)
        except OSError as exc:
            raise _io_error(self.path, "synced", exc) from None

    def _start_syncer(self) -> None:
        if not isinstance(self.fsync, float):
            return
        interval = self.fsync

        def loop() -> None:
            while not self._sync_stop.wait(interval):
                if self._dirty and self._fd is not None:
                    self._dirty = False
                    try:
                        os.fsync(self._fd)
                    except OSError as exc:
                        self._sync_error = exc
                        return

        self._syncer = threading.Thread(target=loop, name="pricefeed-record-fsync", daemon=True)
        self._syncer.start()

    def _finish(self) -> None:
        """Write what waits, sync, close: whatever stopped the loop, and at most once."""
        self._critical = True  # from here on a signal only leaves its note
        fd = self._fd
        try:
            if self._syncer is not None:
                self._sync_stop.set()
                self._syncer.join(timeout=60)
                self._syncer = None
            if fd is not None:
                self._resync(fd)
                self._write_buffer(fd)
                if self.fsync != "never" and self._buf_at != self._written_from:
                    os.fsync(fd)
        except OSError as exc:
            raise _io_error(self.path, "written", exc) from None
        finally:
            if fd is not None:
                os.close(fd)
                self._fd = None
            if self._sub is not None:
                self._sub.close()
                self._sub = None

    def _resync(self, fd: int) -> None:
        """Line the buffer up with the file after an exception: what a write interrupted may
        already be in the file (the file's size says how much), and must not be written twice."""
        size = os.fstat(fd).st_size
        written = size - self._buf_at
        if 0 < written <= len(self._buf):
            del self._buf[:written]
            self._buf_at = size

    def _write_buffer(self, fd: int) -> None:
        """Write the buffer, all of it (no memoryview is kept: a failed write leaves the buffer
        free to be lined up with the file)."""
        buf = self._buf
        while buf:
            n = _write(fd, buf, self.path)
            del buf[:n]
            self._buf_at += n


def _write(fd: int, data: bytearray, path: str) -> int:
    try:
        n = os.write(fd, data)
    except OSError as exc:
        raise _io_error(path, "written", exc) from None
    if n <= 0:
        raise PricefeedError(f"recording {path!r} cannot be written: the system wrote nothing")
    return n


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _io_error(path: str, what: str, exc: OSError) -> PricefeedError:
    return PricefeedError(f"recording {path!r} cannot be {what}: {exc.strerror or exc}")


def record(feed: str, path: str, **options: Any) -> RecordResult:
    """Record ``feed`` into ``path`` until it ends (see Recorder)."""
    return Recorder(feed, path, **options).run()


def run_command(feed: str, path: str, **options: Any) -> RecordResult:
    """``record()`` as a command: SIGINT and SIGTERM stop it gracefully (every complete entry
    written and synced), and the result says which stopped it."""
    recorder = Recorder(feed, path, **options)
    names: Dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
    before: Dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        recorder._signal(names[signum])

    for sig in names:
        try:
            before[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        return recorder.run()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
