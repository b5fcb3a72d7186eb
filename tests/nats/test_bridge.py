"""A feed across NATS, end to end, with real processes: a counting publisher, `pricefeed bridge`,
a real nats-server (one, restarted, or a 3-node cluster losing a node), `pricefeed mirror`, and a
follower of the mirrored feed that records every event it sees.

What every test checks (feedprocs.check_mirrored): each symbol's changes arrive in order and
never twice, each record whole, and every symbol's final record equal at both ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
from conftest import Proc, unique_name, unlink_feed

from pricefeed import Subscriber

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import feedprocs  # noqa: E402

PY = sys.executable
FEEDPROCS = str(HERE / "feedprocs.py")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals stop the bridge and the mirror here")


def cli(*args: str) -> List[str]:
    return [PY, "-m", "pricefeed", *args]


@pytest.fixture
def pair(procs: List[Proc]) -> Dict[str, str]:
    """Two feed names (the bridge's source, the mirror's copy) and a bucket; all removed after."""
    src, dst = unique_name(), unique_name()
    try:
        yield {"src": src, "dst": dst, "bucket": "b" + src.replace("-", "_")}
    finally:
        for p in procs:
            p.kill()
        unlink_feed(src)
        unlink_feed(dst)


def final_fields(feed: str) -> Dict[str, dict]:
    with Subscriber(feed) as sub:
        return {s: q.fields for s, q in sub.snapshot().items()}


class Pipeline:
    """Publisher -> bridge -> NATS -> mirror -> follower, each a process of its own."""

    def __init__(self, procs: List[Proc], pair: Dict[str, str], tmp_path: Path, count: int, rounds: int,
                 pause_ms: float, bridge_urls: str, mirror_urls: str, bridge_args: Sequence[str] = (),
                 mirror_args: Sequence[str] = ()) -> None:  # fmt: skip
        self.procs, self.pair, self.count, self.rounds = procs, pair, count, rounds
        self.out = str(tmp_path / "rows.json")
        self.names = feedprocs.symbols(count)
        self.bridge_urls, self.bridge_args = bridge_urls, list(bridge_args)
        self.follower = self._start([PY, FEEDPROCS, "follow", pair["dst"], self.out])
        self.mirror = self._start(
            cli("mirror", "--nats", mirror_urls, "--bucket", pair["bucket"], *mirror_args, pair["dst"])
        )
        self.bridge = self.start_bridge()
        self.publisher = self._start([PY, FEEDPROCS, "count_publish", pair["src"], str(count), str(rounds),
                                      str(pause_ms)], stdin=subprocess.PIPE)  # fmt: skip
        assert self.publisher.json_line(30) == {"ready": True}
        # Publishing starts once the bridge follows the feed and the mirror's watch is on.
        wait_for(self.bridge, "bridging feed")
        wait_for(self.mirror, "mirroring bucket")
        assert self.follower.json_line(30) == {"ready": True}
        self.publisher.stdin.write("go\n")
        self.publisher.stdin.flush()

    def _start(self, args: List[str], stdin: Optional[int] = None) -> Proc:
        p = Proc(args, stdin=stdin)
        self.procs.append(p)
        return p

    def start_bridge(self) -> Proc:
        return self._start(cli("bridge", self.pair["src"], "--nats", self.bridge_urls, "--bucket",
                               self.pair["bucket"], "--wait", "30", *self.bridge_args))  # fmt: skip

    def said(self) -> str:
        """What the bridge and the mirror said: the last lines of each."""
        return f"bridge said:\n{_tail(self.bridge.stderr)}\nmirror said:\n{_tail(self.mirror.stderr)}"

    def finish(self, timeout: float = 90) -> Dict[str, object]:
        """Wait for every process to end by itself; check what the follower saw."""
        assert self.publisher.json_line(timeout) == {"done": self.rounds}
        results = {}
        deadline = time.monotonic() + timeout
        for name, p in (("bridge", self.bridge), ("mirror", self.mirror), ("follower", self.follower)):
            try:
                code, _, err = p.finish(max(1.0, deadline - time.monotonic()))
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}\n{self.said()}") from None
            assert code == 0, f"{name} exited {code}: {err[-3000:]}"
            results[name] = err
        with open(self.out) as f:
            rows = json.load(f)
        try:
            seen = feedprocs.check_mirrored(rows, self.names, self.rounds)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.said()}") from None
        assert final_fields(self.pair["src"]) == final_fields(self.pair["dst"])
        return {**results, **seen}


def wait_for(p: Proc, text: str, timeout: float = 30) -> None:
    """Wait until process ``p`` has said ``text`` on stderr (it fails if ``p`` exits first)."""
    deadline = time.monotonic() + timeout
    while text not in p.stderr:
        assert p.p.poll() is None, f"exited {p.p.returncode} before saying {text!r}: {p.stderr[-2000:]}"
        assert time.monotonic() < deadline, f"did not say {text!r} within {timeout} s: {p.stderr[-2000:]}"
        time.sleep(0.02)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def stats_of(stderr: str, command: str) -> Dict[str, int]:
    """The counts in the last line a bridge or mirror prints: 'pricefeed bridge: done: taken=...'."""
    line = [x for x in stderr.splitlines() if x.startswith(f"pricefeed {command}: ") and "=" in x][-1]
    return {k: int(v) for k, v in (part.split("=") for part in line.split(": ")[-1].split())}


def test_end_to_end_every_change_in_order_and_final_records_equal(procs, pair, tmp_path, nats_server) -> None:
    p = Pipeline(procs, pair, tmp_path, count=25, rounds=200, pause_ms=2, bridge_urls=nats_server.url,
                 mirror_urls=nats_server.url)  # fmt: skip
    out = p.finish()
    bridge = stats_of(out["bridge"], "bridge")
    total = 25 * 200
    # The bridge waited for the feed, so it took every change: each sent, conflated or skipped.
    assert bridge["taken"] == total, bridge
    assert bridge["sent"] + bridge["conflated"] + bridge["skipped"] == bridge["taken"], bridge
    assert bridge["retried"] == 0 and bridge["disconnects"] == 0, bridge
    mirror = stats_of(out["mirror"], "mirror")
    assert mirror["malformed"] == 0 and mirror["older"] == 0, mirror
    assert "ended for good" in out["mirror"]


def test_server_restarted_mid_stream_the_flow_resumes(procs, pair, tmp_path, nats_server) -> None:
    p = Pipeline(procs, pair, tmp_path, count=20, rounds=400, pause_ms=10, bridge_urls=nats_server.url,
                 mirror_urls=nats_server.url)  # fmt: skip
    time.sleep(1.5)
    nats_server.kill()  # as a crash: file storage keeps what was acknowledged
    time.sleep(1.0)
    nats_server.restart()
    out = p.finish(timeout=120)
    assert "reconnected to NATS" in out["bridge"], out["bridge"][-2000:]
    assert "watch created again" in out["mirror"], out["mirror"][-2000:]


def stream_leader(nats_connect, nodes, bucket: str) -> int:
    """Which node leads the bucket's stream (its index in ``nodes``), asked of a live node."""
    import asyncio

    async def ask() -> str:
        nc = await nats_connect([n.url for n in nodes if n.running])
        try:
            info = await nc.jetstream(timeout=5).stream_info(f"KV_{bucket}")
            return str(info.cluster.leader)
        finally:
            await nc.close()

    leader = asyncio.run(asyncio.wait_for(ask(), 20))
    return next(i for i, n in enumerate(nodes) if n.server_name == leader)


def test_cluster_keeps_the_flow_when_a_node_dies(procs, pair, tmp_path, nats_cluster, nats_connect) -> None:
    """An R3 bucket on three nodes; mid-stream the node that leads the bucket's stream is
    killed, and stays dead: a new leader is elected and the flow resumes by itself."""
    p = Pipeline(procs, pair, tmp_path, count=20, rounds=500, pause_ms=10,
                 bridge_urls=",".join(n.url for n in nats_cluster),
                 mirror_urls=",".join(n.url for n in nats_cluster[1:] + nats_cluster[:1]),
                 bridge_args=["--replicas", "3"])  # fmt: skip
    time.sleep(1.5)
    leader = stream_leader(nats_connect, nats_cluster, pair["bucket"])
    nats_cluster[leader].kill()
    out = p.finish(timeout=150)
    assert "a put failed" in out["bridge"] or "reconnected" in out["bridge"], p.said()


def test_bridge_killed_and_restarted_resends_nothing_the_bucket_has(procs, pair, tmp_path, nats_server) -> None:
    p = Pipeline(procs, pair, tmp_path, count=20, rounds=300, pause_ms=10, bridge_urls=nats_server.url,
                 mirror_urls=nats_server.url)  # fmt: skip
    time.sleep(1.5)
    p.bridge.kill()  # SIGKILL: no goodbye, the bridge key still says live
    time.sleep(0.5)
    p.bridge = p.start_bridge()
    out = p.finish(timeout=120)
    assert "resuming feed" in out["bridge"], out["bridge"][-2000:]
    assert "bridge restarted" in out["mirror"] or "stale" in out["mirror"], out["mirror"][-2000:]


def test_restarted_bridge_sends_only_what_the_bucket_lacks(procs, pair, tmp_path, nats_server) -> None:
    """A bridge stopped and started again over an unchanged feed puts nothing; after ten
    changes it puts those ten."""
    from pricefeed import Publisher

    with Publisher.create(pair["src"], fields=feedprocs.FIELDS) as pub:
        for s in feedprocs.symbols(50):
            pub.publish(s, n=1, bid=1.25, ask=1.5)

        def run_bridge() -> Dict[str, int]:
            b = Proc(cli("bridge", pair["src"], "--nats", nats_server.url, "--bucket", pair["bucket"]))
            procs.append(b)
            wait_for(b, "feed")  # bridging feed..., or resuming feed...
            time.sleep(1.0)
            os.kill(b.pid, signal.SIGTERM)
            code, _, err = b.finish(30)
            assert code == 143, err
            return stats_of(err, "bridge")

        first = run_bridge()
        assert first["sent"] == 50, first
        second = run_bridge()
        assert second["sent"] == 0 and second["taken"] == 0, second
        for s in feedprocs.symbols(10):
            pub.publish(s, n=2, bid=2.25, ask=2.5)
        third = run_bridge()
        assert third["sent"] == 10 and third["taken"] == 10, third
