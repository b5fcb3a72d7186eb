"""The peers: what people would use instead of pricefeed, each as a Link of pricefeed._bench.

Each link carries numbered changes as pricefeed's do (see pricefeed._bench.links): t0 travels
in the message itself for Pipe and ZeroMQ, and in a ``StampRing`` in shared memory beside the
semaphore, eventfd and iceoryx2 wake-ups. Each is the shortest correct Python for its
mechanism, written here and not taken from pricefeed, so that it stays fixed while pricefeed
changes:

``Pipe``       ``multiprocessing.Pipe``, 16-byte messages through ``send_bytes``
``semaphore``  a ``posix_ipc`` semaphore (one post per change) and the stamp ring
``eventfd``    ``os.eventfd`` (one write per change) and the stamp ring
``ZeroMQ``     pyzmq PUB/SUB over ipc, if importable
``iceoryx2``   an iceoryx2 event service (one notification per change), if importable

``wake_contenders`` gives them to the wake latency suite; ``kernel_target`` states the one
target about them.
"""

from __future__ import annotations

import os
import struct
import time
from multiprocessing import Pipe
from typing import Any, Callable, Dict, List, Optional, Sequence

from pricefeed._bench import procs
from pricefeed._bench import resources as pf_resources
from pricefeed._bench.latency import python
from pricefeed._bench.links import READY_TIMEOUT, FutexLink, Link, StampRing, now, run_receiver
from pricefeed._bench.report import Result, Target, lookup, target
from pricefeed._bench.stats import us
from pricefeed._bench.wake import Maker, with_receivers

from . import resources

__all__ = [
    "PipeLink",
    "SemaphoreLink",
    "EventfdLink",
    "ZmqLink",
    "IceoryxLink",
    "wake_contenders",
    "fanout_contenders",
    "kernel_target",
]


# -- kernel-delivered peers -----------------------------------------------------------------------
_MESSAGE = struct.Struct("qq")  # change number, t0


class PipeLink(Link):
    """multiprocessing.Pipe: each change is one 16-byte message."""

    name = "multiprocessing.Pipe"

    def __init__(self) -> None:
        super().__init__(1)
        self.rx, self.tx = Pipe(duplex=False)
        os.set_blocking(self.tx.fileno(), False)  # a dead receiver must not block us: see send_patiently

    def _body(self, k: int) -> Callable[[procs.Channel], object]:
        rx = self.rx

        def loop(pairs: List[int]) -> None:
            while True:
                data = rx.recv_bytes()
                t1 = now()
                i, t0 = _MESSAGE.unpack(data)
                if t0 < 0:
                    return
                pairs.append(i)
                pairs.append(t1 - t0)

        return lambda channel: run_receiver(lambda: channel.send("ready"), loop)

    def send(self, i: int) -> int:
        t0 = now()
        try:
            self.tx.send_bytes(_MESSAGE.pack(i, t0))
        except BlockingIOError:  # never while the receiver keeps up
            procs.send_patiently(lambda: self.tx.send_bytes(_MESSAGE.pack(i, t0)), self.tx.fileno())
        return now() - t0

    def _stop(self, last: int) -> None:
        procs.send_patiently(lambda: self.tx.send_bytes(_MESSAGE.pack(last + 1, -1)), self.tx.fileno())

    def close(self) -> None:
        super().close()
        self.rx.close()
        self.tx.close()


class SemaphoreLink(Link):
    """A posix_ipc semaphore, posted once per change, and the stamp ring."""

    name = "posix_ipc semaphore"

    def __init__(self) -> None:
        super().__init__(1)
        self.ring = StampRing("sm")
        self.sem = resources.semaphore("sem")

    def _body(self, k: int) -> Callable[[procs.Channel], object]:
        ring, sem = self.ring, self.sem

        def loop(pairs: List[int]) -> None:
            i = 0
            while True:
                sem.acquire()
                i += 1
                if not ring.take(i, now(), pairs):
                    return

        return lambda channel: run_receiver(lambda: channel.send("ready"), loop)

    def send(self, i: int) -> int:
        t0 = now()
        self.ring.put(i, t0)
        self.sem.release()
        return now() - t0

    def _stop(self, last: int) -> None:
        self.ring.put(last + 1, -1)
        self.sem.release()

    def close(self) -> None:
        super().close()
        self.sem.close()
        self.ring.close()


class EventfdLink(Link):
    """os.eventfd (a counter in the kernel), written once per change, and the stamp ring."""

    name = "os.eventfd"

    def __init__(self) -> None:
        super().__init__(1)
        self.ring = StampRing("ev")
        self.fd = os.eventfd(0)  # type: ignore[attr-defined,unused-ignore]  # 3.10+, checked by the caller

    def _body(self, k: int) -> Callable[[procs.Channel], object]:
        ring, fd = self.ring, self.fd

        def loop(pairs: List[int]) -> None:
            i = 0
            while True:
                count = os.eventfd_read(fd)  # type: ignore[attr-defined,unused-ignore]
                t1 = now()
                for _ in range(count):
                    i += 1
                    if not ring.take(i, t1, pairs):
                        return

        return lambda channel: run_receiver(lambda: channel.send("ready"), loop)

    def send(self, i: int) -> int:
        t0 = now()
        self.ring.put(i, t0)
        os.eventfd_write(self.fd, 1)  # type: ignore[attr-defined,unused-ignore]
        return now() - t0

    def _stop(self, last: int) -> None:
        self.ring.put(last + 1, -1)
        os.eventfd_write(self.fd, 1)  # type: ignore[attr-defined,unused-ignore]

    def close(self) -> None:
        super().close()
        os.close(self.fd)
        self.ring.close()


# -- optional extras: used only if their package is importable ------------------------------------
class ZmqLink(Link):
    """pyzmq PUB/SUB over an ipc socket file; each change is one 16-byte message."""

    name = "ZeroMQ ipc PUB/SUB"

    def __init__(self) -> None:
        import zmq  # type: ignore[import-not-found,import-untyped,unused-ignore]

        super().__init__(1)
        self.zmq = zmq
        self.path = resources.temp_path("zmq")
        self.context: Any = None
        self.socket: Any = None

    def _body(self, k: int) -> Callable[[procs.Channel], object]:
        zmq, address = self.zmq, "ipc://" + self.path

        def body(channel: procs.Channel) -> object:
            context = zmq.Context()  # a fresh context: one is never shared across fork
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(address)
            try:
                while _MESSAGE.unpack(sub.recv())[1] != 0:  # probes (t0 = 0) until subscribed
                    pass

                def loop(pairs: List[int]) -> None:
                    while True:
                        data = sub.recv()
                        t1 = now()
                        i, t0 = _MESSAGE.unpack(data)
                        if t0 < 0:
                            return
                        if t0 > 0:
                            pairs.append(i)
                            pairs.append(t1 - t0)

                return run_receiver(lambda: channel.send("ready"), loop)
            finally:
                sub.close(linger=0)
                context.term()

        return body

    def open(self) -> Link:
        self.context = self.zmq.Context()
        self.socket = self.context.socket(self.zmq.PUB)
        self.socket.bind("ipc://" + self.path)
        self._children = [procs.fork(self.name, self._body(0))]
        deadline = time.monotonic() + READY_TIMEOUT
        while True:  # PUB drops messages until the subscription has reached it: probe
            self.socket.send(_MESSAGE.pack(0, 0))
            try:
                self._children[0].recv(0.01)
                break
            except procs.ChildFailed:
                if time.monotonic() > deadline:
                    raise
        self.socket.send(_MESSAGE.pack(0, 0))  # the probe that ends the receiver's probe loop
        time.sleep(0.02)
        return self

    def send(self, i: int) -> int:
        t0 = now()
        self.socket.send(_MESSAGE.pack(i, t0))
        return now() - t0

    def _stop(self, last: int) -> None:
        self.socket.send(_MESSAGE.pack(last + 1, -1))

    def close(self) -> None:
        super().close()
        if self.socket is not None:
            self.socket.close(linger=0)
            self.context.term()
            self.socket = None
        if os.path.exists(self.path):
            os.unlink(self.path)


class IceoryxLink(Link):
    """An iceoryx2 event service: one notification per change, and the stamp ring."""

    name = "iceoryx2 event"

    def __init__(self) -> None:
        import iceoryx2  # type: ignore[import-not-found,import-untyped,unused-ignore]

        super().__init__(1)
        self.iox: Any = iceoryx2
        self.ring = StampRing("ix")
        self.service = pf_resources.unique("events")
        self.node: Any = None
        self.notifier: Any = None

    def _event(self) -> Any:
        iox = self.iox
        resources.note_iceoryx2()
        node = iox.NodeBuilder.new().create(iox.ServiceType.Ipc)
        return node, node.service_builder(iox.ServiceName.new(self.service)).event().open_or_create()

    def _body(self, k: int) -> Callable[[procs.Channel], object]:
        ring, iox = self.ring, self.iox

        def body(channel: procs.Channel) -> object:
            _node, event = self._event()  # the node must live as long as the listener
            listener = event.listener_builder().create()
            wait = getattr(listener, "blocking_wait_all", None)
            if wait is None:  # older bindings: a long timed wait
                timed = listener.timed_wait_all if hasattr(listener, "timed_wait_all") else listener.timed_wait
                wait = lambda: timed(iox.Duration.from_secs(3600))  # noqa: E731

            def loop(pairs: List[int]) -> None:
                i = 0
                while True:
                    wait()
                    t1 = now()
                    while i < ring.word[0]:
                        i += 1
                        if not ring.take(i, t1, pairs):
                            return

            return run_receiver(lambda: channel.send("ready"), loop)

        return body

    def open(self) -> Link:
        self.node, event = self._event()
        self.notifier = event.notifier_builder().create()
        return super().open()

    def send(self, i: int) -> int:
        t0 = now()
        self.ring.put(i, t0)
        self.ring.word[0] = i
        self.notifier.notify()
        return now() - t0

    def _stop(self, last: int) -> None:
        self.ring.put(last + 1, -1)
        self.ring.word[0] = last + 1
        self.notifier.notify()

    def close(self) -> None:
        super().close()
        self.notifier = None
        self.node = None
        self.ring.close()


# -- what the suites and the targets take ------------------------------------------------------------
def _optional_links() -> Dict[str, Optional[Callable[[], Link]]]:
    """Each optional peer: a factory, or None if it cannot run here."""
    found: Dict[str, Optional[Callable[[], Link]]] = {}
    found[EventfdLink.name] = EventfdLink if hasattr(os, "eventfd") else None
    for module, factory in (("zmq", ZmqLink), ("iceoryx2", IceoryxLink)):
        try:
            __import__(module)
            found[factory.name] = factory
        except ImportError:
            found[factory.name] = None
    return found


_NEEDS = {
    EventfdLink.name: "Python 3.10+",
    ZmqLink.name: "pyzmq",
    IceoryxLink.name: "the iceoryx2 Python package",
}


def wake_contenders(binary: Optional[str], notes: List[str]) -> List[Maker]:
    """The wake latency suite's contenders beyond pricefeed and its baseline: the bare ctypes
    futex (unless it is the baseline: no C compiler), then every peer that can run here."""
    makers: List[Maker] = [(FutexLink.name, python(FutexLink))] if binary else []
    makers += [(PipeLink.name, python(PipeLink)), (SemaphoreLink.name, python(SemaphoreLink))]
    for name, factory in _optional_links().items():
        if factory is None:
            notes.append(f"{name}: not available here (needs {_NEEDS[name]}), skipped")
        else:
            makers.append((name, python(factory)))
    return makers


def fanout_contenders(binary: Optional[str], k: int) -> Sequence[Maker]:
    """Fan-out beyond pricefeed and its baseline: the bare ctypes futex, the floor of a Python
    receiver, unless it is the baseline already."""
    return [(FutexLink.name, python(with_receivers(FutexLink, k)))] if binary else []


#: The peers that deliver through the kernel, and their short names: pricefeed's p50 must beat each.
_KERNEL = {PipeLink.name: "Pipe", SemaphoreLink.name: "semaphore", ZmqLink.name: "ZeroMQ", IceoryxLink.name: "iceoryx2"}


def kernel_target(r: Result) -> List[Target]:
    """Wake latency p50 below every kernel-delivered peer measured in the same run."""
    mine = lookup(r, "wake", "series", "pricefeed", "latency_ns", "p50")
    kernel = {n: lookup(r, "wake", "series", n, "latency_ns", "p50") for n in _KERNEL}
    theirs = {n: v for n, v in kernel.items() if v is not None}
    worst = max((mine / v for v in theirs.values()), default=None) if mine else None
    detail = f"{us(mine)} vs " + ", ".join(f"{_KERNEL[n]} {us(v)}" for n, v in theirs.items()) + " µs"
    missing = [_KERNEL[n] for n, v in kernel.items() if v is None]
    if missing:
        detail += f" ({', '.join(missing)}: not measured, see the notes)"
    text = "wake p50 below every kernel-delivered baseline (Pipe, semaphore, ZeroMQ, iceoryx2)"
    return [target(text, worst, 0.999999, detail)]
