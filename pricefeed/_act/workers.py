"""What runs an action: a worker process for a command, a thread for a sync callable, a task
for an async one. The engine (``pool``) sees them through one small interface, ``Worker``:

- ``start()``: get ready (a process: spawn it and wait for its ``ready``);
- ``run(item)``: run one change's action, return its ``Outcome`` (never raise for the
  action's own failure, which is the outcome's business);
- ``kill()``: end the action in flight at once (a process group, a task); a thread cannot be
  killed, which is why ``act()`` refuses a timeout for a sync handler;
- ``close()``: let it go (its action, if any, already ended or killed);
- ``abandon()``: it did not end its action when told to kill it: end it some other way
  (a worker process is killed, and its action's group), as it will be let go.

A worker whose ``run`` comes back with ``died`` set is gone; the engine replaces it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import IO, Any, Awaitable, Callable, Dict, List, Optional, Tuple

from .._errors import PricefeedError
from .._values import Fields, Quote
from . import worker as _worker_program
from .schedule import Item

__all__ = [
    "Outcome",
    "Worker",
    "ProcessWorker",
    "ThreadWorker",
    "TaskWorker",
    "OWN_VARIABLES",
    "Environment",
    "TAIL_BYTES",
]

TAIL_BYTES = _worker_program.TAIL_BYTES
#: How long a new worker process may take to say it is ready.
START_TIMEOUT = 30.0
#: How long a worker gets to report an action it was told to kill, or to exit when let go,
#: before it is killed itself.
KILL_TIMEOUT = 5.0

#: Variables of pricefeed's own, which a field's variable (PRICEFEED_ and its name in capitals)
#: must not replace: those --exec sets for every change, and those that configure pricefeed.
OWN_VARIABLES = frozenset({"FEED", "SYMBOL", "SEQ", "TIME_NS", "CHANGED", "ATTEMPT", "WAIT", "PURE", "DIR", "LOCK_DIR"})


@dataclass
class Outcome:
    """How an action ended. ``ok``: it succeeded. Otherwise ``status`` (its exit code),
    ``signal`` (the signal that ended it), ``error`` (a Python handler's exception, or what
    became of a worker that died), ``killed`` (the pool killed it: timeout or stop) and
    ``died`` (the worker itself died, and is to be replaced) say how; ``tail`` is the end of
    its output (a command's) or of its traceback (a callable's)."""

    ok: bool
    status: Optional[int] = None
    signal: Optional[int] = None
    error: str = ""
    tail: str = ""
    killed: bool = False
    died: bool = False

    def how(self) -> str:
        """How it failed, in words: "exited 3", "was killed by signal 9 (SIGKILL)", ..."""
        if self.error:
            return self.error
        if self.signal is not None:
            return f"was killed by {_signal_name(self.signal)}"
        return f"exited {self.status}"


def _signal_name(number: int) -> str:
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


class Worker:
    """The interface the engine uses (see the module docstring)."""

    #: When it last finished an action (or started): what the pool's idle rule looks at.
    idle_since: float = 0.0
    #: True once it is gone (a worker process that exited or was killed).
    dead: bool = False

    async def start(self) -> None:
        self.idle_since = time.monotonic()

    async def run(self, item: Item) -> Outcome:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass


# -- commands: worker processes --------------------------------------------------------------------
class Environment:
    """The variables of a change's action: PRICEFEED_FEED, _SYMBOL, _SEQ, _TIME_NS, _CHANGED,
    _ATTEMPT, and one PRICEFEED_NAME per field (its value as the text output writes it), except
    a field whose variable would be one of OWN_VARIABLES: that is said once, through ``report``."""

    def __init__(self, feed: str, report: Callable[[str], None]) -> None:
        self.feed = feed
        self.report = report
        self._names: Dict[Fields, List[Tuple[str, str]]] = {}

    def _variables(self, schema: Fields) -> List[Tuple[str, str]]:
        found = self._names.get(schema)
        if found is None:
            found = []
            for name, _ in schema:
                if name.upper() in OWN_VARIABLES:
                    self.report(
                        f"field {name!r} is not given to --exec: PRICEFEED_{name.upper()} is "
                        "one of pricefeed's own variables"
                    )
                else:
                    found.append((name, f"PRICEFEED_{name.upper()}"))
            self._names[schema] = found
        return found

    def __call__(self, q: Quote, attempt: int) -> Dict[str, str]:
        values = q.fields
        env = {variable: repr(values[name]) for name, variable in self._variables(q.schema)}
        env.update(
            PRICEFEED_FEED=self.feed,
            PRICEFEED_SYMBOL=q.symbol,
            PRICEFEED_SEQ=str(q.seq),
            PRICEFEED_TIME_NS=str(q.time_ns),
            PRICEFEED_CHANGED=",".join(q.changed),
            PRICEFEED_ATTEMPT=str(attempt),
        )
        return env


class ProcessWorker(Worker):
    """A long-lived worker process (``worker.py``) that runs the command for one change at a
    time. Its replies are read by a thread of its own and handed to the loop; the loop writes
    its requests (small lines into a pipe the worker always reads)."""

    def __init__(self, command: str, environment: Environment) -> None:
        self.command = command
        self.environment = environment
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.pid = 0
        self.action_pid: Optional[int] = None
        self._ident = 0
        self._waiting: Optional[asyncio.Future[Outcome]] = None
        self._ready: Optional[asyncio.Future[None]] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        program = [sys.executable, os.path.abspath(_worker_program.__file__), str(os.getpid())]
        if os.name == "posix":
            read_end, write_end = os.pipe()
            try:
                self.proc = subprocess.Popen(
                    [*program, str(write_end)], stdin=subprocess.PIPE, pass_fds=(write_end,), close_fds=True
                )
            finally:
                os.close(write_end)
            replies: IO[bytes] = os.fdopen(read_end, "rb")
        else:
            self.proc = subprocess.Popen([*program, "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert self.proc.stdout is not None
            replies = self.proc.stdout
        self.pid = self.proc.pid
        threading.Thread(target=self._read, args=(replies,), name=f"pricefeed-worker-{self.pid}", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            self._terminate()
            raise PricefeedError(f"action worker pid {self.pid} did not start within {START_TIMEOUT:g} s") from None
        await super().start()

    def _read(self, replies: Any) -> None:
        """The reply thread: each line to the loop, then the end (the worker exited)."""
        loop = self._loop
        assert loop is not None
        try:
            for line in replies:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                loop.call_soon_threadsafe(self._on_message, message)
        except (OSError, ValueError):
            pass
        finally:
            replies.close()
            try:
                loop.call_soon_threadsafe(self._on_exit)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for this worker any more

    def _on_message(self, message: Dict[str, Any]) -> None:
        event = message.get("event")
        if event == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif event == "started" and message.get("id") == self._ident:
            self.action_pid = int(message["pid"])
        elif event == "done" and message.get("id") == self._ident:
            self.action_pid = None
            status, sig = message.get("status"), message.get("signal")
            outcome = Outcome(status == 0, status, sig, "", str(message.get("tail", "")))
            self._resolve(outcome)

    def _resolve(self, outcome: Outcome) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_result(outcome)

    def _on_exit(self) -> None:
        """The worker's reply pipe closed: it exited, or was killed."""
        self.dead = True
        assert self.proc is not None
        code = self.proc.wait()
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited {code}"
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(PricefeedError(f"action worker pid {self.pid} {how} before it was ready"))
        # Its action, a group of its own, would go on unwatched: end it (Rule 1 of worker.py).
        self._kill_group()
        self._resolve(Outcome(False, error=f"lost its worker (pid {self.pid} {how})", died=True))

    def _kill_group(self) -> None:
        pid, self.action_pid = self.action_pid, None
        if pid is not None and os.name == "posix":
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    def _send(self, message: Dict[str, Any]) -> bool:
        proc = self.proc
        if proc is None or proc.stdin is None or self.dead:
            return False
        try:
            proc.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
            proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    async def run(self, item: Item) -> Outcome:
        assert self._loop is not None
        self._ident += 1
        waiting: asyncio.Future[Outcome] = self._loop.create_future()
        self._waiting = waiting
        env = self.environment(item.quote, item.attempt)
        if not self._send({"op": "run", "id": self._ident, "cmd": self.command, "env": env}):
            self._waiting = None
            if not self.dead:
                self._terminate()
            return Outcome(False, error=f"lost its worker (pid {self.pid}, which stopped reading)", died=True)
        outcome = await waiting
        self.idle_since = time.monotonic()
        return outcome

    def kill(self) -> None:
        if not self._send({"op": "kill"}):
            self._kill_group()

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def abandon(self) -> None:
        """It did not answer a kill (stopped, or stuck): kill it, and its action's group,
        whose pid the subscriber has (the GATE of worker.py)."""
        self._terminate()
        self._kill_group()

    async def close(self) -> None:
        """End of its input: the worker exits (killing any action still running, Rule 1 of
        worker.py); one that does not within KILL_TIMEOUT is killed."""
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + KILL_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if proc.poll() is None:
            proc.kill()
            await asyncio.sleep(0)
        self._kill_group()


# -- callables: threads and tasks ------------------------------------------------------------------
Handler = Callable[[Quote], Any]


def _exception_tail(exc: BaseException) -> Tuple[str, str]:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"raised {type(exc).__name__}: {exc}", text[-TAIL_BYTES:]


class ThreadWorker(Worker):
    """A thread of its own that calls a sync handler, one change at a time."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._jobs: queue.SimpleQueue[Optional[Tuple[Quote, asyncio.Future[Outcome]]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="pricefeed-act", daemon=True)
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        await super().start()

    def _serve(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            job = self._jobs.get()
            if job is None:
                return
            quote, future = job
            try:
                self.handler(quote)
                outcome = Outcome(True)
            except BaseException as exc:  # the handler's failure is the outcome, whatever it is
                error, tail = _exception_tail(exc)
                outcome = Outcome(False, error=error, tail=tail)
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:
                return  # the loop is closed

    async def run(self, item: Item) -> Outcome:
        assert self._loop is not None
        future: asyncio.Future[Outcome] = self._loop.create_future()
        self._jobs.put((item.quote, future))
        outcome = await asyncio.shield(future)
        self.idle_since = time.monotonic()
        return outcome

    def kill(self) -> None:
        pass  # a thread cannot be killed: act() refuses a timeout for a sync handler

    async def close(self) -> None:
        self._jobs.put(None)


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


class TaskWorker(Worker):
    """A slot for an async handler: each change's call runs as a task, which kill() cancels."""

    def __init__(self, handler: Callable[[Quote], Awaitable[Any]]) -> None:
        self.handler = handler
        self._task: Optional[asyncio.Task[Any]] = None
        self._killed = False

    async def run(self, item: Item) -> Outcome:
        self._killed = False
        self._task = asyncio.ensure_future(self.handler(item.quote))
        try:
            await asyncio.wait({self._task})
            self._task.result()
            outcome = Outcome(True)
        except asyncio.CancelledError:
            if not self._task.done():  # the engine itself was cancelled: pass it on
                self._task.cancel()
                raise
            outcome = Outcome(False, error="was cancelled", killed=self._killed)
        except Exception as exc:
            error, tail = _exception_tail(exc)
            outcome = Outcome(False, error=error, tail=tail)
        finally:
            self._task = None
        self.idle_since = time.monotonic()
        return outcome

    def kill(self) -> None:
        if self._task is not None and not self._task.done():
            self._killed = True
            self._task.cancel()


def is_async(handler: Callable[..., Any]) -> bool:
    """True for an ``async def`` function (or an object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None))  # noqa: B004
