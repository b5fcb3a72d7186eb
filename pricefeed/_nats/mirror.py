"""The mirror: the publisher of a local feed that copies a bridge's bucket.

It waits for the bucket and its bridge key, creates (or opens) the local feed with the bridge's
schema, then applies every record of the bucket: first each symbol's current one, then each put
as it comes, in revision order. Each change is applied once: a revision at most once within a
watch, and a record only if its change number (the source feed's sequence, in the record) is
newer than the last one applied for its symbol, so never a symbol's older change after a newer
one. The watch is an ordered consumer of its own, created again when the connection comes back,
and when the bucket falls silent for longer than the bridge's heartbeat allows (the server that
held the consumer may have gone). A silent bridge is
reported as stale; the bridge key says when it stopped or when the feed was ended for good,
which ends the local feed too. docs/distributed.md has the guarantees.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .._errors import InvalidGeometry, InvalidInput, PricefeedError, RemoteError
from .._protocol import layout as L
from .._roles.publisher import Publisher
from .._values import format_fields
from . import connect as C
from . import keys, wire
from .run import cancel

#: At most this many lines about malformed entries are reported; all are counted.
MAX_REPORTED = 20
#: Keys whose symbols are remembered (decoding one takes a regular expression and a loop).
MAX_KEYS_CACHED = 1 << 20
#: How many times the watch is made again, a second apart, when the bridge says the feed ended
#: before its last change arrived here; then the local feed is ended anyway.
MAX_LOOKS = 10


@dataclass
class MirrorStats:
    """What a mirror did: ``applied`` records that changed the local feed; ``unchanged``
    records equal to what it held already (a restarted mirror's first view, a retried put);
    ``repeats`` records or revisions seen before (a re-created watch starts with every key's
    current record); ``older`` records of a change older than one applied (never applied);
    ``malformed`` entries refused (not this format, or a symbol or value the feed cannot hold);
    ``watches`` watch (re-)creations; ``stale`` times the bridge went silent;
    ``upstream_conflated``: the bridge's own count, from its key."""

    applied: int = 0
    unchanged: int = 0
    repeats: int = 0
    older: int = 0
    malformed: int = 0
    watches: int = 0
    stale: int = 0
    upstream_conflated: int = 0


class Mirror:
    """Publishes bucket ``bucket`` (default: keys.bucket_for(feed)) of the NATS at ``nats`` into
    local feed ``feed``. ``await mirror.run()`` returns the stats when the bridge reports the
    feed ended for good (the local feed is then ended too) or after ``stop()``.
    ``stale_after``: seconds without a word from the bridge before it is reported stale (None:
    three of its heartbeat intervals). ``mode``: the local feed's, if the mirror creates it.
    ``bucket_timeout``: seconds to wait for the bucket and its bridge key (None: forever).
    ``report``: called with each notable event as a line of text."""

    def __init__(
        self,
        feed: str,
        nats: Any = "nats://127.0.0.1:4222",
        bucket: Optional[str] = None,
        *,
        stale_after: Optional[float] = None,
        mode: int = 0o600,
        bucket_timeout: Optional[float] = None,
        report: Optional[C.Report] = None,
    ) -> None:
        self.feed = feed
        self.options = nats if isinstance(nats, C.Options) else C.Options(servers=nats)
        self.options.check()
        self.bucket = keys.check_bucket(bucket if bucket is not None else keys.bucket_for(feed))
        if stale_after is not None and not (isinstance(stale_after, (int, float)) and 0 < stale_after < 1e6):
            raise InvalidInput(f"stale_after must be a number of seconds greater than 0: got {stale_after!r}")
        if bucket_timeout is not None and not (isinstance(bucket_timeout, (int, float)) and bucket_timeout >= 0):
            raise InvalidInput(f"bucket_timeout must be 0 or more seconds: got {bucket_timeout!r}")
        self.stale_after = stale_after
        self.mode = mode
        self.bucket_timeout = bucket_timeout
        self.report: C.Report = report or (lambda line: None)
        self._stop_asked = False
        self.stats = MirrorStats()
        #: What the mirror makes of the bridge: "waiting", "live", "stale", "stopped", "ended".
        self.bridge = "waiting"
        self._stop: asyncio.Event  # made by run(), in its loop (Python 3.9 binds an Event to a loop when made)
        self._ended: asyncio.Event
        self._watches = 0  # the current watch's number: what an older watch still delivers is dropped
        self._rev = 0  # the newest revision the current watch delivered
        self._last: Dict[str, Tuple[int, int]] = {}  # symbol -> (incarnation, seq) applied
        self._heard = time.monotonic()
        self._meta: Optional[wire.Meta] = None
        self._sub: Any = None
        self._nc: Any = None
        self._pub: Optional[Publisher] = None
        self._recreate: asyncio.Event
        self._refused: Dict[str, None] = {}
        self._top: Dict[int, int] = {}  # incarnation -> the newest change number seen in a record
        self._unfinished = 0  # "ended" read before the feed's last change: watches made again since
        self._symbols: Dict[str, Optional[str]] = {}  # key -> its symbol (None: not a symbol's key)
        self._last_beat: Optional[Tuple[str, int]] = None  # the newest heartbeat seen: (bridge_id, time_ns)

    def stop(self) -> None:
        """Finish: stop watching and close the local feed's publisher (the feed stays, with its
        values, for another mirror to take over). ``run()`` then returns."""
        self._stop_asked = True
        if hasattr(self, "_stop"):
            self._stop.set()

    async def run(self) -> MirrorStats:
        self._stop = asyncio.Event()
        self._ended = asyncio.Event()
        self._recreate = asyncio.Event()
        if self._stop_asked:
            self._stop.set()
        self._nc = await C.connect(self.options, self.report, on_reconnect=self._reconnected)
        try:
            kv = await self._wait_for_bucket()
            if kv is None:
                return self.stats
            meta = await self._wait_for_meta(kv)
            if meta is None:
                return self.stats
            self._meta = meta
            pub = self._pub = self._open_local(meta)
            try:
                return await self._mirror()
            finally:
                if self._ended.is_set():
                    pub.end()
                pub.close()
        finally:
            await C.close(self._nc)

    async def _reconnected(self) -> None:
        self._recreate.set()

    # -- waiting for the bridge ----------------------------------------------------------------------
    async def _until(self, what: str, attempt: Any) -> Any:
        deadline = None if self.bucket_timeout is None else time.monotonic() + self.bucket_timeout
        said = False
        while not self._stop.is_set():
            found = await attempt()
            if found is not None:
                return found
            if deadline is not None and time.monotonic() >= deadline:
                raise RemoteError(f"{what} did not appear within {self.bucket_timeout:g} s")
            if not said:
                self.report(f"waiting for {what}")
                said = True
            try:
                await asyncio.wait_for(self._stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        return None

    async def _wait_for_bucket(self) -> Any:
        from nats.js.errors import BucketNotFoundError

        js = self._js = self._nc.jetstream(timeout=5.0)

        async def attempt() -> Any:
            try:
                return await js.key_value(self.bucket)
            except BucketNotFoundError:
                return None
            except Exception as exc:  # JetStream not ready yet (a cluster electing), a timeout
                if "authorization" in str(exc).lower() or "permission" in str(exc).lower():
                    raise RemoteError(f"NATS refused access to bucket {self.bucket!r}: {exc}") from None
                return None

        return await self._until(f"bucket {self.bucket!r}", attempt)

    async def _wait_for_meta(self, kv: Any) -> Optional[wire.Meta]:
        from nats.js.errors import KeyNotFoundError

        async def attempt() -> Optional[wire.Meta]:
            try:
                entry = await kv.get(keys.BRIDGE_KEY)
            except KeyNotFoundError:
                return None
            except Exception:
                return None
            try:
                return wire.decode_meta(entry.value or b"")
            except wire.Malformed as exc:
                raise RemoteError(
                    f"bucket {self.bucket!r} is not a pricefeed bridge's: its bridge key: {exc}"
                ) from None

        return await self._until(f"a bridge to write bucket {self.bucket!r}", attempt)  # type: ignore[no-any-return]

    def _open_local(self, meta: wire.Meta) -> Publisher:
        capacity = max(meta.capacity, L.MIN_CAPACITY)
        pub = Publisher.open_or_create(self.feed, capacity=capacity, mode=self.mode, fields=meta.fields)
        if pub.fields != meta.fields:
            pub.close()
            raise InvalidGeometry(
                f"local feed {self.feed!r} has fields {format_fields(pub.fields)}; the bridge's feed "
                f"{meta.feed!r} has {format_fields(meta.fields)}: remove it (pricefeed rm {self.feed}) or mirror "
                "into another feed"
            )
        self._names = [name for name, _ in meta.fields]
        self.report(
            f"mirroring bucket {self.bucket!r} (feed {meta.feed!r}, fields {format_fields(meta.fields)}) "
            f"into local feed {self.feed!r}"
        )
        return pub

    # -- the watch ------------------------------------------------------------------------------------
    async def _watch(self) -> None:
        """(Re-)create the watch: every key's current value, then each put as it comes.

        A watch created again starts from every key's current value too, not from the revision
        after the last one seen: that costs one record per symbol, and holds even when the
        bucket's numbering started again under the mirror (a bridge's --replace deletes the
        bucket and makes it anew, so its revisions start from 1). What was applied already is
        recognised by the record's own change number."""
        from nats.js import api

        old, self._sub = self._sub, None
        self._watches += 1
        self._rev = 0
        if old is not None:
            try:
                await old.unsubscribe()
            except Exception:
                pass
        number = self._watches

        async def deliver(msg: Any) -> None:
            if number == self._watches:
                await self._on_msg(msg)

        self._sub = await self._js.subscribe(
            f"$KV.{self.bucket}.>", stream=f"KV_{self.bucket}", cb=deliver, ordered_consumer=True,
            idle_heartbeat=1.0, deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT, inactive_threshold=60.0,
        )  # fmt: skip
        self.stats.watches += 1

    async def _mirror(self) -> MirrorStats:
        self._prefix = f"$KV.{self.bucket}."
        self._heard = time.monotonic()
        await self._watch()
        stop = asyncio.ensure_future(self._stop.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        watchdog = asyncio.ensure_future(self._watchdog())
        try:
            await asyncio.wait([stop, ended, watchdog], return_when=asyncio.FIRST_COMPLETED)
            if watchdog.done():
                watchdog.result()
        finally:
            await cancel([stop, ended, watchdog])
            if self._sub is not None:
                try:
                    await asyncio.wait_for(self._sub.unsubscribe(), 2.0)
                except Exception:
                    pass
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    _fatal: Optional[PricefeedError] = None

    def _limit(self) -> float:
        if self.stale_after is not None:
            return self.stale_after
        interval = self._meta.interval_ms / 1000 if self._meta is not None else 1.0
        return max(3 * interval, 1.0)

    async def _watchdog(self) -> None:
        """Re-create the watch when the connection came back, or when the bucket has been
        silent too long while the bridge should be beating (again after 2, 4, ... times as
        long, at most 30 s apart, while the silence lasts); report a stale bridge."""
        last_attempt = 0.0
        attempts = 0
        while self._fatal is None:
            try:
                await asyncio.wait_for(self._recreate.wait(), 0.1)
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            if self._recreate.is_set():
                self._recreate.clear()
                if self._fatal is None:
                    await self._try_watch("the connection came back")
                    last_attempt = now
                continue
            if self.bridge in ("stopped", "ended"):
                continue  # silence is expected
            silent = now - self._heard
            limit = self._limit()
            if silent <= limit:
                attempts = 0
                continue
            if self.bridge != "stale":
                self.bridge = "stale"
                self.stats.stale += 1
                self.report(f"bridge stale: nothing from it for {silent:.1f} s (it beats every {self._beat():g} s)")
            if now - last_attempt > min(limit * 2**attempts, 30.0) and self._nc.is_connected:
                await self._try_watch("the bucket fell silent", quiet=attempts > 0)
                attempts += 1
                last_attempt = now
        raise self._fatal

    def _beat(self) -> float:
        return self._meta.interval_ms / 1000 if self._meta is not None else 1.0

    async def _try_watch(self, why: str, quiet: bool = False) -> None:
        try:
            await self._watch()
            if not quiet:
                self.report(f"watch created again ({why})")
        except Exception as exc:
            self.report(f"could not create the watch again ({why}): {exc or type(exc).__name__}; will retry")

    # -- applying ------------------------------------------------------------------------------------
    async def _on_msg(self, msg: Any) -> None:
        try:
            self._apply(msg)
        except PricefeedError as exc:  # the local feed refused: stop with the reason
            if self._fatal is None:
                self._fatal = exc
                self._recreate.set()

    def _apply(self, msg: Any) -> None:
        headers = msg.headers
        if headers and headers.get("Status"):
            return  # a heartbeat or flow control
        try:
            rev = msg.metadata.sequence.stream
        except Exception:
            return
        if rev <= self._rev:
            self.stats.repeats += 1
            return
        self._rev = rev
        if headers and (headers.get("KV-Operation") or headers.get("Nats-Marker-Reason")):
            return  # a delete or purge: the mirror keeps a symbol's last value, as a feed does
        key = msg.subject[len(self._prefix) :]
        if key == keys.BRIDGE_KEY:
            self._on_meta(msg.data)
            return
        symbol = self._symbols.get(key, "")
        if symbol == "":
            if len(self._symbols) >= MAX_KEYS_CACHED:
                self._symbols.clear()  # a bucket of more keys than a feed has symbols: keep bounded
            symbol = keys.decode_key(key)
            self._symbols[key] = symbol = symbol if symbol is not None and wire.symbol_ok(symbol) else None
        if symbol is None:
            self._malformed(key, "not the key of a symbol a feed can hold")
            return
        assert self._meta is not None
        try:
            rec = wire.decode_record(msg.data, symbol, self._meta.fields)
        except wire.Malformed as exc:
            self._malformed(key, str(exc))
            return
        if rec.seq > self._top.get(rec.incarnation, 0):
            self._top[rec.incarnation] = rec.seq
        last = self._last.get(symbol)
        if last is not None and last[0] == rec.incarnation and last[1] >= rec.seq:
            if last[1] == rec.seq:
                self.stats.repeats += 1  # a re-created watch's first view of what was applied
            else:
                self.stats.older += 1
            return
        self._last[symbol] = (rec.incarnation, rec.seq)
        # A change not seen before is a word from the bridge; what a re-created watch replays is not.
        self._heard = time.monotonic()
        if self.bridge in ("stale", "waiting"):
            self._live()
        pub = self._pub
        assert pub is not None
        try:
            if len(rec.values) == 1:
                changed = pub.publish(symbol, rec.values[0], time_ns=rec.time_ns)
            else:
                changed = pub.publish_many([(symbol, dict(zip(self._names, rec.values)))], time_ns=rec.time_ns) > 0
        except InvalidInput as exc:
            self._malformed(key, str(exc))
            return
        except PricefeedError as exc:  # FeedFull: this symbol has no room; the others go on
            if symbol not in self._refused:
                self._refused[symbol] = None
                self.report(f"symbol {symbol!r} not mirrored: {exc}")
            return
        if changed:
            self.stats.applied += 1
        else:
            self.stats.unchanged += 1

    def _live(self) -> None:
        if self.bridge == "stale":
            self.report("bridge live again")
        self.bridge = "live"

    def _malformed(self, key: str, why: str) -> None:
        self.stats.malformed += 1
        if self.stats.malformed <= MAX_REPORTED:
            self.report(f"entry {key!r} refused: {why}")
            if self.stats.malformed == MAX_REPORTED:
                self.report("further refused entries are counted, not reported")

    def _on_meta(self, data: bytes) -> None:
        try:
            meta = wire.decode_meta(data)
        except wire.Malformed as exc:
            self._malformed(keys.BRIDGE_KEY, str(exc))
            return
        old = self._meta
        assert old is not None
        if meta.fields != old.fields:
            self._fatal = RemoteError(
                f"the bridge's feed now has fields {format_fields(meta.fields)}; local feed {self.feed!r} has "
                f"{format_fields(old.fields)}: mirror it into another feed"
            )
            self._recreate.set()
            return
        # A heartbeat not seen before is a word from the bridge; a re-created watch replays the last one.
        beat = (meta.bridge_id, meta.time_ns)
        fresh = beat != self._last_beat
        self._last_beat = beat
        if fresh:
            self._heard = time.monotonic()
            if meta.bridge_id != old.bridge_id and self.bridge != "waiting":
                self.report(f"bridge restarted (pid {meta.pid} on {meta.host})")
            if meta.incarnation != old.incarnation:
                self.report(f"feed {meta.feed!r} was created anew at the bridge's end")
        self._meta = meta
        self.stats.upstream_conflated = meta.conflated
        if meta.state == "live":
            if fresh:
                self._live()
        elif meta.state == "stopped" and self.bridge != "stopped":
            self.bridge = "stopped"
            self.report(f"bridge stopped (pid {meta.pid} on {meta.host}); waiting for it to come back")
        elif meta.state == "ended":
            # The bridge says "ended" once the feed's last change is stored, so its record must
            # have come before: if not, this watch missed it. Look again (a few times at most).
            if meta.head > self._top.get(meta.incarnation, 0) and self._unfinished < MAX_LOOKS:
                if not self._unfinished:
                    self.report(
                        f"the bridge says the feed ended at change {meta.head}, not yet seen here: watching again"
                    )
                self._unfinished += 1
                asyncio.get_running_loop().call_later(1.0, self._recreate.set)
                return
            self.bridge = "ended"
            self.report(f"feed {meta.feed!r} was ended for good: ending local feed {self.feed!r}")
            self._ended.set()


__all__ = ["Mirror", "MirrorStats"]
