"""One sender (this process) and its receiver processes: pricefeed, and the bare futex.

Every link carries numbered changes 1, 2, 3, ... The sender takes t0 = CLOCK_MONOTONIC right
before the call that sends change i, and t0 travels with the change: in the quote's
``time_ns`` for pricefeed, in a ring of stamps in shared memory (``StampRing``) for the
futex. Each receiver reads the clock the moment the change is in its hands (pricefeed: when
``updates()`` yields it) and records (i, t1 - t0). CLOCK_MONOTONIC is one clock for every
process on Linux, so t1 - t0 is a true interval across processes.

Each receiver also reports its voluntary context switches between "ready" and its end:
``wakeups``, the number of times it blocked and was woken.

``FutexLink`` is the shortest correct Python for a futex wake-up, written here and not taken
from pricefeed, so that it stays fixed while pricefeed changes: a futex word and a stamp ring
in shared memory, ctypes ``syscall`` with the address as a ``c_void_p`` built once (the
cheapest form measured). It is the wake baseline where no C compiler builds the C futex.
The peer links (Pipe, semaphores, eventfd, ZeroMQ, iceoryx2) are ``Link`` subclasses in a
checkout's scripts/bench, built on ``run_receiver`` and ``StampRing``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import time
from typing import Any, Callable, Dict, List, Optional

from .. import Publisher, Quote, Subscriber
from . import procs, resources

__all__ = [
    "Link",
    "PricefeedLink",
    "AsyncPricefeedLink",
    "FutexLink",
    "RingFloorLink",
    "StampRing",
    "Received",
    "run_receiver",
    "rss_kib",
    "run_loop",
]

now = time.monotonic_ns
READY_TIMEOUT = 30.0
RESULT_TIMEOUT = 60.0
RING = 4096  # stamps kept in the baselines' ring: far more than can be in flight


class Received:
    """What one receiver saw: latency by change number, and how often it was woken."""

    def __init__(self, raw: Dict[str, Any]) -> None:
        flat: List[int] = raw["pairs"]
        self.latency: Dict[int, int] = dict(zip(flat[0::2], flat[1::2]))
        self.wakeups: int = raw["wakeups"]
        self.extra: Dict[str, Any] = {k: v for k, v in raw.items() if k not in ("pairs", "wakeups")}


def _voluntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


def rss_kib() -> int:
    """This process's resident memory, in KiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def run_receiver(
    ready: Callable[[], None], loop: Callable[[List[int]], None], extra: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """The common frame of every receiver: say ready, run ``loop`` until the sender stops it,
    return what it recorded."""
    pairs: List[int] = []
    ready()
    before = _voluntary_switches()
    loop(pairs)
    return {"pairs": pairs, "wakeups": _voluntary_switches() - before, **(extra or {})}


class Link:
    """A sender and ``receivers`` worker processes. Use as a context manager."""

    name = "link"

    def __init__(self, receivers: int = 1) -> None:
        self.receivers = receivers
        self._children: List[procs.Child] = []

    # Subclasses provide these three.
    def send(self, i: int) -> int:
        """Send change ``i`` (1, 2, ...); returns how long the sending call took, in ns."""
        raise NotImplementedError

    def _body(self, k: int) -> Callable[[procs.Channel], object]:
        """What receiver number ``k`` runs."""
        raise NotImplementedError

    def _stop(self, last: int) -> None:
        """Tell every receiver that ``last`` was the final change."""
        raise NotImplementedError

    def concerned(self, i: int) -> Optional[int]:
        """The one receiver that change ``i`` is meant for, or None if it is for all of them."""
        return None

    def open(self) -> Link:
        self._children = procs.fork_many(self.name, [self._body(k) for k in range(self.receivers)], READY_TIMEOUT)
        self._opened()
        time.sleep(0.02)  # let each receiver reach its blocking wait
        return self

    def _opened(self) -> None:
        """Called once every receiver is ready."""

    def pids(self) -> List[int]:
        """The receivers' process ids."""
        return [child.pid for child in self._children]

    def finish(self, last: int) -> List[Received]:
        """Stop the receivers after change ``last`` and collect what each one saw."""
        self._stop(last)
        out = [Received(child.result(RESULT_TIMEOUT)) for child in self._children]
        self._children = []
        return out

    def close(self) -> None:
        for child in self._children:
            child.kill()
        self._children = []

    def __enter__(self) -> Link:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- pricefeed -------------------------------------------------------------------------------------
class PricefeedLink(Link):
    """A feed of ``symbols`` symbols; change i sets symbol ``i % symbols`` to the price i.

    ``own_symbol``: receiver k follows only symbol k (else every receiver follows every symbol,
    or just the one when there is one). ``options``: extra keyword arguments for updates().
    """

    name = "pricefeed"

    def __init__(
        self,
        receivers: int = 1,
        symbols: int = 1,
        own_symbol: bool = False,
        ring_size: Optional[int] = None,
        options: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(receivers)
        self.symbols = [f"S{k}" for k in range(symbols)]
        self.own_symbol = own_symbol
        self.options = options or {}
        self.feed = resources.feed_name("lat")
        geometry: Dict[str, Any] = {"capacity": max(symbols, receivers if own_symbol else 1)}
        if ring_size is not None:
            geometry["ring_size"] = ring_size
        self.pub = Publisher.create(self.feed, **geometry)
        self.pub.publish_many([(s, 0.5) for s in self.symbols])

    def _wanted(self, k: int) -> Optional[List[str]]:
        if self.own_symbol:
            return [self.symbols[k % len(self.symbols)]]
        return self.symbols if len(self.symbols) == 1 else None

    def _body(self, k: int) -> Callable[[procs.Channel], object]:
        feed, wanted, options = self.feed, self._wanted(k), self.options

        def body(channel: procs.Channel) -> object:
            before = rss_kib()
            with Subscriber(feed) as sub:
                changes = sub.updates(wanted, **options)  # learns every symbol's slot now
                growth: Dict[str, Any] = {"rss_growth_kib": rss_kib() - before}

                def loop(pairs: List[int]) -> None:
                    for q in changes:
                        t1 = now()
                        if isinstance(q, Quote):  # the other events (Gap, PublisherGone, ...) are no change
                            pairs.append(int(q.price))
                            pairs.append(t1 - q.time_ns)
                    # Waits that a word ended, as the subscriber counts them (timer slices not included).
                    growth["woken"] = getattr(sub, "wakeups", None)

                return run_receiver(lambda: channel.send("ready"), loop, growth)

        return body

    def concerned(self, i: int) -> Optional[int]:
        return i % len(self.symbols) if self.own_symbol else None

    def _opened(self) -> None:
        self.pub.unlink()  # every subscriber has attached: the name is no longer needed

    def send(self, i: int) -> int:
        symbol = self.symbols[i % len(self.symbols)]
        t0 = now()
        self.pub.publish(symbol, float(i), time_ns=t0)
        return now() - t0

    def _stop(self, last: int) -> None:
        self.pub.end()

    def close(self) -> None:
        super().close()
        self.pub.close()
        resources.forget_feed(self.feed)


def run_loop(loop: str, main: Callable[[], Any]) -> None:
    """Run coroutine function ``main`` to its end on asyncio's own loop or on uvloop's."""
    import asyncio

    if loop == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(main())


class AsyncPricefeedLink(PricefeedLink):
    """``PricefeedLink`` whose receivers follow with ``aupdates()`` inside an event loop
    (``loop``: "asyncio" or "uvloop"), as an asyncio program does."""

    def __init__(self, loop: str = "asyncio", **kwargs: Any) -> None:
        if loop == "uvloop":
            import uvloop  # noqa: F401  (fail here, in the sender, where it is not installed)
        super().__init__(**kwargs)
        self.loop = loop
        self.name = f"pricefeed aupdates ({loop})"

    def _body(self, k: int) -> Callable[[procs.Channel], object]:
        feed, wanted, options, loop_name = self.feed, self._wanted(k), self.options, self.loop

        def body(channel: procs.Channel) -> object:
            with Subscriber(feed) as sub:
                changes = sub.aupdates(wanted, **options)

                def loop(pairs: List[int]) -> None:
                    async def main() -> None:
                        async for q in changes:
                            t1 = now()
                            if isinstance(q, Quote):
                                pairs.append(int(q.price))
                                pairs.append(t1 - q.time_ns)

                    run_loop(loop_name, main)

                return run_receiver(lambda: channel.send("ready"), loop)

        return body


# -- the stamp ring: t0 of each change, beside the baseline's own wake-up --------------------------
class StampRing:
    """A futex word (u32 at offset 0) and RING stamps (i64 from offset 64) in shared memory.
    Stamp i is t0 of change i; -1 marks the final change. Each store is one aligned store."""

    def __init__(self, tag: str) -> None:
        self.mm = resources.shared_memory(tag, 64 + 8 * RING)
        self.word = memoryview(self.mm)[0:4].cast("I")
        self.stamps = memoryview(self.mm)[64:].cast("q")
        self._anchor = ctypes.c_char.from_buffer(self.mm)
        self.address = ctypes.c_void_p(ctypes.addressof(self._anchor))

    def put(self, i: int, t0: int) -> None:
        self.stamps[i % RING] = t0

    def take(self, i: int, t1: int, pairs: List[int]) -> bool:
        """Record change i as seen at t1; False if it was the final one."""
        t0 = self.stamps[i % RING]
        if t0 < 0:
            return False
        pairs.append(i)
        pairs.append(t1 - t0)
        return True

    def close(self) -> None:
        del self._anchor
        self.word.release()
        self.stamps.release()
        self.mm.close()


#: The futex syscall's number here (-1: a CPU this benchmark does not know).
SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine().lower(), -1)


def check_futex() -> None:
    """Refuse to set up a futex baseline where the syscall number is unknown: its waiters
    would spin on ENOSYS instead of sleeping."""
    if SYS_FUTEX < 0:
        raise OSError(f"no futex syscall number known for CPU {platform.machine()!r}")


_FUTEX_WAIT, _FUTEX_WAKE, _ALL = 0, 1, 0x7FFFFFFF
syscall = ctypes.CDLL(None, use_errno=True).syscall
syscall.restype = ctypes.c_long


class FutexLink(Link):
    """The bare ctypes futex: store the stamp, store the word, FUTEX_WAKE everyone."""

    name = "futex (ctypes)"

    def __init__(self, receivers: int = 1) -> None:
        check_futex()
        super().__init__(receivers)
        self.ring = StampRing("fx")

    def _body(self, k: int) -> Callable[[procs.Channel], object]:
        ring = self.ring

        def loop(pairs: List[int]) -> None:
            seen = ring.word[0]
            while True:
                word = ring.word[0]
                if word == seen:
                    syscall(SYS_FUTEX, ring.address, _FUTEX_WAIT, seen, None, None, 0)
                    continue
                t1 = now()
                for i in range(seen + 1, word + 1):
                    if not ring.take(i, t1, pairs):
                        return
                seen = word

        return lambda channel: run_receiver(lambda: channel.send("ready"), loop)

    def send(self, i: int) -> int:
        t0 = now()
        self.ring.put(i, t0)
        self.ring.word[0] = i
        syscall(SYS_FUTEX, self.ring.address, _FUTEX_WAKE, _ALL, None, None, 0)
        return now() - t0

    def _stop(self, last: int) -> None:
        self.ring.put(last + 1, -1)
        self.ring.word[0] = last + 1
        syscall(SYS_FUTEX, self.ring.address, _FUTEX_WAKE, _ALL, None, None, 0)

    def close(self) -> None:
        super().close()
        self.ring.close()


class RingFloorLink(FutexLink):
    """The floor of an event loop's wake-up: the bare futex sender, and a receiver whose
    asyncio loop watches an io_uring with a futex wait armed on the word (the mechanism
    ``aupdates()`` sleeps on where it can), recording each change in the ring's callback. No
    pricefeed code runs on the receiving side but the ring itself."""

    name = "io_uring futex wait, asyncio callback"

    def __init__(self, receivers: int = 1) -> None:
        from .._wait import _uring_linux

        if not _uring_linux.usable():
            raise OSError("io_uring futex waits are not available here (Linux 6.7+ on x86-64, io_uring allowed)")
        super().__init__(receivers)

    def _body(self, k: int) -> Callable[[procs.Channel], object]:
        ring_words = self.ring

        def loop(pairs: List[int]) -> None:
            import asyncio

            from .._wait._uring_linux import FutexRing

            class Word:
                address = ring_words.address.value

            async def main() -> None:
                done = asyncio.get_running_loop().create_future()
                ring = FutexRing(entries=8)
                seen = [ring_words.word[0]]

                def arm() -> None:
                    ring.arm([Word], [seen[0]], 1)

                def ready() -> None:
                    ring.done()
                    word = ring_words.word[0]
                    t1 = now()
                    for i in range(seen[0] + 1, word + 1):
                        if not ring_words.take(i, t1, pairs):
                            done.set_result(None)
                            return
                    seen[0] = word
                    arm()

                asyncio.get_running_loop().add_reader(ring.fileno(), ready)
                arm()
                try:
                    await done
                finally:
                    asyncio.get_running_loop().remove_reader(ring.fileno())
                    ring.close()

            asyncio.run(main())

        return lambda channel: run_receiver(lambda: channel.send("ready"), loop)
