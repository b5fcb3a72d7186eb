"""Child processes: every one started here is recorded by pid, and killed by pid on exit.

Workers are forked from the benchmark's own process, so they start in a millisecond with
pricefeed already imported, and 200 of them cost little memory. Each forked worker:

* dies with its parent (``PR_SET_PDEATHSIG``), so not even a ``kill -9`` of bench.py leaves an
  orphan blocked in a futex;
* takes back the default action for SIGINT and SIGTERM, so Ctrl-C in the terminal (which
  signals the whole foreground process group) ends it at once, with no traceback (a SIGINT
  that the shell made bench.py ignore, as it does for a background job, stays ignored);
* leaves through ``os._exit``, never through the finally blocks it inherited from its parent,
  which would otherwise unlink feeds and kill siblings a second time;
* reports over its own pipe, one JSON object a line: anything it sends, then
  ``{"result": ...}`` or ``{"error": traceback}``.

The parent reads with a timeout on every wait: a worker that hangs or dies is reported as
ChildFailed, never waited on forever.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = [
    "Channel",
    "Child",
    "ChildFailed",
    "LineReader",
    "Stopped",
    "send_patiently",
    "fork",
    "fork_many",
    "spawn",
    "forget",
    "kill_all",
    "install_signal_handlers",
    "set_timer_slack",
    "voluntary_switches",
]

_PR_SET_PDEATHSIG = 1
_PR_SET_TIMERSLACK = 29

_libc = ctypes.CDLL(None, use_errno=True)
_forked: Dict[int, str] = {}  # pid -> what it is, for every forked worker still not reaped
_spawned: Dict[int, subprocess.Popen[bytes]] = {}


class ChildFailed(RuntimeError):
    """A child process died, reported an error, or did not answer in time."""


class LineReader:
    """Reads lines from a pipe with a deadline on each read."""

    def __init__(self, fd: int, label: str) -> None:
        self.fd = fd
        self.label = label
        self._buf = b""

    def line(self, timeout: float) -> Optional[bytes]:
        """The next line without its newline; None at end of file. ChildFailed on timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise ChildFailed(f"{self.label}: no answer within {timeout:g} s")
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line


class Channel:
    """The child's end of its pipe to the parent."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def send(self, message: object) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]


class Child:
    """The parent's handle on one forked worker."""

    def __init__(self, pid: int, fd: int, label: str) -> None:
        self.pid = pid
        self.label = label
        self._reader = LineReader(fd, label)

    def recv(self, timeout: float) -> Any:
        """The next message the worker sent; ChildFailed if it died, failed or is silent."""
        line = self._reader.line(timeout)
        if line is None:
            raise ChildFailed(f"{self.label} (pid {self.pid}) exited without a result: {self._reap()}")
        message = json.loads(line)
        if isinstance(message, dict) and "error" in message:
            raise ChildFailed(f"{self.label} (pid {self.pid}) failed:\n{message['error']}")
        return message

    def result(self, timeout: float) -> Any:
        """The worker's return value, once it has finished; it is then reaped."""
        while True:
            message = self.recv(timeout)
            if isinstance(message, dict) and "result" in message:
                self._reap()
                return message["result"]

    def kill(self) -> None:
        if self.pid in _forked:
            _kill(self.pid)
        self._close()

    def _reap(self) -> str:
        status = "still running"
        if self.pid in _forked:
            try:
                pid, code = os.waitpid(self.pid, 0)
                status = f"exit status {os.waitstatus_to_exitcode(code)}" if pid else status
            except ChildProcessError:
                status = "already reaped"
            _forked.pop(self.pid, None)
        self._close()
        return status

    def _close(self) -> None:
        if self._reader.fd >= 0:
            os.close(self._reader.fd)
            self._reader.fd = -1


def fork(label: str, body: Callable[[Channel], object]) -> Child:
    """Run ``body(channel)`` in a forked worker; its return value becomes the result."""
    parent = os.getpid()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()  # else what is buffered would be written by both processes
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker: it never returns from this branch
        os.close(read_fd)
        _worker(parent, write_fd, body)
    _forked[pid] = label
    os.close(write_fd)
    return Child(pid, read_fd, label)


def fork_many(label: str, bodies: Sequence[Callable[[Channel], object]], timeout: float) -> List[Child]:
    """Fork one worker per body and wait until each has sent its first message ("ready")."""
    children = [fork(f"{label} #{i}", body) for i, body in enumerate(bodies)]
    for child in children:
        child.recv(timeout)
    return children


def _worker(parent: int, write_fd: int, body: Callable[[Channel], object]) -> None:
    code = 1
    channel = Channel(write_fd)
    try:
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored in a background job: keep it so
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            return
        _forked.clear()
        _spawned.clear()
        channel.send({"result": body(channel)})
        code = 0
    except BaseException:
        try:
            channel.send({"error": traceback.format_exc()})
        except BaseException:
            pass
    finally:
        os._exit(code)


def send_patiently(send: Callable[[], object], fd: int, timeout: float = 10.0) -> None:
    """Call ``send()``, which writes one message of at most PIPE_BUF bytes to the non-blocking
    pipe ``fd``: such a write is whole or nothing. While the pipe is full, wait for room, and
    raise ChildFailed if the reader takes nothing for ``timeout`` s (it has died or hangs),
    rather than block forever."""
    while True:
        try:
            send()
            return
        except BlockingIOError:
            if not select.select([], [fd], [], timeout)[1]:
                raise ChildFailed(f"the reader of pipe {fd} took nothing for {timeout:g} s") from None


def spawn(args: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start a program with pipes on stdin and stdout, recorded so that kill_all ends it."""
    proc = subprocess.Popen(list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    _spawned[proc.pid] = proc
    return proc


def forget(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Wait for a spawned program to end (killing it if it will not), and stop tracking it."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _spawned.pop(proc.pid, None)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def kill_all() -> int:
    """Kill, by pid, every child still running, and reap it. Returns how many were killed."""
    killed = 0
    for pid in list(_forked):
        killed += _kill(pid)
    for proc in list(_spawned.values()):
        if proc.poll() is None:
            proc.kill()
            killed += 1
        forget(proc)
    return killed


def _kill(pid: int) -> int:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        hit = 1
    except (ProcessLookupError, ChildProcessError):
        hit = 0
    _forked.pop(pid, None)
    return hit


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived: stop, clean up, report what was measured."""


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into Stopped, so that the clean-up in finally blocks runs for
    them as it does for Ctrl-C (KeyboardInterrupt)."""

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)


def voluntary_switches(pids: Sequence[int]) -> int:
    """How many times, in all, these processes have blocked and been woken so far (Linux:
    ``voluntary_ctxt_switches`` in /proc/PID/status; single-threaded processes only)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def set_timer_slack(ns: int) -> None:
    """Let sleeps end within ``ns`` of their deadline (Linux's default slack is 50 µs): the
    pacing between changes is then what was asked for. Forked workers inherit it."""
    _libc.prctl(_PR_SET_TIMERSLACK, ns, 0, 0, 0)
