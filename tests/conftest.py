"""Shared fixtures: a unique feed name per test, removed afterwards, and real processes."""

from __future__ import annotations

import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Dict, Iterator, List, Optional

import pytest

from pricefeed import _protocol as protocol
from pricefeed._errors import PricefeedError
from pricefeed._registry import registry
from pricefeed._segment import Segment, segment_name, segment_path

ROOT = Path(__file__).resolve().parent.parent
WORKERS = str(Path(__file__).resolve().parent / "_workers.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the slow stress tests")


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow stress test: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["c", "python"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[protocol.Implementation]:
    """Each implementation of the protocol in turn: the C one (skipped where it is not built,
    or PRICEFEED_PURE is set) and the pure-Python reference. It runs in this process (roles
    opened during the test use it) and in every child the test starts (PRICEFEED_PURE)."""
    name = str(request.param)
    if name == "c" and protocol.C is None:
        pytest.skip("the C implementation is not built here, or PRICEFEED_PURE is set")
    if name == "python":
        monkeypatch.setenv("PRICEFEED_PURE", "1")
    else:
        monkeypatch.delenv("PRICEFEED_PURE", raising=False)
    before = protocol.implementation()
    chosen = protocol.use(name)
    try:
        yield chosen
    finally:
        protocol.use(before.name)


def unique_name() -> str:
    return f"t{os.getpid()}-{uuid.uuid4().hex[:10]}"


WINDOWS = sys.platform == "win32"
LINUX = sys.platform.startswith("linux")
#: Skip markers that say why: these tests look at Linux itself (/proc, /dev/shm, signals).
linux_only = pytest.mark.skipif(not LINUX, reason="Linux-specific: it looks at /proc or /dev/shm")
posix_only = pytest.mark.skipif(WINDOWS, reason="POSIX-specific: signals, fork or permissions Windows lacks")


def unlink_feed(name: str) -> None:
    """Remove whatever is under the feed's name, as pricefeed itself would, and its registry."""
    registry.remove(name)
    try:
        seg = Segment.open(name, writable=False)
    except PricefeedError:
        if os.path.isdir(segment_path(name)):
            os.rmdir(segment_path(name))
        elif os.path.lexists(segment_path(name)):
            os.remove(segment_path(name))
        return
    try:
        seg.unlink()
    finally:
        seg.close()


def poke(feed: str, offset: int, fmt: str, *values: object) -> None:
    """Write ``values`` (struct format ``fmt``, little-endian) into the feed's segment at ``offset``."""
    with open(segment_path(feed), "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<" + fmt, *values))


def peek(feed: str, offset: int, fmt: str) -> tuple:
    """Read struct format ``fmt`` (little-endian) from the feed's segment at ``offset``."""
    with open(segment_path(feed), "rb") as f:
        f.seek(offset)
        return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))


def slot_at(feed: str, index: int, field: int = 0) -> int:
    """The offset in the feed's segment of ``field`` (an L.SLOT_* offset) of slot ``index``,
    from the sizes its header gives."""
    from pricefeed._protocol import layout as L

    (slots,) = peek(feed, L.OFF_SLOTS_OFFSET, "Q")
    (size,) = peek(feed, L.OFF_SLOT_SIZE, "I")
    return slots + index * size + field


def record_at(feed: str, seq: int, field: int = 0) -> int:
    """The offset of ``field`` (an L.REC_* offset) of the ring record that holds change ``seq``."""
    from pricefeed._protocol import layout as L

    (ring,) = peek(feed, L.OFF_RING_OFFSET, "Q")
    size, ring_size = peek(feed, L.OFF_RECORD_SIZE, "I")[0], peek(feed, L.OFF_RING_SIZE, "I")[0]
    return ring + (seq % ring_size) * size + field


@pytest.fixture
def feed() -> Iterator[str]:
    """A feed name no other test uses; whatever segment ends up under it is removed after."""
    name = unique_name()
    try:
        yield name
    finally:
        unlink_feed(name)


@pytest.fixture
def other_feed() -> Iterator[str]:
    """A second feed name of the test's own, removed afterwards like ``feed``."""
    name = unique_name()
    try:
        yield name
    finally:
        unlink_feed(name)


class Proc:
    """A real child process whose output lines are read with a timeout on every wait."""

    def __init__(self, args: List[str], stdin: Optional[int] = None, env: Optional[dict] = None) -> None:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        if env:
            full_env.update(env)
        for attempt in range(3):
            try:
                self.p = subprocess.Popen(
                    args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=full_env
                )
                break
            except OSError as exc:
                # Wine's CreateProcess now and then fails with "Internal error" (1359) when many
                # processes start at once (seen once in the lane): try again, Windows only.
                if getattr(exc, "winerror", None) != 1359 or attempt == 2:
                    raise
                time.sleep(0.5)
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._err: List[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.p.stdout,), daemon=True),
            threading.Thread(target=self._err.extend, args=(self.p.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.p.pid

    @property
    def stdin(self) -> IO[str]:
        assert self.p.stdin is not None
        return self.p.stdin

    def readline(self, timeout: float = 30.0) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from pid {self.pid} within {timeout} s") from None
        if line is None:
            self._lines.put(None)
            self.p.wait(timeout=10)
            raise AssertionError(f"pid {self.pid} exited {self.p.returncode} before a line: {self.stderr}")
        return line

    def json_line(self, timeout: float = 30.0) -> dict:
        return json.loads(self.readline(timeout))

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        """Wait for exit; returns (exit code, stdout not yet read, stderr)."""
        if self.p.stdin is not None and not self.p.stdin.closed:
            self.p.stdin.close()
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"pid {self.pid} did not exit within {timeout} s") from None
        for t in self._threads:
            t.join(timeout=10)
        rest = []
        while True:
            line = self._lines.get_nowait() if not self._lines.empty() else None
            if line is None:
                break
            rest.append(line + "\n")
        return self.p.returncode, "".join(rest), self.stderr

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)


@pytest.fixture
def procs() -> Iterator[List[Proc]]:
    """Start processes with procs.append(Proc(...)); every one still running is killed after."""
    started: List[Proc] = []
    try:
        yield started
    finally:
        for p in started:
            p.kill()
            if p.p.stdin is not None:
                p.p.stdin.close()


def kill_hard(pid: int) -> None:
    """Kill a process the way a crash does: SIGKILL, or TerminateProcess on Windows."""
    # On Windows os.kill calls TerminateProcess for any signal but the console ones.
    os.kill(pid, signal.SIGTERM if WINDOWS else signal.SIGKILL)


def open_fds() -> int:
    """How many descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def access_modes_of(feed: str) -> List[int]:
    """The access mode (O_RDONLY, O_WRONLY, O_RDWR) of each descriptor this process has open
    on the feed's segment, from /proc/self/fdinfo."""
    modes = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith(segment_path(feed)):
                continue
            with open(f"/proc/self/fdinfo/{fd}") as f:
                flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
        except (OSError, StopIteration):
            continue  # closed meanwhile (the listing's own descriptor, say)
        modes.append(flags & os.O_ACCMODE)
    return modes


def mappings_of(feed: str) -> int:
    """How many mappings of this feed's segment this process has."""
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip().endswith(segment_name(feed)))


def worker(*args: object) -> List[str]:
    return [sys.executable, WORKERS, *map(str, args)]


def cli(*args: object) -> List[str]:
    return [sys.executable, "-m", "pricefeed", *map(str, args)]


#: Elsewhere than Linux nothing shows whether a process sleeps in its wait: give it this long.
SETTLE_SECONDS = 0.5


def blocked_in_futex(pid: int) -> bool:
    """True when the process sits in futex or futex_waitv (Linux: /proc/PID/syscall). Where
    that cannot be seen, it waits SETTLE_SECONDS and says True: tests then rely on time."""
    if not LINUX:
        time.sleep(SETTLE_SECONDS)
        return True
    from pricefeed._wait._futex_linux import sleeping_in_futex

    return bool(sleeping_in_futex(pid))


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def check_follower(rows: list, log: List[list], final: Dict[str, float], total: int) -> dict:
    """The property every follower must have, whatever its speed."""
    by_seq = {seq: (sym, price) for seq, sym, price in log}
    seqs = [r[1] for r in rows if r[0] == "c"]
    assert seqs == sorted(set(seqs)), "duplicate or out-of-order sequence"
    for kind, *rest in rows:
        if kind == "c":
            seq, sym, price = rest[:3]
            assert by_seq[seq] == (sym, price), f"change {seq} delivered as {sym}={price}, published as {by_seq[seq]}"
    missed = sum(r[1] for r in rows if r[0] == "g")
    assert len(seqs) + missed == total, f"{len(seqs)} delivered + {missed} missed != {total} published"
    view: Dict[str, float] = {}
    for r in rows:
        if r[0] == "c":
            view[r[2]] = r[3]
    assert view == final, "a subscriber's final view differs from the publisher's"
    gaps = [r for r in rows if r[0] == "g"]
    # A gap covers changes the follower never saw: none of them may also be delivered.
    for _, gap_missed, first, last in gaps:
        inside = [s for s in seqs if first <= s <= last]
        assert len(inside) + gap_missed == last - first + 1
    return {"delivered": len(seqs), "gaps": len(gaps), "missed": missed}
