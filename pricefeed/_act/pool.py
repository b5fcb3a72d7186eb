"""The engine of the action pool, on asyncio: it reads the feed's changes, queues them per
symbol (``schedule``), hands them to workers (``workers``), grows and shrinks the pool,
retries, times out, stops gracefully, and keeps the state file (``state``).

Rule 1 (back-pressure): the engine takes the next change from the feed only while a worker
could start on something: an idle worker, or room to start one. While every worker is busy,
the changes wait in the feed's ring, which is the bounded buffer there already is; a
subscriber that falls more than a ring behind gets the feed's Gap and then the latest value of
each symbol, as any subscriber does. So ``--jobs 1`` behaves as a serial ``--exec`` always did.
The per-symbol queues hold the changes of symbols whose action is running, read while other
workers were free.

Rule 2 (the pool): it starts MIN workers. When a change is ready and no worker is idle, it
starts one more per waiting change, up to MAX. A worker idle for ``idle`` seconds is retired
when there are more than MIN, one per tick (a quarter of ``idle``), so a pool that was busy a
moment ago shrinks gradually instead of killing and spawning in a loop. A worker that dies is
replaced; its action is reported and counts as a failure.

Rule 3 (what is recorded): an action's symbol and sequence go into the state file, written
before that symbol's next action may start, when the action will never run again: it
succeeded, or it failed and the policy gave up on it. An action killed at a stop, that
failed at a stop with retries left, or that failed under ``stop``, is not recorded, and holds
the resume point below it.

Rule 4 (stopping): a stop (a signal, a failure under ``stop``, an error of the feed, the
cancellation of ``aact``) takes no more changes and starts no more actions; those running get
``grace`` seconds to finish (a second signal cuts it short), then they are killed (a process
group, a task). The state is written last. The end of the feed, or ``count`` changes taken,
is not a stop: every change taken is acted on first.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Deque, Dict, List, Optional, Set

from .._errors import ActionFailed, InvalidInput, PricefeedError
from .._roles.subscriber import Event, Subscriber
from .._values import Gap, Quote, Reset
from . import state as S
from .options import Settings
from .schedule import Item, Schedule
from .workers import KILL_TIMEOUT, Outcome, Worker

__all__ = ["ActResult", "Engine"]

#: Failures to start a worker in a row after which the pool gives up (and stops).
SPAWN_TRIES = 3


@dataclass(frozen=True)
class ActResult:
    """What an ``act()`` run did. ``done``: actions that succeeded; ``failed``: changes whose
    action failed for good (after any retries); ``retried``: retries made; ``dropped``:
    changes dropped by a full queue (reported); ``superseded``: changes replaced by a newer one
    under conflation; ``gaps``: the feed's Gap events; ``skipped``: changes a state file
    showed were acted on already; ``unfinished``: changes taken but not acted on to the end
    (killed, or still queued, at a stop). ``stopped``: why it ended: "ended" (the feed ended),
    "count", "interrupted" (SIGINT), "terminated" (SIGTERM), "cancelled", "failed" (an action
    failed under ``on_error="stop"``) or "error" (the feed raised)."""

    done: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0
    superseded: int = 0
    gaps: int = 0
    skipped: int = 0
    unfinished: int = 0
    stopped: str = ""


def _describe(item: Item) -> str:
    return f"action for {item.symbol} seq {item.seq}"


def _with_tail(text: str, tail: str) -> str:
    tail = tail.rstrip("\n")
    if not tail:
        return text
    lines = "\n".join("    " + line for line in tail.splitlines())
    return f"{text}; its output ended with:\n{lines}"


class Engine:
    def __init__(
        self,
        make_worker: Callable[[], Worker],
        settings: Settings,
        report: Callable[[str], None],
        on_event: Callable[[Event], None],
        state_path: Optional[str] = None,
    ) -> None:
        self.make_worker = make_worker
        self.settings = settings
        self.report = report
        self.on_event = on_event
        self.state_path = state_path
        self.schedule = Schedule(settings.queue, settings.conflate)
        self.state: Optional[S.State] = None
        self._workers: List[Worker] = []
        self._idle: Deque[Worker] = deque()
        self._spawning = 0
        self._spawn_failures = 0  # in a row
        self._tasks: Set[asyncio.Task[None]] = set()
        self._side: Set[asyncio.Future[None]] = set()
        self._running: Dict[int, Worker] = {}  # id(item) -> its worker
        self._retry_waiters: Deque[asyncio.Future[Optional[Worker]]] = deque()
        self._killing = False
        self._reading_done = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._early: List[str] = []  # stops asked for before the loop ran
        self._lock = threading.Lock()
        self.stopped = ""
        self.failure: Optional[ActionFailed] = None
        self.error: Optional[BaseException] = None
        self.taken = 0
        self.counts: Dict[str, int] = dict(done=0, failed=0, retried=0, gaps=0, skipped=0, unfinished=0)

    # -- the run -----------------------------------------------------------------------------
    def prepare(self, sub: Subscriber, follow: Dict[str, Any]) -> AsyncIterator[Event]:
        """Load the state file and take the starting point, now, in the calling thread: the
        changes to act on (``follow``: the arguments of ``sub.aupdates`` but ``after``)."""
        after = self._resume(sub)
        start = sub.head  # before the start is taken: a change in between is not lost (Rule 5 of schedule)
        self.schedule.note(after if after is not None else start)
        source = sub.aupdates(**follow, after=after)
        self._save()
        return source

    async def run(self, source: AsyncIterator[Event]) -> ActResult:
        """Act on the changes of ``source`` (from ``prepare``) until the feed ends, ``count``
        changes were taken, or a stop."""
        # The loop's primitives are made here, on the loop that runs them (Python 3.9 binds
        # them to a loop when they are made).
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            early, self._early = self._early, []
        for reason in early:
            self.request_stop(reason)
        helpers = [asyncio.ensure_future(self._read(source)), asyncio.ensure_future(self._tend())]
        for _ in range(self.settings.jobs_min):
            self._spawn()
        try:
            await self._loop_until_done()
        except asyncio.CancelledError:
            self.request_stop("cancelled")
            await self._loop_until_done()
            raise
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.wait(helpers)
            await self._finish(source)
        return self.result()

    def stop_from_thread(self, reason: str) -> None:
        """``request_stop`` from another thread or a signal handler."""
        with self._lock:
            loop = self._loop
            if loop is None:
                self._early.append(reason)
                return
        try:
            loop.call_soon_threadsafe(self.request_stop, reason)
        except RuntimeError:
            pass  # the loop is closed: the run is over

    def result(self) -> ActResult:
        c = self.counts
        unfinished = c["unfinished"] + len(self.schedule.pending())
        return ActResult(
            c["done"], c["failed"], c["retried"], self.schedule.dropped, self.schedule.superseded, c["gaps"],
            c["skipped"], unfinished, self.stopped,
        )  # fmt: skip

    async def _loop_until_done(self) -> None:
        """Dispatch until drained (the feed ended, or ``count``) or stopped."""
        while True:
            if self._stop.is_set():
                await self._stop_running()
                return
            self._dispatch()
            if self._reading_done and not self.schedule.queued and not self._tasks and not self._retry_waiters:
                return
            self._wake.clear()
            await self._wake.wait()

    def _poke(self) -> None:
        self._wake.set()
        self._room.set()

    def request_stop(self, reason: str) -> None:
        """Stop (Rule 4): the first reason given is the one reported. The end of the feed and
        ``count`` are no stop (Rule 4): a stop while their last actions run is reported instead."""
        if self._stop.is_set():
            self._hurry.set()  # asked again: no more grace
            return
        if self.stopped in ("", "ended", "count"):
            self.stopped = reason
        self._stop.set()
        for waiter in self._retry_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._retry_waiters.clear()
        self._poke()

    async def _stop_running(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.grace
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            while self._tasks and not self._hurry.is_set() and loop.time() < deadline:
                await asyncio.wait(
                    [*self._tasks, hurry], timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            hurry.cancel()
        if self._tasks:
            self._killing = True
            for worker in list(self._running.values()):
                worker.kill()
            _, pending = await asyncio.wait(self._tasks, timeout=KILL_TIMEOUT)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # -- reading -------------------------------------------------------------------------------
    def _has_room(self) -> bool:
        """Rule 1: could a worker start on a change now?"""
        if self._idle:
            return True
        return len(self._workers) + self._spawning < self.settings.jobs_max

    async def _read(self, source: AsyncIterator[Event]) -> None:
        count = self.settings.count
        try:
            while not self._stop.is_set():
                while not self._has_room():
                    self._room.clear()
                    await self._room.wait()
                try:
                    event = await source.__anext__()
                except StopAsyncIteration:
                    self.stopped = self.stopped or "ended"
                    return
                self._take(event)
                self._dispatch()
                if count is not None and self.taken >= count:
                    self.stopped = self.stopped or "count"
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the feed's error (Timeout, FeedReset, ...): stop, then raise it
            self.error = exc
            self.request_stop("error")
        finally:
            self._reading_done = True
            self._poke()

    def _take(self, event: Event) -> None:
        if isinstance(event, Quote):
            self.taken += 1
            state = self.state
            if state is not None and self.schedule.gen == 0 and event.seq <= state.symbols.get(event.symbol, -1):
                self.counts["skipped"] += 1  # acted on before a restart
                self.schedule.note(event.seq)
                return
            self.schedule.offer(event)
            return
        if isinstance(event, Gap):
            self.counts["gaps"] += 1
        elif isinstance(event, Reset):
            self.schedule.new_generation()
            if self.state is not None:
                self.report(
                    f"feed {self.state.feed!r} was removed and created anew (incarnation {event.incarnation:#x}): "
                    "the state starts afresh"
                )
                self.state = S.State(self.state.feed, event.incarnation)
        self.on_event(event)

    # -- dispatching ---------------------------------------------------------------------------
    def _dispatch(self) -> None:
        if self._stop.is_set():
            return
        while self._retry_waiters:
            worker = self._take_idle()
            if worker is None:
                break
            waiter = self._retry_waiters.popleft()
            if waiter.done():
                self._idle.appendleft(worker)
            else:
                waiter.set_result(worker)
        while not self._retry_waiters and self.schedule.has_ready():
            worker = self._take_idle()
            if worker is None:
                break
            item = self.schedule.pop()
            assert item is not None
            self._start(item, worker)
        waiting = len(self._retry_waiters) + self.schedule.ready_count()
        room = self.settings.jobs_max - len(self._workers) - self._spawning
        for _ in range(min(waiting - self._spawning, room)):
            self._spawn()

    def _take_idle(self) -> Optional[Worker]:
        """An idle worker that is alive; one that died while idle is let go (and replaced
        when needed), never handed a change."""
        while self._idle:
            worker = self._idle.popleft()
            if not worker.dead:
                return worker
            self._workers.remove(worker)
            self._background(worker.close())
        return None

    def _start(self, item: Item, worker: Worker) -> None:
        for d in self.schedule.take_drops(item.symbol):
            self._report_drop(d.symbol, d.count, d.first, d.last)
        task = asyncio.ensure_future(self._act(item, worker))
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.error = self.error or task.exception()
            self.request_stop("error")
        self._poke()

    def _release(self, worker: Worker, outcome: Outcome) -> None:
        if outcome.died:
            if worker in self._workers:
                self._workers.remove(worker)
            self._background(worker.close())
        else:
            self._idle.append(worker)
        self._poke()

    def _spawn(self) -> None:
        self._spawning += 1
        self._background(self._spawned(self.make_worker()))

    def _background(self, work: Awaitable[None]) -> None:
        """Run ``work`` on its own, holding it until it is done (the loop holds tasks weakly)."""
        task = asyncio.ensure_future(work)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _spawned(self, worker: Worker) -> None:
        try:
            await worker.start()
        except (PricefeedError, OSError) as exc:
            # One that was killed while starting is replaced like any other; a pool that
            # cannot start a worker three times in a row (no Python, no processes left) stops.
            self._spawn_failures += 1
            self.report(f"cannot start an action worker: {exc}")
            if self._spawn_failures >= SPAWN_TRIES:
                self.error = self.error or exc
                self.request_stop("error")
            return
        finally:
            self._spawning -= 1
            self._poke()
        self._spawn_failures = 0
        if self._stop.is_set():
            await worker.close()
            return
        self._workers.append(worker)
        self._idle.append(worker)
        self._poke()

    async def _tend(self) -> None:
        """Rule 2's shrinking: each tick, retire the longest-idle worker above MIN that has
        been idle for ``idle`` seconds; let go of workers that died idle; bring the pool back
        up to MIN."""
        idle = self.settings.idle
        tick = min(max(idle / 4, 0.05), 1.0)
        while True:
            await asyncio.sleep(tick)
            if self._stop.is_set():
                return
            for dead in [w for w in self._idle if w.dead]:
                self._idle.remove(dead)
                self._workers.remove(dead)
                self._background(dead.close())
            now = time.monotonic()
            if len(self._workers) > self.settings.jobs_min and self._idle:
                oldest = min(self._idle, key=lambda w: w.idle_since)
                if now - oldest.idle_since >= idle:
                    self._idle.remove(oldest)
                    self._workers.remove(oldest)
                    await oldest.close()
            for _ in range(self.settings.jobs_min - len(self._workers) - self._spawning):
                self._spawn()

    async def _worker_for_retry(self) -> Optional[Worker]:
        waiter: asyncio.Future[Optional[Worker]] = asyncio.get_running_loop().create_future()
        self._retry_waiters.append(waiter)
        self._poke()
        return await waiter

    # -- one change ----------------------------------------------------------------------------
    async def _act(self, item: Item, worker: Worker) -> None:
        policy = self.settings.on_error
        while True:
            item.attempt += 1
            self._running[id(item)] = worker
            try:
                outcome = await self._attempt(item, worker)
            except asyncio.CancelledError:
                if self._killing:  # the stop gave up on it (a sync handler's thread goes on)
                    self._unfinished(item, "did not end when killed", "")
                raise
            finally:
                del self._running[id(item)]
            self._release(worker, outcome)
            if outcome.ok:
                self.counts["done"] += 1
                self._record(item)
                return
            if self._killing:
                self._unfinished(item, outcome.how(), outcome.tail)
                return
            if policy.policy == "stop":
                self.counts["failed"] += 1
                self.report(_with_tail(f"{_describe(item)} {outcome.how()}", outcome.tail))
                self.schedule.finish(item, done=False)
                if self.failure is None:
                    self.failure = ActionFailed(
                        f"{_describe(item)} {outcome.how()}; stopped (on error: stop)", item.symbol, item.seq
                    )
                self.request_stop("failed")
                return
            last = policy.policy != "retry" or item.attempt > policy.retries
            if not last and self._stop.is_set():
                # The policy has not given up on it: the stop cut its retries short, so it is
                # unfinished (Rule 3), as one whose retry waits at the stop is.
                tries = f"(attempt {item.attempt} of {policy.retries + 1})"
                self._unfinished(item, f"{outcome.how()} {tries}", outcome.tail)
                return
            if not last:
                tries = f"(attempt {item.attempt} of {policy.retries + 1})"
                if self._superseded(item):
                    why = f"not retried: a newer value of {item.symbol} waits"
                    self.report(_with_tail(f"{_describe(item)} {outcome.how()} {tries}; {why}", outcome.tail))
                    return
                delay = policy.delay(item.attempt)
                self.report(
                    _with_tail(f"{_describe(item)} {outcome.how()} {tries}; retrying in {delay:g} s", outcome.tail)
                )
                next_worker = await self._after(delay)
                if next_worker is not None and (self._stop.is_set() or self._superseded(item)):
                    # A stop came as the worker was handed over, or a newer value during the backoff.
                    self._idle.appendleft(next_worker)
                    self._poke()
                    if not self._stop.is_set():
                        newer = f"a newer value of {item.symbol} came during the backoff"
                        self.report(f"{_describe(item)} not retried: {newer}")
                        return
                    next_worker = None
                if next_worker is None:
                    self.counts["unfinished"] += 1
                    self.schedule.finish(item, done=False)
                    return
                self.counts["retried"] += 1
                worker = next_worker
                continue
            self.counts["failed"] += 1
            tries = f" (attempt {item.attempt} of {policy.retries + 1})" if policy.policy == "retry" else ""
            self.report(_with_tail(f"{_describe(item)} {outcome.how()}{tries}; given up", outcome.tail))
            self._record(item)
            return

    def _superseded(self, item: Item) -> bool:
        """Under conflation, a failed ``item`` whose symbol has a newer value waiting is not
        retried: that value runs next, never this stale one. It will never run again, so it is
        recorded as completed (a restart must not run it either)."""
        if not (self.settings.conflate and self.schedule.waiting(item.symbol)):
            return False
        self.schedule.superseded += 1
        self._record(item)
        return True

    def _unfinished(self, item: Item, how: str, tail: str) -> None:
        """A stop ended ``item`` before it was done with: reported, and it holds the resume
        point below it (Rule 3), so that the next run acts on it."""
        self.counts["unfinished"] += 1
        self.report(_with_tail(f"{_describe(item)} {how} at the stop: not done", tail))
        self.schedule.finish(item, done=False)

    async def _after(self, delay: float) -> Optional[Worker]:
        """Wait ``delay`` seconds, then for a worker; None if a stop came first."""
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([stop], timeout=delay)
        finally:
            stop.cancel()
        if self._stop.is_set():
            return None
        return await self._worker_for_retry()

    async def _attempt(self, item: Item, worker: Worker) -> Outcome:
        task = asyncio.ensure_future(worker.run(item))
        timeout = self.settings.timeout
        done, _ = await asyncio.wait([task], timeout=timeout)
        if done:
            return task.result()
        worker.kill()
        done, _ = await asyncio.wait([task], timeout=KILL_TIMEOUT)
        if not done:
            # Its worker did not answer: one that is let go here (and replaced) cannot go on
            # running this action unwatched, nor be handed the next one.
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
            worker.abandon()
            error = f"timed out after {timeout:g} s and did not end when killed"
            return Outcome(False, error=error, killed=True, died=True)
        outcome = task.result()
        if outcome.ok:
            return outcome  # it finished just as the kill came
        outcome.error = f"timed out after {timeout:g} s (killed)"
        outcome.killed = True
        return outcome

    # -- the state file ------------------------------------------------------------------------
    def _record(self, item: Item) -> None:
        """Rule 3: ``item`` will never run again; on disk before its symbol's next action."""
        self.schedule.finish(item)
        if self.state is not None and item.gen == self.schedule.gen:
            self.state.symbols[item.symbol] = item.seq
            self._save()

    def _save(self) -> None:
        if self.state is None or self.state_path is None:
            return
        self.state.resume = self.schedule.low_water()
        S.save(self.state_path, self.state)

    def _resume(self, sub: Subscriber) -> Optional[int]:
        """Load the state file: the sequence to follow the feed after, or None (from now)."""
        if self.state_path is None:
            return None
        status = sub.status()
        loaded = S.load(self.state_path)
        if loaded is not None and loaded.feed != sub.name:
            raise InvalidInput(
                f"state file {self.state_path!r} is for feed {loaded.feed!r}, not {sub.name!r}: give each feed its own"
            )
        if loaded is not None and loaded.incarnation != status.incarnation:
            self.report(
                f"state file {self.state_path!r} is for an earlier feed {sub.name!r} (incarnation "
                f"{loaded.incarnation:#x}; now {status.incarnation:#x}): it was removed and created anew, "
                "so this starts afresh"
            )
            loaded = None
        if loaded is None:
            self.state = S.State(sub.name, status.incarnation)
            return None
        beyond = [f"resume {loaded.resume}"] if loaded.resume > status.head_seq else []
        beyond += [f"{s} {q}" for s, q in loaded.symbols.items() if q > status.head_seq][:3]
        if beyond:
            raise InvalidInput(
                f"state file {self.state_path!r} is not a pricefeed action state of this feed: "
                f"{', '.join(beyond)} beyond the feed's head ({status.head_seq})"
            )
        self.state = loaded
        return loaded.resume

    # -- the end -------------------------------------------------------------------------------
    async def _finish(self, source: AsyncIterator[Event]) -> None:
        for d in self.schedule.take_drops():
            self._report_drop(d.symbol, d.count, d.first, d.last)
        left = sorted(self.schedule.pending(), key=lambda item: item.quote.seq)
        if left:  # taken from the feed, never started: say so, never drop them silently
            symbols = sorted({item.symbol for item in left})
            named = ", ".join(symbols[:10]) + (f" and {len(symbols) - 10} more" if len(symbols) > 10 else "")
            self.report(
                f"stopped with {len(left)} change{'s' if len(left) != 1 else ''} queued and not run "
                f"(seqs {left[0].quote.seq} to {left[-1].quote.seq}; {named})"
                + ("; the state file keeps them for the next run" if self.state_path else "")
            )
        closing = getattr(source, "aclose", None)
        if closing is not None:
            try:
                await closing()
            except Exception:
                pass
        workers, self._workers = self._workers, []
        self._idle.clear()
        if workers:
            await asyncio.wait([asyncio.ensure_future(w.close()) for w in workers])
        self._save()

    def _report_drop(self, symbol: str, count: int, first: int, last: int) -> None:
        span = f"seq {first}" if first == last else f"seqs {first} to {last}"
        changes = f"{count} change{'s' if count != 1 else ''}"
        self.report(f"queue of {symbol} was full: dropped {changes} ({span}), the newest kept")
