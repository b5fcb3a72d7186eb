"""The bridge: every change of a local feed becomes a put of the symbol's whole record into a
JetStream Key-Value bucket, with the bridge's key as the feed's schema and heartbeat.

It follows the feed with ``aupdates()`` and keeps, per symbol, only the newest record not yet
sent: while NATS is slower than the feed, or unreachable, a newer change of a symbol replaces
the older one waiting (counted as conflated). Puts are pipelined (up to ``max_inflight``
awaiting their acknowledgement), each with a message id made of the feed's incarnation and the
change's sequence number, so a put retried after a lost acknowledgement is stored once. A
restarted bridge reads what the bucket holds and resumes from the bridge key's ``acked`` point,
sending only what the bucket lacks. docs/distributed.md has the guarantees.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .._errors import InvalidInput, RemoteError
from .._roles.subscriber import Subscriber
from .._values import PublisherGone, PublisherRestarted, Quote, Reset, format_fields
from . import connect as C
from . import keys, wire
from .run import cancel


@dataclass
class BridgeStats:
    """What a bridge did: ``taken`` changes of the feed it followed, each of them then put
    (``sent``, once acknowledged), ``conflated`` (never put, because a newer change of its
    symbol was put instead: while NATS was slower than the feed, or between two looks of the
    bridge at a busy feed), or ``skipped`` (the bucket held it already); ``duplicates`` of the
    puts were dropped by NATS as repeats of one already stored; ``retried`` puts were sent again
    after a failure or a lost acknowledgement; ``disconnects`` from NATS."""

    taken: int = 0
    skipped: int = 0
    sent: int = 0
    duplicates: int = 0
    conflated: int = 0
    retried: int = 0
    disconnects: int = 0


def _check_positive(name: str, value: float, low: float = 0.0) -> float:
    if not isinstance(value, (int, float)) or not value > low or value != value or value == float("inf"):
        raise InvalidInput(f"{name} must be a number greater than {low:g}: got {value!r}")
    return float(value)


class Bridge:
    """Carries feed ``feed`` to the bucket ``bucket`` (default: keys.bucket_for(feed)) of the
    NATS at ``nats`` (a URL, several separated by commas, or a NatsOptions with
    credentials and TLS). ``await bridge.run()`` returns the stats when the feed is ended for
    good (after sending everything) or after ``stop()``; ``wait``: wait for the feed to appear,
    as ``Subscriber(wait=...)``. ``replicas``: the bucket's, if the bridge creates it.
    ``heartbeat``: seconds between writes of the bridge key. ``replace``: a bucket that holds
    another feed, or this feed with another schema, is deleted and made anew instead of refused.
    ``report``: called with each notable event as a line of text (connection lost, conflation)."""

    def __init__(
        self,
        feed: str,
        nats: Any = "nats://127.0.0.1:4222",
        bucket: Optional[str] = None,
        *,
        replicas: int = 1,
        heartbeat: float = 1.0,
        max_inflight: int = 1024,
        ack_timeout: float = 2.0,
        drain: float = 5.0,
        wait: Any = False,
        replace: bool = False,
        report: Optional[C.Report] = None,
    ) -> None:
        self.feed = feed
        self.options = nats if isinstance(nats, C.Options) else C.Options(servers=nats)
        self.options.check()
        self.bucket = keys.check_bucket(bucket if bucket is not None else keys.bucket_for(feed))
        if not isinstance(replicas, int) or not 1 <= replicas <= 5:
            raise InvalidInput(f"replicas must be 1 to 5: got {replicas!r}")
        if not isinstance(max_inflight, int) or max_inflight < 1:
            raise InvalidInput(f"max_inflight must be a whole number of at least 1: got {max_inflight!r}")
        self.replicas = replicas
        self.heartbeat = _check_positive("heartbeat", heartbeat, 0.01)
        self.ack_timeout = _check_positive("ack_timeout", ack_timeout)
        self.drain = _check_positive("drain", drain)
        self.max_inflight = max_inflight
        self.wait = wait
        self.replace = replace
        self.report: C.Report = report or (lambda line: None)
        self._stop_asked = False
        self.stats = BridgeStats()
        self.bridge_id = secrets.token_hex(8)
        self._stop: asyncio.Event  # made by run(), in its loop (Python 3.9 binds an Event to a loop when made)
        self._state = "live"
        self._publisher = "alive"
        # The pipeline: symbol -> newest quote not yet sent; token -> (quote, sent at) awaiting its
        # acknowledgement; seq -> None for every change not yet in the bucket, in feed order.
        self._pending: Dict[str, Quote] = {}
        self._inflight: Dict[str, Tuple[Quote, float]] = {}
        self._outstanding: Dict[int, None] = {}
        self._newest: Dict[str, int] = {}  # symbol -> seq of its newest change sent or pending
        self._have: Dict[str, Tuple[int, int]] = {}  # what the bucket held at start: (incarnation, seq)
        self._wake: asyncio.Event
        self._room: asyncio.Event
        self._head = 0
        self._incarnation = 0
        self._failures = 0
        self._hold = 0.0  # after a failure, retries wait until then (monotonic)
        self._backoff = 0.0
        self._nc: Any = None
        self._kv: Any = None
        self._sub: Optional[Subscriber] = None
        self._tokens = itertools.count(1)
        self._subjects: Dict[str, str] = {}  # symbol -> the subject of its key

    # -- control -----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish: send what is waiting (for up to ``drain`` seconds), mark the bridge key
        "stopped", disconnect. ``run()`` then returns."""
        self._stop_asked = True
        if hasattr(self, "_stop"):
            self._stop.set()

    @property
    def acked(self) -> int:
        """Every change of the feed up to this sequence number is in the bucket (or superseded
        there by a newer change of its symbol)."""
        return next(iter(self._outstanding)) - 1 if self._outstanding else self._head

    async def run(self) -> BridgeStats:
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        if self._stop_asked:
            self._stop.set()
        sub = self._sub = await Subscriber.aopen(self.feed, wait=self.wait, label="pricefeed bridge")
        try:
            status = sub.status()
            self._incarnation = status.incarnation
            self._fields = sub.fields
            self._capacity = status.capacity
            self._publisher = "alive" if status.publisher_alive else "gone"
            self._encoder = wire.RecordEncoder(self._fields, self._incarnation)
            self._nc = await C.connect(
                self.options, self.report, on_reconnect=self._reconnected, on_disconnect=self._disconnected
            )
            try:
                return await self._bridge(sub)
            finally:
                await C.close(self._nc)
        finally:
            sub.close()

    async def _disconnected(self) -> None:
        self.stats.disconnects += 1

    async def _reconnected(self) -> None:
        self._wake.set()

    # -- the bucket ----------------------------------------------------------------------------------
    async def _open_bucket(self) -> Optional[wire.Meta]:
        from nats.js import api
        from nats.js.errors import BucketNotFoundError, KeyNotFoundError

        js = self._nc.jetstream(timeout=5.0)
        for _ in range(2):
            try:
                kv = await js.key_value(self.bucket)
            except BucketNotFoundError:
                try:
                    kv = await js.create_key_value(
                        bucket=self.bucket, history=1, replicas=self.replicas, storage=api.StorageType.FILE,
                        max_value_size=wire.MAX_VALUE, description=f"pricefeed feed {self.feed}",
                    )  # fmt: skip
                except Exception as exc:
                    raise RemoteError(f"could not create bucket {self.bucket!r}: {exc}") from None
                self.report(f"created bucket {self.bucket!r} (replicas {self.replicas}, file storage)")
            try:
                entry = await kv.get(keys.BRIDGE_KEY)
            except KeyNotFoundError:
                self._kv = kv
                return None
            try:
                meta = wire.decode_meta(entry.value or b"")
            except wire.Malformed as exc:
                problem = f"its bridge key is not pricefeed's: {exc}"
            else:
                if meta.feed != self.feed:
                    problem = f"it holds feed {meta.feed!r}"
                elif meta.fields != self._fields:
                    problem = f"it holds this feed with fields {format_fields(meta.fields)}"
                else:
                    self._kv = kv
                    self._warn_if_live(meta)
                    return meta
            if not self.replace:
                raise RemoteError(
                    f"bucket {self.bucket!r} is not for feed {self.feed!r} with fields {format_fields(self._fields)}:"
                    f" {problem}; choose another bucket, or replace it (--replace)"
                )
            self.report(f"replacing bucket {self.bucket!r}: {problem}")
            await js.delete_key_value(self.bucket)
        raise RemoteError(f"bucket {self.bucket!r} could not be replaced")

    def _warn_if_live(self, meta: wire.Meta) -> None:
        if meta.state == "live" and meta.pid and (meta.host != socket.gethostname() or _alive(meta.pid)):
            self.report(
                f"bucket {self.bucket!r} was last written by another bridge that may still run "
                f"(pid {meta.pid} on {meta.host}); two bridges of one feed store each change once, "
                "but their heartbeats interleave"
            )

    async def _read_bucket(self) -> None:
        """What the bucket holds now: each symbol's (incarnation, seq), so nothing it has is sent again."""
        watcher = await self._kv.watch(keys.SYMBOL_PREFIX + ">", ignore_deletes=True)
        try:
            while True:
                entry = await watcher.updates(timeout=10.0)
                if entry is None:
                    break
                symbol = keys.decode_key(entry.key)
                if symbol is None:
                    continue
                try:
                    rec = wire.decode_record(entry.value or b"", symbol, self._fields)
                except wire.Malformed:
                    continue  # it will be overwritten
                self._have[symbol] = (rec.incarnation, rec.seq)
        finally:
            try:
                await watcher.stop()
            except Exception:
                pass

    # -- the pipeline ----------------------------------------------------------------------------------
    async def _bridge(self, sub: Subscriber) -> BridgeStats:
        meta = await self._open_bucket()
        await self._read_bucket()
        after: Optional[int] = None
        if meta is not None and meta.incarnation == self._incarnation:
            after = min(meta.acked, sub.head)
            self.report(f"resuming feed {self.feed!r} after change {after} (bucket {self.bucket!r})")
        else:
            self.report(f"bridging feed {self.feed!r} to bucket {self.bucket!r}: every symbol's current record first")
        self._head = after or 0
        self._inbox = self._nc.new_inbox()
        self._prefix = f"$KV.{self.bucket}."
        await self._nc.subscribe(self._inbox + ".*", cb=self._on_ack)
        await self._put_meta()
        tasks = [
            asyncio.ensure_future(self._send()),
            asyncio.ensure_future(self._beat()),
            asyncio.ensure_future(self._expire()),
        ]
        follow = asyncio.ensure_future(self._follow(sub, after))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([follow, stop], return_when=asyncio.FIRST_COMPLETED)
            if follow.done():
                follow.result()  # its error, if any
            # The heartbeat goes on saying "live" meanwhile: a mirror that read "ended" before
            # the last records were stored would end its feed without them.
            final = await self._flush("ended" if follow.done() else "stopped")
        finally:
            await cancel([*tasks, follow, stop])
        self._state = final
        lost = len(self._pending) + len(self._inflight)
        if lost:
            self.report(f"stopping with {lost} records not stored in the bucket (NATS did not take them in time)")
        await self._put_last_meta()
        return self.stats

    async def _follow(self, sub: Subscriber, after: Optional[int]) -> None:
        """Take the feed's changes, conflated by the subscriber while the bridge is busy (it
        gives each symbol's newest change, in feed order, and never a Gap): each change it
        passed over was superseded by one given later, and is counted as conflated."""
        have = self._have
        seen = after if after is not None else sub.head  # changes up to here are not counted
        async for ev in sub.aupdates(after=after, snapshot=after is None, conflate=True):
            if isinstance(ev, Quote):
                symbol, seq = ev[0], ev[-2]
                if seq > seen:
                    self.stats.taken += seq - seen
                    self.stats.conflated += seq - seen - 1
                    seen = seq
                else:  # the current values the bridge starts with
                    self.stats.taken += 1
                if have:
                    held = have.get(symbol)
                    if held is not None:
                        if held[0] == self._incarnation and held[1] >= seq:
                            self.stats.skipped += 1
                            self._newest[symbol] = held[1]
                            self._head = max(self._head, seq)
                            continue
                        del have[symbol]  # past what the bucket holds: from here on, send
                self._take(ev)
                if len(self._pending) == 1 and self._ready():
                    await self._send_one()  # the common case: straight out, without waking the sender
            elif isinstance(ev, PublisherGone):
                self._publisher = "gone"
                await self._put_meta()
            elif isinstance(ev, PublisherRestarted):
                self._publisher = "alive"
                await self._put_meta()
            elif isinstance(ev, Reset):
                self.report(f"feed {self.feed!r} was created anew: sending the new feed's records")
                self._incarnation = ev.incarnation
                self._encoder = wire.RecordEncoder(self._fields, self._incarnation)
                self._outstanding.clear()  # sequence numbers start again: acked counts the new feed's
                self._head = seen = 0
                self._have.clear()
                await self._put_meta()

    def _take(self, q: Quote) -> None:
        symbol, seq = q[0], q[-2]
        old = self._pending.get(symbol)
        if old is not None:
            self.stats.conflated += 1
            self._outstanding.pop(old[-2], None)
        self._pending[symbol] = q
        self._newest[symbol] = seq
        self._outstanding[seq] = None
        self._head = seq
        self._wake.set()

    def _ready(self) -> bool:
        """Whether a put may go now: connected, not backing off, room in the pipeline."""
        return self._nc.is_connected and len(self._inflight) < self.max_inflight and time.monotonic() >= self._hold

    async def _send_one(self) -> None:
        """Put the oldest waiting record (the caller checked _ready() and that one waits)."""
        symbol = next(iter(self._pending))
        q = self._pending.pop(symbol)
        token = str(next(self._tokens))
        self._inflight[token] = (q, time.monotonic())
        payload = self._encoder.encode(symbol, q[1:-3], q[-1], q[-2], q[-3])
        subject = self._subjects.get(symbol)
        if subject is None:
            subject = self._subjects[symbol] = self._prefix + keys.encode_symbol(symbol)
        try:
            await self._nc.publish(
                subject, payload, reply=f"{self._inbox}.{token}",
                headers={"Nats-Msg-Id": f"{self._incarnation:x}-{q[-2]}"},
            )  # fmt: skip
        except Exception as exc:  # the connection went while we wrote
            if self._inflight.pop(token, None) is not None:
                self._failed(q, str(exc) or type(exc).__name__)
            await asyncio.sleep(0.05)

    async def _send(self) -> None:
        """Send what waits, whenever woken: by a change taken while the pipeline was busy, an
        acknowledgement that made room, the end of a backoff, or a reconnection."""
        pending, inflight = self._pending, self._inflight
        while True:
            await self._wake.wait()
            self._wake.clear()
            while pending and self._nc.is_connected:
                hold = self._hold - time.monotonic()
                if hold > 0:
                    await asyncio.sleep(hold)
                    continue
                if len(inflight) >= self.max_inflight:
                    self._room.clear()
                    await self._room.wait()
                    continue
                await self._send_one()

    async def _on_ack(self, msg: Any) -> None:
        token = msg.subject.rpartition(".")[2]
        entry = self._inflight.pop(token, None)
        if entry is None:
            return  # already given up on and requeued
        q = entry[0]
        data = msg.data
        if not data or b'"error"' in data:
            self._failed(q, _ack_error(msg))
        else:
            self.stats.sent += 1
            if b'"duplicate"' in data:
                self.stats.duplicates += 1
            self._outstanding.pop(q[-2], None)
            if self._failures:
                self.report(f"puts succeed again ({self._failures} failed meanwhile, each retried or superseded)")
                self._failures = 0
                self._backoff = 0.0
        if len(self._inflight) < self.max_inflight:
            self._room.set()

    def _failed(self, q: Quote, why: str) -> None:
        """A put that failed or whose acknowledgement did not come: send it again (the same
        message id, so NATS stores it once), unless a newer change of its symbol supersedes it."""
        if not self._failures:
            self.report(f"a put failed ({why}); retrying")
        self._failures += 1
        # Back off while puts fail (a stream electing its leader answers at once with 503):
        # retries wait 50 ms, then twice as long after each wait that ended in failures again,
        # up to 1 s, until a put succeeds. Failures during a wait do not lengthen it.
        now = time.monotonic()
        if now >= self._hold:
            self._backoff = min(max(self._backoff * 2, 0.05), 1.0)
            self._hold = now + self._backoff
        symbol, seq = q[0], q[-2]
        if self._newest.get(symbol, 0) > seq or symbol in self._pending:
            self._outstanding.pop(seq, None)  # superseded: the newer change carries the record
            return
        self.stats.retried += 1
        self._pending[symbol] = q
        self._wake.set()

    async def _expire(self) -> None:
        """Give up on acknowledgements that did not come within ack_timeout: retry those puts."""
        while True:
            await asyncio.sleep(min(0.25, self.ack_timeout / 2))
            deadline = time.monotonic() - self.ack_timeout
            for token, (q, sent) in list(self._inflight.items()):
                if sent > deadline:
                    break  # the rest were sent later
                del self._inflight[token]
                self._failed(q, f"no acknowledgement within {self.ack_timeout:g} s")
            self._room.set()

    async def _flush(self, ending: str) -> str:
        """Send what waits, and say how the bridge ends. After the feed's end ("ended"), until
        everything is stored ("stopped" if a stop() gives up first); after a stop() ("stopped"),
        for ``drain`` seconds at most."""
        deadline = time.monotonic() + self.drain
        told = time.monotonic()
        self._wake.set()
        while self._pending or self._inflight:
            now = time.monotonic()
            if ending == "stopped" and now >= deadline:
                break
            if ending == "ended" and self._stop.is_set():
                return "stopped"  # told to stop before the last records were stored
            if now - told >= 10:
                told = now
                self.report(f"the feed has ended; {len(self._pending) + len(self._inflight)} records still to store")
            await asyncio.sleep(0.01)
        return ending

    # -- the bridge key ----------------------------------------------------------------------------------
    def meta(self) -> wire.Meta:
        return wire.Meta(
            self.feed, self._incarnation, self._fields, self._capacity, self._state, self._publisher,
            self._head, self.acked, round(self.heartbeat * 1000), time.time_ns(), self.bridge_id,
            socket.gethostname(), os.getpid(), self.stats.sent, self.stats.conflated,
        )  # fmt: skip

    async def _put_meta(self) -> None:
        if not self._nc.is_connected:
            return
        try:
            await self._kv.put(keys.BRIDGE_KEY, wire.encode_meta(self.meta()))
        except Exception as exc:
            self.report(f"could not write the bridge key: {exc or type(exc).__name__}")

    async def _put_last_meta(self) -> None:
        """The bridge key's last word, "ended" or "stopped": tried until it is stored, for
        ``drain`` seconds after a stop(), and after the feed's end until a stop() gives up."""
        deadline = time.monotonic() + self.drain
        pause = 0.05
        while True:
            if self._nc.is_connected:
                try:
                    await self._kv.put(keys.BRIDGE_KEY, wire.encode_meta(self.meta()))
                    return
                except Exception as exc:
                    why = str(exc) or type(exc).__name__
            else:
                why = "not connected"
            gave_up = self._stop.is_set() if self._state == "ended" else time.monotonic() >= deadline
            if gave_up:
                self.report(f"could not write the bridge key's last word ({why}); mirrors will report the bridge stale")
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            await self._put_meta()


def _ack_error(msg: Any) -> str:
    headers = msg.headers or {}
    if headers.get("Status"):
        return f"NATS status {headers.get('Status')} {headers.get('Description', '')}".strip()
    try:
        err = json.loads(msg.data).get("error", {})
        return f"{err.get('description', 'error')} (code {err.get('err_code', err.get('code', '?'))})"
    except (ValueError, AttributeError):
        return "an unreadable acknowledgement"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return pid != os.getpid()


__all__ = ["Bridge", "BridgeStats"]
