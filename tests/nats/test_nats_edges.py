"""The bridge and the mirror at their edges, against real nats-server processes: authentication,
the bucket's format as a reader in another language sees it, message-id deduplication of retried
puts, a stale bridge, malformed entries, the command line's errors, `pricefeed nats-server`, and
the library's roles sharing one event loop.

Every process is real and every wait bounded; each test uses feeds of its own and removes them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import Proc, unique_name, unlink_feed

from pricefeed import FeedNotFound, Publisher, Quote, Subscriber

PY = sys.executable
LINUX = sys.platform.startswith("linux")
pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals stop and resume the processes here"),
    pytest.mark.timeout(180),
]
#: Environment variables the commands read: a test sets what it means to, nothing leaks in.
NATS_ENV = ("PRICEFEED_NATS", "PRICEFEED_NATS_TOKEN", "PRICEFEED_NATS_PASSWORD")


def cli(*args: str) -> List[str]:
    return [PY, "-m", "pricefeed", *args]


def run(coro: Any, timeout: float = 60.0) -> Any:
    """Run a coroutine on a fresh event loop, bounded by ``timeout`` s."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def wait_for(p: Proc, text: str, timeout: float = 30, start: int = 0) -> int:
    """Wait until process ``p`` has said ``text`` on stderr after character ``start``; where it
    said it. It fails if ``p`` exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        at = p.stderr.find(text, start)
        if at >= 0:
            return at
        assert p.p.poll() is None, f"exited {p.p.returncode} before saying {text!r}: {p.stderr[-3000:]}"
        assert time.monotonic() < deadline, f"did not say {text!r} within {timeout} s: {p.stderr[-3000:]}"
        time.sleep(0.02)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def stats_of(stderr: str, command: str) -> Dict[str, int]:
    """The counts in the last line a bridge or mirror prints: 'pricefeed bridge: done: taken=...'."""
    lines = [x for x in stderr.splitlines() if x.startswith(f"pricefeed {command}: ") and "=" in x]
    assert lines, f"no stats line in:\n{stderr[-3000:]}"
    return {k: int(v) for k, v in (part.split("=") for part in lines[-1].split(": ")[-1].split())}


def terminate(p: Proc, command: str, timeout: float = 30) -> Tuple[str, Dict[str, int]]:
    """SIGTERM ``p`` (a bridge or a mirror): it must exit 143 with its stats line."""
    os.kill(p.pid, signal.SIGTERM)
    code, _, err = p.finish(timeout)
    assert code == 143, f"{command} exited {code}: {err[-3000:]}"
    assert re.search(rf"^pricefeed {command}: terminated: \w+=\d+", err, re.M), err[-2000:]
    assert "Traceback" not in err, err
    return err, stats_of(err, command)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def snapshot_of(feed: str) -> Dict[str, Dict[str, Any]]:
    with Subscriber(feed) as sub:
        return {s: q.fields for s, q in sub.snapshot().items()}


@pytest.fixture(autouse=True)
def _no_nats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NATS_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def feeds(procs: List[Proc]) -> Iterator[Callable[[], str]]:
    """``feeds()``: a feed name no other test uses; every one handed out is removed after the
    test (after the processes it started are killed)."""
    names: List[str] = []

    def make() -> str:
        names.append(unique_name())
        return names[-1]

    try:
        yield make
    finally:
        for p in procs:
            p.kill()
        for name in names:
            unlink_feed(name)


def start(procs: List[Proc], *args: str, env: Optional[Dict[str, str]] = None) -> Proc:
    p = Proc(cli(*args), env=env)
    procs.append(p)
    return p


def bucket_of(feed: str) -> str:
    return "b" + feed.replace("-", "_")


async def kv_of(nc: Any, bucket: str, timeout: float = 20.0) -> Any:
    """The bucket's KV handle, once the bridge has created it."""
    import nats.js.errors

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await nc.jetstream(timeout=5).key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            assert loop.time() < deadline, f"bucket {bucket} did not appear within {timeout} s"
            await asyncio.sleep(0.05)


# -- a reader in another language ---------------------------------------------------------------
# The rules of the bucket's keys and values, written here from the specification alone: nothing of
# pricefeed decodes what the bridge wrote.

_KEPT = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def spec_decode_key(key: str) -> Optional[str]:
    """The symbol of a symbol key, or None for any other key (the bridge key, a non-canonical one)."""
    m = re.fullmatch(r"s\.((?:[A-Za-z0-9_-]|=[0-9A-F]{2})+)", key)
    if m is None:
        return None
    out = bytearray()
    for token in re.findall(r"=[0-9A-F]{2}|.", m.group(1)):
        if token.startswith("="):
            byte = int(token[1:], 16)
            if byte in _KEPT:
                return None
            out.append(byte)
        else:
            out += token.encode("ascii")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def spec_decode_record(data: bytes, symbol: str, schema: List[Tuple[str, str]]) -> Dict[str, Any]:
    obj = json.loads(data.decode("utf-8"))
    assert isinstance(obj, dict) and set(obj) == {"symbol", "seq", "time_ns", "incarnation", "fields", "changed"}, obj
    assert obj["symbol"] == symbol
    for name in ("seq", "time_ns", "incarnation"):
        assert type(obj[name]) is int and obj[name] >= 0, (name, obj)
    assert obj["seq"] >= 1
    assert set(obj["fields"]) == {name for name, _ in schema}, obj
    for name, kind in schema:
        value = obj["fields"][name]
        assert type(value) is (float if kind == "f64" else int), (name, value)
    assert all(c in obj["fields"] for c in obj["changed"]), obj
    return obj


# -- 1. authentication ---------------------------------------------------------------------------


def test_a_bridge_without_the_token_exits_16_at_once_naming_authorization(
    procs: List[Proc], feeds: Callable[[], str], token_server: Any
) -> None:
    server, _ = token_server
    src = feeds()
    with Publisher.create(src, fields="bid:f64,ask:f64") as pub:
        pub.publish("AAPL", bid=187.25, ask=187.5)
        began = time.monotonic()
        p = start(procs, "bridge", src, "--nats", server.url, "--bucket", bucket_of(src), "--connect-timeout", "30")
        code, _, err = p.finish(8)
        took = time.monotonic() - began
    assert code == 16, err
    assert took < 6, f"a refusal is final at once, not retried until the connect timeout: {took:.1f} s"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pricefeed: ") and "authorization" in lines[0].lower(), err
    assert "Traceback" not in err


def test_with_the_token_in_the_environment_the_bridge_fills_the_bucket(
    procs: List[Proc], feeds: Callable[[], str], token_server: Any, nats_connect: Any
) -> None:
    server, token = token_server
    src = feeds()
    bucket = bucket_of(src)
    with Publisher.create(src, fields="bid:f64,ask:f64") as pub:
        pub.publish("AAPL", bid=187.25, ask=187.5)
        pub.publish("BRK.B", bid=410.0, ask=410.5)
        p = start(procs, "bridge", src, "--nats", server.url, "--bucket", bucket,
                  env={"PRICEFEED_NATS_TOKEN": token})  # fmt: skip
        wait_for(p, "bridging feed")

        async def read() -> Dict[str, Any]:
            nc = await nats_connect(server.url, token=token)
            try:
                kv = await kv_of(nc, bucket)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while True:
                    found = {}
                    for key in await kv.keys():
                        if key != "bridge":
                            found[key] = json.loads((await kv.get(key)).value)["fields"]
                    if len(found) == 2:
                        return found
                    assert loop.time() < deadline, f"the bucket holds {found} after 20 s"
                    await asyncio.sleep(0.05)
            finally:
                await nc.close()

        found = run(read())
        assert found == {"s.AAPL": {"bid": 187.25, "ask": 187.5}, "s.BRK=2EB": {"bid": 410.0, "ask": 410.5}}
        err, stats = terminate(p, "bridge")
        assert stats["sent"] == 2 and stats["retried"] == 0 and stats["disconnects"] == 0, stats
        assert token not in err, "the bridge printed its token"


# -- 2. the bucket, read by a plain NATS client -------------------------------------------------

SPEC_SYMBOLS = {
    "BRK.B": (410.25, 410.5, 100),
    "a=b": (-0.0, 1e-300, -(2**63)),
    "x/y": (0.1, 1.7976931348623157e308, 2**63 - 1),
    "E~1": (1.0, 2.0, 0),
    "AAPL": (187.25, 187.5, 300),
    "=41": (3.0, 4.0, 5),
    "s.x>*": (5.5, 6.5, -7),
    "-_": (8.0, 9.0, 10),
}


def test_a_plain_nats_client_reads_the_bucket_by_the_specification_alone(
    procs: List[Proc], feeds: Callable[[], str], nats_server: Any, nats_connect: Any
) -> None:
    src = feeds()
    bucket = bucket_of(src)
    schema = [["bid", "f64"], ["ask", "f64"], ["size", "i64"]]
    with Publisher.create(src, capacity=64, fields="bid:f64,ask:f64,size:i64") as pub:
        for symbol, (bid, ask, size) in SPEC_SYMBOLS.items():
            pub.publish(symbol, bid=1.0, ask=1.0, size=1)  # a first value, then the one that stays
            pub.publish(symbol, bid=bid, ask=ask, size=size)
        with Subscriber(src) as sub:
            incarnation = sub.status().incarnation
        pub.end()
    p = start(procs, "bridge", src, "--nats", nats_server.url, "--bucket", bucket)
    code, _, err = p.finish(30)
    assert code == 0 and "Traceback" not in err, err  # the feed was ended: the bridge sends all, then exits

    async def read() -> Tuple[Dict[str, bytes], bytes]:
        nc = await nats_connect(nats_server.url)
        try:
            kv = await nc.jetstream(timeout=5).key_value(bucket)
            entries = {key: bytes((await kv.get(key)).value) for key in await kv.keys()}
            return {k: v for k, v in entries.items() if k != "bridge"}, entries["bridge"]
        finally:
            await nc.close()

    records, bridge_key = run(read())
    found: Dict[str, Tuple[Any, ...]] = {}
    order = list(SPEC_SYMBOLS)
    for key, data in records.items():
        symbol = spec_decode_key(key)
        assert symbol is not None, f"key {key!r} is not a canonical symbol key"
        obj = spec_decode_record(data, symbol, schema)
        found[symbol] = (obj["fields"]["bid"], obj["fields"]["ask"], obj["fields"]["size"])
        # Each symbol's second change: the feed's change 2k+2 for the k-th symbol (from 0), which
        # changed the fields that differ from the first value.
        assert obj["seq"] == 2 * order.index(symbol) + 2, obj
        first = (1.0, 1.0, 1)
        assert obj["changed"] == [n for (n, _), a, b in zip(schema, first, SPEC_SYMBOLS[symbol]) if a != b], obj
    assert set(found) == set(SPEC_SYMBOLS)
    for symbol, values in SPEC_SYMBOLS.items():
        got = found[symbol]
        assert got == values, (symbol, got, values)
        assert [repr(v) for v in got[:2]] == [repr(v) for v in values[:2]], f"{symbol}: -0.0 is kept exactly"

    meta = json.loads(bridge_key.decode("utf-8"))
    assert set(meta) == {"format", "feed", "incarnation", "fields", "capacity", "state", "publisher", "head",
                         "acked", "interval_ms", "time_ns", "bridge_id", "host", "pid", "sent", "conflated"}  # fmt: skip
    assert meta["format"] == 1 and meta["feed"] == src and meta["fields"] == schema, meta
    assert meta["capacity"] == 64 and meta["state"] == "ended" and meta["publisher"] in ("alive", "gone"), meta
    assert meta["head"] == meta["acked"] == 2 * len(SPEC_SYMBOLS), meta
    assert meta["pid"] == p.pid and meta["host"] == socket.gethostname(), meta
    assert meta["sent"] == len(SPEC_SYMBOLS) and meta["interval_ms"] == 1000, meta
    assert type(meta["incarnation"]) is int and meta["incarnation"] > 0, meta
    assert meta["incarnation"] == incarnation
    assert all(json.loads(r)["incarnation"] == meta["incarnation"] for r in records.values())
    assert abs(meta["time_ns"] - time.time_ns()) < 60e9, meta


# -- 3. retried puts are stored once ----------------------------------------------------------------


def test_puts_retried_while_the_server_is_frozen_are_stored_once(
    feeds: Callable[[], str], nats_server: Any, nats_connect: Any
) -> None:
    """The server is stopped (SIGSTOP) while changes are published: acknowledgements stop
    coming, the bridge gives up on them after ack_timeout and sends the puts again with the
    same message ids. Once the server runs again it stores each change once and answers the
    repeats as duplicates; a watch of every put from before the freeze sees each change once."""
    from nats.js import api

    from pricefeed._nats import Bridge

    src = feeds()
    bucket = bucket_of(src)
    names = [f"S{k}.{k % 3}" for k in range(50)]
    hot, quiet = names[:10], names[10:]
    lines: List[str] = []
    seen: List[Tuple[int, str, bytes]] = []
    pid = nats_server.pid
    assert pid is not None

    async def main() -> Any:
        nc = await nats_connect(nats_server.url)
        with Publisher.create(src, fields="n:i64,px:f64") as pub:
            bridge = Bridge(src, nats_server.url, bucket, ack_timeout=0.3, report=lines.append)
            task = asyncio.ensure_future(bridge.run())
            try:
                await kv_of(nc, bucket)

                async def collect(msg: Any) -> None:
                    seen.append((msg.metadata.sequence.stream, msg.subject, bytes(msg.data)))

                watch = await nc.jetstream(timeout=5).subscribe(
                    f"$KV.{bucket}.s.>", ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL, cb=collect
                )
                for n in range(1, 6):
                    for s in names:
                        pub.publish(s, n=n, px=n + 0.5)
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)
                os.kill(pid, signal.SIGSTOP)
                try:
                    frozen_n = n = 100  # every symbol changes once while the server is frozen...
                    for s in names:
                        pub.publish(s, n=n, px=n + 0.5)
                    until = time.monotonic() + 1.5
                    while time.monotonic() < until:  # ...and the hot ones go on changing
                        n += 1
                        for s in hot:
                            pub.publish(s, n=n, px=n + 0.5)
                        await asyncio.sleep(0.05)
                finally:
                    os.kill(pid, signal.SIGCONT)
                await asyncio.sleep(1.0)  # the frozen puts and their repeats land, the watch delivers them
                for _ in range(3):
                    n += 1
                    for s in names:
                        pub.publish(s, n=n, px=n + 0.5)
                    await asyncio.sleep(0.02)
                pub.end()
                stats = await asyncio.wait_for(task, 30)
                deadline = asyncio.get_running_loop().time() + 10
                while {json.loads(d)["symbol"] for _, _, d in seen if json.loads(d)["fields"]["n"] == n} != set(names):
                    assert asyncio.get_running_loop().time() < deadline, "the watch lacks the last round"
                    await asyncio.sleep(0.02)
                await watch.unsubscribe()
                return stats, frozen_n, n
            finally:
                os.kill(pid, signal.SIGCONT)
                bridge.stop()
                if not task.done():
                    try:
                        await asyncio.wait_for(task, 15)
                    except Exception:
                        pass
                await nc.close()

    stats, frozen_n, last_n = run(main(), 90)
    said = "\n".join(lines[-20:])
    assert stats.retried > 0, (stats, said)
    assert stats.duplicates > 0, (stats, said)
    assert "a put failed (no acknowledgement within 0.3 s); retrying" in lines, said

    stream_seqs = [s for s, _, _ in seen]
    assert stream_seqs == sorted(set(stream_seqs)), "the watch delivered a revision twice or out of order"
    stored: Dict[Tuple[str, int], int] = {}
    by_symbol: Dict[str, List[int]] = {}
    for _, subject, data in seen:
        rec = json.loads(data)
        assert subject == f"$KV.{bucket}.s." + "".join(
            c if c.isalnum() or c in "-_" else f"={ord(c):02X}" for c in rec["symbol"]
        )
        key = (rec["symbol"], rec["seq"])
        stored[key] = stored.get(key, 0) + 1
        by_symbol.setdefault(rec["symbol"], []).append(rec["fields"]["n"])
    twice = {k: v for k, v in stored.items() if v > 1}
    assert not twice, f"changes stored more than once: {sorted(twice.items())[:10]} ({stats})"
    for s in quiet:  # its one change while the server was frozen, retried, is in the stream once
        assert by_symbol[s].count(frozen_n) == 1, (s, by_symbol[s])
    for s, ns in by_symbol.items():
        assert ns == sorted(set(ns)), f"{s}: stored out of order: {ns}"
        assert ns[-1] == last_n, f"{s}: the last change is missing: {ns}"
    assert set(by_symbol) == set(names)
    assert len(stored) >= stats.sent - stats.duplicates, (len(stored), stats)


# -- 4. a stale bridge ----------------------------------------------------------------------------


@pytest.fixture
def bridged(procs: List[Proc], feeds: Callable[[], str], nats_server: Any) -> Iterator[Dict[str, Any]]:
    """A feed of three fields with a few symbols, `pricefeed bridge` carrying it to NATS, and
    `pricefeed mirror --stale-after 1` copying it into a second feed, both running."""
    src, dst = feeds(), feeds()
    bucket = bucket_of(src)
    with Publisher.create(src, fields="bid:f64,ask:f64,size:i64") as pub:
        for k, s in enumerate(["AAPL", "MSFT", "BRK.B"]):
            pub.publish(s, bid=k + 0.25, ask=k + 0.5, size=k)
        bridge = start(procs, "bridge", src, "--nats", nats_server.url, "--bucket", bucket)
        wait_for(bridge, "bridging feed")
        mirror = start(procs, "mirror", dst, "--nats", nats_server.url, "--bucket", bucket, "--stale-after", "1")
        wait_for(mirror, "mirroring bucket")
        wait_until(lambda: len(_symbols(dst)) == 3, 20, "the mirror's three symbols")
        yield {"src": src, "dst": dst, "bucket": bucket, "pub": pub, "bridge": bridge, "mirror": mirror}


def _symbols(feed: str) -> List[str]:
    """The feed's symbols; none while it does not exist yet."""
    try:
        return sorted(snapshot_of(feed))
    except FeedNotFound:
        return []


def test_a_stopped_bridge_is_reported_stale_and_live_again(bridged: Dict[str, Any]) -> None:
    bridge, mirror, pub, dst = bridged["bridge"], bridged["mirror"], bridged["pub"], bridged["dst"]
    assert "bridge stale" not in mirror.stderr
    os.kill(bridge.pid, signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        at = wait_for(mirror, "bridge stale", timeout=8)
        assert time.monotonic() - frozen < 6
        assert re.search(r"bridge stale: nothing from it for \d+\.\d s \(it beats every 1 s\)", mirror.stderr[at:])
        pub.publish("MSFT", bid=50.25, ask=50.5, size=50)  # waits in the frozen bridge
        time.sleep(1.5)
    finally:
        os.kill(bridge.pid, signal.SIGCONT)
    # The bridge beats again: the mirror's last word about it is "live again", and stays so.
    deadline = time.monotonic() + 15
    settled: Optional[float] = None
    while settled is None or time.monotonic() - settled < 3:
        err = mirror.stderr
        if err.rfind("bridge live again") > err.rfind("bridge stale") >= 0:
            settled = settled or time.monotonic()
        else:
            settled = None
        assert mirror.p.poll() is None, err[-3000:]
        assert time.monotonic() < deadline, f"the mirror does not settle on a live bridge: {err[at:][-3000:]}"
        time.sleep(0.05)
    wait_until(lambda: snapshot_of(dst)["MSFT"]["size"] == 50, 10, "the change made while the bridge was frozen")
    _, stats = terminate(mirror, "mirror")
    assert stats["stale"] >= 1 and stats["malformed"] == 0, stats
    terminate(bridge, "bridge")


def test_a_stopped_bridge_stays_stale_until_it_writes_again(bridged: Dict[str, Any]) -> None:
    bridge, mirror = bridged["bridge"], bridged["mirror"]
    os.kill(bridge.pid, signal.SIGSTOP)
    try:
        at = wait_for(mirror, "bridge stale", timeout=8)
        time.sleep(4.0)  # four stale limits: the bridge has still said nothing
        said = mirror.stderr[at:]
    finally:
        os.kill(bridge.pid, signal.SIGCONT)
    assert "bridge live again" not in said, said
    wait_for(mirror, "bridge live again", timeout=8, start=at)
    _, stats = terminate(mirror, "mirror")
    assert stats["stale"] == 1, stats


# -- 5. malformed entries -------------------------------------------------------------------------


def test_the_mirror_refuses_malformed_entries_and_goes_on(bridged: Dict[str, Any], nats_connect: Any,
                                                          nats_server: Any) -> None:  # fmt: skip
    import nats.js.errors

    bucket, mirror, pub, dst = bridged["bucket"], bridged["mirror"], bridged["pub"], bridged["dst"]
    good_a = {"symbol": "A", "seq": 999, "time_ns": 1, "incarnation": 1,
              "fields": {"bid": 1.0, "ask": 2.0, "size": 3}, "changed": ["bid"]}  # fmt: skip
    missing = dict(good_a, symbol="X", fields={"bid": 1.0, "ask": 2.0})
    spaced = dict(good_a, symbol="a b")

    async def vandalise() -> str:
        nc = await nats_connect(nats_server.url)
        try:
            kv = await nc.jetstream(timeout=5).key_value(bucket)
            await kv.put("s.BAD", b"not json")
            await kv.put("s.X", json.dumps(missing).encode())
            await kv.put("s.=41", json.dumps(good_a).encode())  # a record of "A" under a non-canonical key
            await kv.put("s.a=20b", json.dumps(spaced).encode())  # a symbol no feed can hold
            try:
                await kv.put("s.Y", b"[" + b"1," * 20000 + b"1]")
                huge = "stored"
            except nats.js.errors.APIError:
                huge = "refused by the bucket"  # its maximum value size
            await kv.put("s.Z", b"x" * 16384)  # as long as the bucket allows: not JSON
            return huge
        finally:
            await nc.close()

    huge = run(vandalise())
    pub.publish("AAPL", bid=99.25, ask=99.5, size=99)  # after the garbage, in revision order
    wait_until(lambda: snapshot_of(dst).get("AAPL", {}).get("size") == 99, 20, "AAPL's new record at the mirror")
    assert mirror.p.poll() is None, mirror.stderr[-3000:]
    assert sorted(snapshot_of(dst)) == ["AAPL", "BRK.B", "MSFT"]
    err, stats = terminate(mirror, "mirror")
    expected = 6 if huge == "stored" else 5
    assert stats["malformed"] == expected, (huge, stats, err[-3000:])
    assert "entry 's.BAD' refused: value is not JSON" in err, err
    assert "entry 's.X' refused: record has fields ['ask', 'bid']; the schema's are bid, ask, size" in err, err
    assert "entry 's.=41' refused: not the key of a symbol a feed can hold" in err, err
    assert "entry 's.a=20b' refused: not the key of a symbol a feed can hold" in err, err
    assert "entry 's.Z' refused: value is not JSON" in err, err
    terminate(bridged["bridge"], "bridge")


# -- 6. the command line's errors ------------------------------------------------------------------


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


def test_mirroring_into_a_local_feed_of_other_fields_exits_7_naming_both(
    procs: List[Proc], feeds: Callable[[], str], nats_server: Any
) -> None:
    src, dst = feeds(), feeds()
    bucket = bucket_of(src)
    with Publisher.create(src, fields="bid:f64,ask:f64") as pub, Publisher.create(dst, fields="price:f64,n:i64"):
        pub.publish("AAPL", bid=1.0, ask=2.0)
        bridge = start(procs, "bridge", src, "--nats", nats_server.url, "--bucket", bucket)
        wait_for(bridge, "bridging feed")
    m = start(procs, "mirror", dst, "--nats", nats_server.url, "--bucket", bucket, "--bucket-timeout", "20")
    code, _, err = m.finish(30)
    assert code == 7, err
    _no_traceback(err)
    assert f"local feed {dst!r} has fields price:f64,n:i64; the bridge's feed {src!r} has bid:f64,ask:f64" in err
    assert snapshot_of(dst) == {}, "the mirror wrote into a feed it refused"
    terminate(bridge, "bridge")


def test_a_bucket_of_another_feed_is_refused_unless_replaced(
    procs: List[Proc], feeds: Callable[[], str], nats_server: Any, nats_connect: Any
) -> None:
    first, second = feeds(), feeds()
    bucket = bucket_of(first)
    with Publisher.create(first, fields="bid:f64,ask:f64") as p1, Publisher.create(second, fields="px:f64") as p2:
        p1.publish("AAPL", bid=1.0, ask=2.0)
        p2.publish("MSFT", px=3.0)
        b1 = start(procs, "bridge", first, "--nats", nats_server.url, "--bucket", bucket)
        wait_for(b1, "bridging feed")
        terminate(b1, "bridge")

        b2 = start(procs, "bridge", second, "--nats", nats_server.url, "--bucket", bucket)
        code, _, err = b2.finish(30)
        assert code == 16, err
        _no_traceback(err)
        assert f"bucket {bucket!r} is not for feed {second!r} with fields px:f64: it holds feed {first!r}" in err
        assert "--replace" in err

        b3 = start(procs, "bridge", second, "--nats", nats_server.url, "--bucket", bucket, "--replace")
        wait_for(b3, f"replacing bucket {bucket!r}: it holds feed {first!r}")
        wait_for(b3, "bridging feed")

        async def read() -> Tuple[Dict[str, Any], List[str]]:
            nc = await nats_connect(nats_server.url)
            try:
                kv = await nc.jetstream(timeout=5).key_value(bucket)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while True:
                    found = sorted(await kv.keys())
                    if found == ["bridge", "s.MSFT"]:
                        return json.loads((await kv.get("bridge")).value), found
                    assert loop.time() < deadline, found
                    await asyncio.sleep(0.05)
            finally:
                await nc.close()

        meta, _ = run(read())
        assert meta["feed"] == second and meta["fields"] == [["px", "f64"]], meta
        terminate(b3, "bridge")


def test_bridging_a_feed_that_does_not_exist_exits_3(procs: List[Proc], feeds: Callable[[], str]) -> None:
    nofeed = feeds()
    p = start(procs, "bridge", nofeed, "--nats", f"nats://127.0.0.1:{free_port()}")
    code, _, err = p.finish(20)
    assert code == 3, err
    _no_traceback(err)
    assert nofeed in err and "pricefeed ls" in err, err


@pytest.mark.parametrize("command", ["bridge", "mirror"])
def test_an_unreachable_server_exits_16_after_the_connect_timeout(
    procs: List[Proc], feeds: Callable[[], str], command: str
) -> None:
    src = feeds()
    port = free_port()  # nothing listens there
    with Publisher.create(src):
        began = time.monotonic()
        p = start(procs, command, src if command == "bridge" else feeds(), "--nats", f"nats://127.0.0.1:{port}",
                  "--connect-timeout", "1")  # fmt: skip
        code, _, err = p.finish(8)
        took = time.monotonic() - began
    assert code == 16, err
    _no_traceback(err)
    assert f"could not connect to NATS at nats://127.0.0.1:{port} within 1 s" in err, err
    assert took < 5.0, f"took {took:.1f} s"


def test_a_client_certificate_without_its_key_exits_7(
    procs: List[Proc], feeds: Callable[[], str], tmp_path: Path
) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not checked before the options are\n")
    src = feeds()
    with Publisher.create(src):
        p = start(procs, "bridge", src, "--nats", "tls://127.0.0.1:4222", "--tls-cert", str(cert))
        code, _, err = p.finish(20)
    assert code == 7, err
    _no_traceback(err)
    assert "--tls-cert and --tls-key go together" in err, err

    p = start(procs, "mirror", feeds(), "--nats", "tls://127.0.0.1:4222", "--tls-key", str(tmp_path / "none.key"))
    code, _, err = p.finish(20)
    assert code == 7, err
    _no_traceback(err)
    assert "--tls-key: no such file" in err, err


NO_NATS = "import sys\nsys.modules['nats'] = None\nfrom pricefeed._cli.main import main\nsys.exit(main(sys.argv[1:]))\n"


@pytest.mark.parametrize("command", ["bridge", "mirror"])
def test_without_nats_py_the_commands_say_how_to_install_it(
    procs: List[Proc], feeds: Callable[[], str], command: str
) -> None:
    src = feeds()
    with Publisher.create(src):
        p = Proc([PY, "-c", NO_NATS, command, src if command == "bridge" else feeds(), "--nats",
                  f"nats://127.0.0.1:{free_port()}"])  # fmt: skip
        procs.append(p)
        code, _, err = p.finish(20)
    assert code == 16, err
    _no_traceback(err)
    assert "pip install 'pricefeed[nats]'" in err, err
    assert len(err.strip().splitlines()) == 1, err


# -- 7. pricefeed nats-server -----------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> List[int]:
    found: List[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return found


@pytest.mark.skipif(not LINUX, reason="Linux-specific: it finds the server process in /proc")
def test_the_nats_server_command_serves_a_bucket_and_stops_on_sigint(
    procs: List[Proc], tmp_path: Path, nats_connect: Any
) -> None:
    port = free_port()
    store = tmp_path / "store"
    p = start(procs, "nats-server", "--port", str(port), "--store", str(store))
    at = wait_for(p, "Ctrl-C stops it", timeout=20)
    line = p.stderr[: at + len("Ctrl-C stops it")].splitlines()[-1]
    assert f"nats-server listening on nats://127.0.0.1:{port} (JetStream, store {store}" in line, line
    servers = _children(p.pid)
    assert len(servers) == 1 and _alive(servers[0]), servers
    with open(f"/proc/{servers[0]}/cmdline", "rb") as f:
        assert b"nats-server" in f.read()

    async def use() -> bytes:
        nc = await nats_connect(f"nats://127.0.0.1:{port}")
        try:
            kv = await nc.jetstream(timeout=5).create_key_value(bucket="edges")
            await kv.put("s.AAPL", b"187.25")
            return bytes((await kv.get("s.AAPL")).value)
        finally:
            await nc.close()

    assert run(use()) == b"187.25"
    try:
        os.kill(p.pid, signal.SIGINT)
        code, _, err = p.finish(20)
    finally:
        if _alive(servers[0]):
            os.kill(servers[0], signal.SIGKILL)
    assert code == 130, err
    _no_traceback(err)
    wait_until(lambda: not _alive(servers[0]), 10, f"nats-server pid {servers[0]} to be gone")
    assert (store / "jetstream").is_dir() and (store / "nats-server.log").is_file()


# -- 8. the library, in one event loop -------------------------------------------------------------


def test_bridge_mirror_and_a_subscriber_share_one_event_loop(feeds: Callable[[], str], nats_server: Any) -> None:
    from pricefeed._nats import Bridge, BridgeStats, Mirror, MirrorStats

    src, dst = feeds(), feeds()
    bucket = bucket_of(src)
    names = [f"SYM.{k}" for k in range(10)]
    changes = 200
    reports: List[str] = []

    async def main() -> Tuple[BridgeStats, MirrorStats, List[Tuple[str, int, float]], Dict[str, Any]]:
        with Publisher.create(src, fields="n:i64,px:f64") as pub:
            for s in names:
                pub.publish(s, n=0, px=0.5)
            bridge = Bridge(src, nats_server.url, bucket, heartbeat=0.2, report=lambda x: reports.append("b: " + x))
            mirror = Mirror(dst, nats_server.url, bucket, bucket_timeout=20, report=lambda x: reports.append("m: " + x))
            tasks = [asyncio.ensure_future(bridge.run()), asyncio.ensure_future(mirror.run())]
            seen: List[Tuple[str, int, float]] = []
            follower: Optional[asyncio.Future] = None  # type: ignore[type-arg]
            try:
                sub = await Subscriber.aopen(dst, wait=20)
                try:
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 20
                    while len(sub.snapshot()) < len(names):
                        assert loop.time() < deadline, f"the mirror's feed has {sorted(sub.snapshot())}"
                        await asyncio.sleep(0.02)

                    async def follow() -> None:
                        async for ev in sub.aupdates():
                            if isinstance(ev, Quote):
                                seen.append((ev.symbol, ev.n, ev.px))

                    follower = asyncio.ensure_future(follow())
                    await asyncio.sleep(0.05)
                    for k in range(changes):
                        r = k // len(names) + 1
                        pub.publish(names[k % len(names)], n=r, px=r + 0.5)
                        await asyncio.sleep(0.002)
                    last = changes // len(names)
                    deadline = loop.time() + 20
                    while not all(q.n == last for q in sub.snapshot().values()):
                        assert loop.time() < deadline, f"the mirror's feed: {sub.snapshot()}"
                        await asyncio.sleep(0.02)
                    deadline = loop.time() + 10
                    while {s for s, n, _ in seen if n == last} != set(names):  # the follower takes them too
                        assert loop.time() < deadline, f"the follower saw {seen[-20:]}"
                        await asyncio.sleep(0.02)
                    final = {s: q.fields for s, q in sub.snapshot().items()}
                finally:
                    if follower is not None:
                        follower.cancel()
                        await asyncio.gather(follower, return_exceptions=True)
                    sub.close()
                bridge.stop()
                bstats = await asyncio.wait_for(tasks[0], 15)
                deadline = loop.time() + 10
                while mirror.bridge != "stopped":
                    assert loop.time() < deadline, f"the mirror makes the bridge {mirror.bridge}"
                    await asyncio.sleep(0.02)
                mirror.stop()
                mstats = await asyncio.wait_for(tasks[1], 15)
                return bstats, mstats, seen, final
            finally:
                bridge.stop()
                mirror.stop()
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)

    bstats, mstats, seen, final = run(main(), 90)
    said = "\n".join(reports[-30:])
    assert isinstance(bstats, BridgeStats) and isinstance(mstats, MirrorStats)
    assert bstats.taken == len(names) + changes, (bstats, said)
    assert bstats.sent + bstats.conflated == bstats.taken and bstats.duplicates == 0, (bstats, said)
    assert mstats.malformed == 0 and mstats.older == 0, (mstats, said)
    assert mstats.applied == bstats.sent, (mstats, bstats, said)
    # The follower waited for the mirror's feed to appear: it sees every change since its creation.
    assert len(seen) == mstats.applied, (len(seen), mstats)
    if bstats.conflated == 0:
        assert len(seen) == len(names) + changes
    last: Dict[str, int] = {}
    for symbol, n, px in seen:
        assert px == n + 0.5, (symbol, n, px)
        assert n > last.get(symbol, -1), f"{symbol}: n={n} after n={last.get(symbol)}"
        last[symbol] = n
    assert last == {s: changes // len(names) for s in names}
    assert final == snapshot_of(src)
    assert any(x.startswith("b: bridging feed") for x in reports), said
    assert any(x.startswith("m: bridge stopped") for x in reports), said
