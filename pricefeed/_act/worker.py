"""The worker process of the action pool: it runs its subscriber's command, one change at a time.

It is started as ``python .../pricefeed/_act/worker.py PARENT_PID REPLY_FD`` and imports only
the standard library (not pricefeed), so that it starts in tens of milliseconds. It speaks JSON
lines: requests on its standard input, replies on the descriptor REPLY_FD (its standard output
is left to the actions, so that what they print reaches the subscriber's terminal; on Windows,
which cannot pass a descriptor, replies go to standard output and the actions' output to
standard error)::

    request  {"op": "run", "id": 7, "cmd": "place-order", "env": {"PRICEFEED_SEQ": "42", ...}}
    request  {"op": "kill"}                       kill the action running, its whole group
    reply    {"event": "ready", "pid": 1234}
    reply    {"event": "started", "id": 7, "pid": 1240}
    reply    {"event": "done", "id": 7, "status": 0, "signal": null, "tail": "..."}

Each action runs as ``sh -c CMD`` (``cmd.exe /c`` on Windows; see GATE for what runs first)
in a new session, so that it is
a process group of its own: a kill reaches whatever it started, and Ctrl-C in the terminal
reaches the subscriber (which decides) but not the actions. Its standard output and error are
copied to the worker's as they come (the tee), and the last TAIL_BYTES of both, interleaved,
go back with ``done`` for error reports.

Rule 1: a worker never outlives its subscriber. On Linux the kernel sends it SIGTERM when the
subscriber dies (PR_SET_PDEATHSIG); everywhere, the end of its standard input means the same.
Either way it kills the action in flight (its whole group: that action was not recorded as
done, so a restarted subscriber runs it again) and exits. It ignores SIGINT: Ctrl-C is the
subscriber's to handle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import IO, Any, Dict, List, Optional

#: How much of an action's output is kept for its error report.
TAIL_BYTES = 2048
PR_SET_PDEATHSIG = 1
#: What the action's shell runs first: it waits for the worker's go, given once the worker has
#: told the subscriber the action's pid (its process group). A worker killed before that
#: closes the pipe, and the command never runs: so the subscriber knows the group of every
#: command that runs, and can kill it if the worker dies.
GATE = 'IFS= read -r _ || exit 125; exec /bin/sh -c "$0" </dev/null'
WINDOWS = sys.platform == "win32"


class Action:
    """One run of the command: the process, the threads that copy its output, its tail."""

    def __init__(self, ident: int, command: str, env: Dict[str, str], out: int, err: int) -> None:
        self.ident = ident
        self.tail = bytearray()
        self._tail_lock = threading.Lock()
        # Re-entrant: SIGTERM's handler may kill while the main thread is killing already.
        self._kill_lock = threading.RLock()
        self.finished = False
        kwargs: Dict[str, Any] = {}
        if WINDOWS:
            args: Any = command
            kwargs.update(shell=True, stdin=subprocess.DEVNULL)
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            args = ["/bin/sh", "-c", GATE, command]
            kwargs.update(start_new_session=True, stdin=subprocess.PIPE)
        self.proc = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.threads = [
            threading.Thread(target=self._tee, args=(self.proc.stdout, out), daemon=True),
            threading.Thread(target=self._tee, args=(self.proc.stderr, err), daemon=True),
        ]
        for t in self.threads:
            t.start()

    def open_gate(self) -> None:
        """Let the command run (see GATE): its pid is with the subscriber now."""
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b"\n")
                self.proc.stdin.close()
            except OSError:
                pass  # it died already: its exit is reported as usual

    def _tee(self, source: IO[bytes], target: Optional[int]) -> None:
        fd = source.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            if target is not None:
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(target, view) :]
                except OSError:
                    target = None  # the terminal or pipe went away: keep only the tail
            with self._tail_lock:
                self.tail += chunk
                del self.tail[:-TAIL_BYTES]
        source.close()

    def wait(self) -> Dict[str, Any]:
        code = self.proc.wait()
        with self._kill_lock:
            self.finished = True
        for t in self.threads:
            # A background child of the action may hold its output open: do not wait for it.
            t.join(timeout=0.5)
        with self._tail_lock:
            tail = bytes(self.tail).decode("utf-8", "replace")
        if code < 0:
            return {"event": "done", "id": self.ident, "status": None, "signal": -code, "tail": tail}
        return {"event": "done", "id": self.ident, "status": code, "signal": None, "tail": tail}

    def kill(self) -> None:
        """Kill the action's whole process group (on Windows, its shell)."""
        with self._kill_lock:
            if self.finished:
                return
            try:
                if WINDOWS:
                    self.proc.kill()
                else:
                    os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass


class Worker:
    def __init__(self, reply: int, out: int, err: int) -> None:
        self.reply = reply
        self.out = out
        self.err = err
        self.action: Optional[Action] = None
        self._write_lock = threading.Lock()
        self._dying = False

    def send(self, message: Dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode("utf-8")
        with self._write_lock:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.reply, view) :]
            except OSError:
                self.die()  # the subscriber is gone

    def run(self, request: Dict[str, Any]) -> None:
        ident = int(request["id"])
        try:
            action = Action(ident, str(request["cmd"]), dict(request["env"]), self.out, self.err)
        except OSError as exc:
            self.send({"event": "done", "id": ident, "status": 127, "signal": None, "tail": f"cannot start: {exc}"})
            return
        self.action = action
        self.send({"event": "started", "id": ident, "pid": action.proc.pid})
        action.open_gate()
        threading.Thread(target=self._finish, args=(action,), daemon=True).start()

    def _finish(self, action: Action) -> None:
        result = action.wait()
        self.action = None
        self.send(result)

    def kill(self) -> None:
        action = self.action
        if action is not None:
            action.kill()

    def die(self, *_: object) -> None:
        """The subscriber is gone (Rule 1): kill the action in flight and exit now. Called
        again meanwhile (SIGTERM's handler while the end of input is being handled), it
        leaves the first call to finish."""
        if self._dying:
            return
        self._dying = True
        self.kill()
        os._exit(0)

    def serve(self, requests: IO[bytes]) -> None:
        self.send({"event": "ready", "pid": os.getpid()})
        for line in requests:
            request = json.loads(line)
            if request.get("op") == "run":
                self.run(request)
            elif request.get("op") == "kill":
                self.kill()
        self.die()


def _die_with(parent: int) -> None:
    """Linux: have the kernel send SIGTERM when the subscriber dies; if it died before that
    was set up, the parent is another process already."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def main(argv: List[str]) -> None:
    parent, reply_arg = int(argv[1]), argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if WINDOWS or reply_arg == "-":
        worker = Worker(sys.stdout.fileno(), sys.stderr.fileno(), sys.stderr.fileno())
    else:
        worker = Worker(int(reply_arg), sys.stdout.fileno(), sys.stderr.fileno())
    if not WINDOWS:
        signal.signal(signal.SIGTERM, worker.die)
    _die_with(parent)
    worker.serve(sys.stdin.buffer)


if __name__ == "__main__":
    main(sys.argv)
