"""The library's way to act on changes: ``act()`` (blocking) and ``aact()`` (asyncio), and
``run_command()``, which ``pricefeed subscribe --exec`` calls. All three run the same engine
(``pool.Engine``) under the same rules; docs/actions.md describes them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterable, Optional, Tuple, Union

from .._errors import InvalidInput, PricefeedError
from .._roles.subscriber import Event, Subscriber
from .._values import Quote
from . import state as S
from .options import (
    DEFAULT_GRACE,
    DEFAULT_IDLE,
    DEFAULT_QUEUE,
    OnError,
    Settings,
    parse_jobs,
    parse_on_error,
    parse_queue,
    parse_seconds,
)
from .pool import ActResult, Engine
from .workers import Environment, ProcessWorker, TaskWorker, ThreadWorker, Worker, is_async

__all__ = ["ActResult", "act", "aact", "run_command"]

_log = logging.getLogger("pricefeed.act")

Handler = Union[Callable[[Quote], Any], Callable[[Quote], Awaitable[Any]]]


def _settings(
    handler: Handler, jobs: Union[int, str, Tuple[int, int]], queue: Union[int, str], conflate: bool,
    on_error: Union[str, OnError], timeout: Optional[float], grace: float, idle: float, count: Optional[int],
) -> Settings:  # fmt: skip
    if not callable(handler):
        raise InvalidInput(f"handler must be a function of one Quote (sync or async): got {type(handler).__name__}")
    low, high = parse_jobs(jobs)
    if timeout is not None:
        timeout = parse_seconds(timeout, "timeout", allow_zero=False)
        if not is_async(handler):
            raise InvalidInput(
                "timeout= needs an async handler: a sync handler runs in a thread, and Python cannot kill a "
                "thread, so a timed-out call would go on running; make the handler async (it is cancelled "
                "on timeout) or leave timeout out"
            )
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise InvalidInput(f"count must be a whole number >= 1 or None: got {count!r}")
    return Settings(
        jobs_min=low,
        jobs_max=high,
        queue=parse_queue(queue),
        conflate=bool(conflate),
        on_error=parse_on_error(on_error),
        timeout=timeout,
        grace=parse_seconds(grace, "grace"),
        idle=parse_seconds(idle, "idle", allow_zero=False),
        count=count,
    )


def _engine(
    handler: Handler, settings: Settings, state: Optional[str], report: Optional[Callable[[str], None]],
    on_event: Optional[Callable[[Event], None]],
) -> Engine:  # fmt: skip
    make: Callable[[], Worker] = (lambda: TaskWorker(handler)) if is_async(handler) else lambda: ThreadWorker(handler)
    return Engine(
        make,
        settings,
        report or _log.warning,
        on_event or (lambda event: _log.info("%r", event)),
        S.check_path(state) if state is not None else None,
    )


def _follow(
    symbols: Optional[Iterable[str]], conflate: bool, on: Optional[Iterable[str]], snapshot: bool, **more: Any
) -> Dict[str, Any]:
    return dict(symbols=symbols, conflate=conflate, on=on, snapshot=snapshot, **more)


async def _run(engine: Engine, source: AsyncIterator[Event]) -> ActResult:
    """Run the engine in a task of its own, so that cancelling the caller is a graceful stop
    (the engine's actions finish within grace, the state is written), then the cancellation."""
    task = asyncio.ensure_future(engine.run(source))
    try:
        result = await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            engine.request_stop("cancelled")
            await asyncio.wait([task])
        raise
    if engine.failure is not None:
        engine.failure.result = result
        raise engine.failure
    if engine.error is not None:
        raise engine.error
    return result


def _blocking(engine: Engine, sub: Subscriber, follow: Dict[str, Any]) -> ActResult:
    """Run the engine to its end on an event loop of its own, in a thread of its own, while
    this thread waits: in the main thread that wait is where SIGINT and SIGTERM arrive, and
    their handlers ask the engine for a graceful stop. The starting point is taken here,
    before the thread starts, so a change published once this call waits is not missed."""
    source = engine.prepare(sub, follow)
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(_run(engine, source))
        except BaseException as exc:  # handed to the caller's thread as it is
            box["error"] = exc

    thread = threading.Thread(target=target, name="pricefeed-act", daemon=True)
    reasons = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

    def on_signal(number: int, frame: Any) -> None:
        engine.stop_from_thread(reasons[signal.Signals(number)])

    previous: Dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in reasons:
            previous[sig] = signal.signal(sig, on_signal)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
    finally:
        if thread.is_alive():  # this thread was interrupted some other way: stop, and wait for it
            engine.stop_from_thread("interrupted")
            thread.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in box:
        raise box["error"]
    result: ActResult = box["result"]
    return result


def act(
    sub: Subscriber,
    handler: Handler,
    symbols: Optional[Iterable[str]] = None,
    *,
    jobs: Union[int, str, Tuple[int, int]] = 1,
    queue: int = DEFAULT_QUEUE,
    conflate: bool = False,
    on_error: Union[str, OnError] = "stop",
    timeout: Optional[float] = None,
    state: Optional[str] = None,
    grace: float = DEFAULT_GRACE,
    idle: float = DEFAULT_IDLE,
    on: Optional[Iterable[str]] = None,
    snapshot: bool = False,
    count: Optional[int] = None,
    report: Optional[Callable[[str], None]] = None,
    on_event: Optional[Callable[[Event], None]] = None,
) -> ActResult:
    """Call ``handler(quote)`` once per change of ``sub``'s feed (of ``symbols``, or of every
    symbol), until the feed ends or ``count`` changes were taken; blocks meanwhile.

    Changes of different symbols run in parallel, up to ``jobs`` at once (N, or "MIN:MAX" for
    a pool that grows under load and shrinks after ``idle`` seconds idle); those of one symbol
    run one at a time, in feed order. A sync handler runs in threads, an async one as tasks
    (on an event loop of this call's own). ``queue``: changes that may wait per busy symbol,
    the oldest dropped (and reported) beyond it; ``conflate``: only the newest waits.
    ``on_error``: "stop" (raise ActionFailed, after the running handlers finish), "skip", or
    "retry:N[:BACKOFF]". ``timeout``: seconds before an async handler is cancelled (refused
    for a sync one, which cannot be killed). ``state``: a state file to resume from and keep
    (docs/actions.md says what it guarantees). ``grace``: seconds running handlers get at a
    stop. ``on``, ``snapshot``: as for ``updates()``. ``report``: called with a line for each
    failure, drop and notice (default: the ``pricefeed.act`` logger); ``on_event``: called with
    each Gap, PublisherGone, PublisherRestarted and Reset.

    It runs on an event loop of its own in a thread of its own, while the calling thread
    waits. Ctrl-C (in the main thread) stops gracefully, writes the state, then raises
    KeyboardInterrupt; SIGTERM stops gracefully and returns (``stopped="terminated"``).
    Returns an ActResult. From a coroutine, use ``aact``."""
    settings = _settings(handler, jobs, queue, conflate, on_error, timeout, grace, idle, count)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise PricefeedError("act() blocks, so it cannot run inside an event loop: await aact(...) there")
    engine = _engine(handler, settings, state, report, on_event)
    result = _blocking(engine, sub, _follow(symbols, conflate, on, snapshot))
    if result.stopped == "interrupted":
        raise KeyboardInterrupt
    return result


async def aact(
    sub: Subscriber,
    handler: Handler,
    symbols: Optional[Iterable[str]] = None,
    *,
    jobs: Union[int, str, Tuple[int, int]] = 1,
    queue: int = DEFAULT_QUEUE,
    conflate: bool = False,
    on_error: Union[str, OnError] = "stop",
    timeout: Optional[float] = None,
    state: Optional[str] = None,
    grace: float = DEFAULT_GRACE,
    idle: float = DEFAULT_IDLE,
    on: Optional[Iterable[str]] = None,
    snapshot: bool = False,
    count: Optional[int] = None,
    report: Optional[Callable[[str], None]] = None,
    on_event: Optional[Callable[[Event], None]] = None,
) -> ActResult:
    """``act()`` for asyncio, on the running loop: the same arguments and rules. Cancelling
    the task that awaits it is a graceful stop: no more changes are taken, running handlers
    get ``grace`` seconds, the state is written, and then CancelledError is raised. It leaves
    the loop's signal handling alone."""
    settings = _settings(handler, jobs, queue, conflate, on_error, timeout, grace, idle, count)
    engine = _engine(handler, settings, state, report, on_event)
    return await _run(engine, engine.prepare(sub, _follow(symbols, conflate, on, snapshot)))


def run_command(
    sub: Subscriber,
    command: str,
    settings: Settings,
    follow: Dict[str, Any],
    state: Optional[str],
    report: Callable[[str], None],
    on_event: Callable[[Event], None],
) -> ActResult:
    """``subscribe --exec``: run ``command`` in worker processes once per change; SIGINT and
    SIGTERM stop gracefully (the result says which). ActionFailed under ``stop``."""
    environment = Environment(sub.name, report)
    engine = Engine(lambda: ProcessWorker(command, environment), settings, report, on_event, state)
    return _blocking(engine, sub, follow)
