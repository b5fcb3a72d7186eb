"""The bridge and the mirror on two hosts for real: two Linux network namespaces joined by a veth
pair, so that the mirror reaches NATS through a network interface, as it would from another
machine, and not through the loopback of the machine the server runs on.

Host A (namespace ``pf-a-<random>``) runs nats-server bound to A's veth address, the counting
publisher and ``pricefeed bridge``; host B (``pf-b-<random>``) runs ``pricefeed mirror`` and the
follower of the mirrored feed, both connecting to A's address across the veth. The addresses are a
random private /30 (10.250.X.1 and 10.250.X.2) that exists only inside those two namespaces.
Shared memory stays shared: ``ip netns exec`` gives a process a mount namespace of its own but
remounts only /sys there, so /dev/shm is the same tmpfs on both "hosts" (checked before each run;
``nsenter --net`` is used instead if it is not).

What is checked is test_bridge.py's property (feedprocs.check_mirrored): every symbol's changes in
order and never twice, records whole, final values equal at both ends; and that the mirror's
connection really crossed the veth: B's ``ss`` shows the mirror's pid connected from B's address to
A's, the root namespace has no such connection, and B's veth received the bytes. A second run puts
1 ms of netem delay on each end of the veth (about 2 ms of round trip, a LAN between two hosts);
it is skipped, saying so, where the kernel has no sch_netem.

Skipped, saying why, unless run as root on Linux with ``ip`` (iproute2) and the right to create
network namespaces (a container without CAP_SYS_ADMIN has not). Everything created is removed
afterwards, even when the test fails: processes killed by their pid, then the namespaces and links
by the names generated here, then the feeds; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from conftest import Proc, unique_name, unlink_feed

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_bridge import Pipeline, stats_of  # noqa: E402

from pricefeed._nats.server import MAX_FILE_STORE, MAX_MEMORY_STORE, find_server  # noqa: E402

PY = sys.executable
#: How long any one command that sets up or tears down the network may take.
CMD_TIMEOUT_S = 15.0
#: How long nats-server in A may take to write its ports file, and a client in B to reach it.
SERVER_READY_S = 20.0
#: Which host each of the Pipeline's programs runs on (the name test_bridge.Pipeline starts it with).
HOST_OF = {"count_publish": "a", "bridge": "a", "follow": "b", "mirror": "b"}

#: A NATS client run inside a namespace: it connects to the URL (retrying until ready, bounded),
#: asks JetStream for the account's info, then times COUNT PING/PONG round trips. One JSON line.
PROBE = r"""
import asyncio, json, statistics, sys, time
import nats

async def main(url, count, timeout):
    async def quiet(exc):
        pass

    deadline = time.monotonic() + timeout
    while True:
        try:
            nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, error_cb=quiet)
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                sys.exit(f"no connection to {url} within {timeout} s: {exc!r}")
            await asyncio.sleep(0.1)
    try:
        while True:
            try:
                await nc.jetstream(timeout=2).account_info()
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    sys.exit(f"JetStream at {url} did not answer within {timeout} s: {exc!r}")
                await asyncio.sleep(0.1)
        rtts = []
        for _ in range(count):
            t0 = time.perf_counter()
            await nc.flush(timeout=5)
            rtts.append((time.perf_counter() - t0) * 1e6)
        rtts.sort()
        info = getattr(nc, "_server_info", None) or {}
        print(json.dumps({"client_ip": info.get("client_ip"), "min_us": rtts[0],
                          "median_us": statistics.median(rtts), "p99_us": rtts[int(len(rtts) * 0.99) - 1]}))
    finally:
        await nc.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


def run(args: List[str], timeout: float = CMD_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command to its end (at most ``timeout`` s); with ``check``, fail quoting its stderr."""
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def cannot_run() -> Optional[str]:
    """Why namespaces cannot be made here (before trying to make one), or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces and veth pairs are Linux's"
    if os.geteuid() != 0:
        return "not root: creating network namespaces and veth links needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    return None


class TwoHosts:
    """Two network namespaces joined by a veth pair, and what runs in them; `close` removes all."""

    def __init__(self, tmp_path: Path) -> None:
        tag = secrets.token_hex(4)
        self.tmp = tmp_path
        self.ns = {"a": f"pf-a-{tag}", "b": f"pf-b-{tag}"}
        self.veth = {"a": f"pfa{tag}", "b": f"pfb{tag}"}  # at most 15 characters, as the kernel requires
        subnet = secrets.randbelow(256)
        self.addr = {"a": f"10.250.{subnet}.1", "b": f"10.250.{subnet}.2"}
        self.made_ns: List[str] = []
        self.made_link = False
        self.runner: Dict[str, List[str]] = {h: ["ip", "netns", "exec", n] for h, n in self.ns.items()}
        self.runner_kind = "ip netns exec"
        self.procs: List[Proc] = []
        self.server: Optional[subprocess.Popen] = None
        self.server_log = tmp_path / "nats-server.log"
        self.feeds: List[str] = []
        self.markers: List[str] = []
        self.delay_ms = 0.0

    # -- making -----------------------------------------------------------------------------

    def create(self) -> None:
        for host in ("a", "b"):
            made = run(["ip", "netns", "add", self.ns[host]], check=False)
            if made.returncode != 0:
                pytest.skip(f"cannot create a network namespace (ip netns add): {made.stderr.strip()}")
            self.made_ns.append(self.ns[host])
        made = run(["ip", "link", "add", self.veth["a"], "type", "veth", "peer", "name", self.veth["b"]], check=False)
        if made.returncode != 0:
            pytest.skip(f"cannot create a veth pair (ip link add ... type veth): {made.stderr.strip()}")
        self.made_link = True
        for host in ("a", "b"):
            ns, dev = self.ns[host], self.veth[host]
            run(["ip", "link", "set", dev, "netns", ns])
            run(["ip", "-n", ns, "addr", "add", f"{self.addr[host]}/30", "dev", dev])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        self._choose_runner()

    def _shm_shared(self) -> bool:
        """Whether a file a process in B writes into /dev/shm is the one the root namespace sees."""
        marker = f"pf-two-hosts-{secrets.token_hex(6)}"
        self.markers.append(marker)
        code = f"open('/dev/shm/{marker}', 'w').write('from b')"
        wrote = run([*self.runner["b"], PY, "-c", code], check=False)
        path = Path("/dev/shm") / marker
        try:
            return wrote.returncode == 0 and path.read_text() == "from b"
        except OSError:
            return False
        finally:
            path.unlink(missing_ok=True)

    def _choose_runner(self) -> None:
        if self._shm_shared():
            return
        self.runner = {h: ["nsenter", f"--net=/run/netns/{n}"] for h, n in self.ns.items()}
        self.runner_kind = "nsenter --net"
        assert self._shm_shared(), "/dev/shm is not shared with a network namespace, even through nsenter --net"

    def add_delay(self, delay_ms: float) -> None:
        """netem delay on both ends of the veth; skips, saying so, where the kernel has no sch_netem."""
        if shutil.which("tc") is None:
            pytest.skip("tc (iproute2) is missing: no netem delay on the veth")
        for host in ("a", "b"):
            ns, dev = self.ns[host], self.veth[host]
            done = run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay",
                        f"{delay_ms:g}ms"], check=False)  # fmt: skip
            if done.returncode != 0:
                if "qdisc kind is unknown" in done.stderr or "No such file" in done.stderr:
                    pytest.skip(f"the kernel has no sch_netem (tc: {done.stderr.strip()}): no delay on the veth")
                raise AssertionError(f"tc qdisc add netem in {ns} failed: {done.stderr.strip()}")
        self.delay_ms = delay_ms

    def start_server(self) -> str:
        """nats-server with JetStream in A, bound to A's veth address; returns its URL."""
        ports_dir = self.tmp / "ports"
        ports_dir.mkdir()
        config = self.tmp / "nats-server.conf"
        config.write_text(json.dumps({
            "host": self.addr["a"], "port": -1,
            "jetstream": {"store_dir": str(self.tmp / "nats-store"), "max_memory_store": MAX_MEMORY_STORE,
                          "max_file_store": MAX_FILE_STORE},
        }))  # fmt: skip
        with open(self.server_log, "ab") as log:
            # ip netns exec (and nsenter without --fork) exec the command: the pid is nats-server's.
            self.server = subprocess.Popen(
                [*self.runner["a"], find_server(), "-c", str(config), "--ports_file_dir", str(ports_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        ports_file = ports_dir / f"nats-server_{self.server.pid}.ports"
        deadline = time.monotonic() + SERVER_READY_S
        while True:
            assert self.server.poll() is None, f"nats-server exited {self.server.returncode}:\n{self.log_tail()}"
            try:
                urls = json.loads(ports_file.read_text()).get("nats") or []
            except (OSError, ValueError):
                urls = []
            if urls:
                break
            assert time.monotonic() < deadline, f"no ports file within {SERVER_READY_S} s:\n{self.log_tail()}"
            time.sleep(0.02)
        port = int(urls[0].rsplit(":", 1)[1])
        return f"nats://{self.addr['a']}:{port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.server_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- looking ----------------------------------------------------------------------------

    def probe(self, host: str, url: str, count: int = 200) -> Dict[str, Any]:
        """Round trips to the server from a NATS client on ``host`` (it waits for JetStream first)."""
        done = run([*self.runner[host], PY, "-c", PROBE, url, str(count), str(SERVER_READY_S)],
                   timeout=SERVER_READY_S + 30, check=False)  # fmt: skip
        assert done.returncode == 0, f"probe from {host} failed: {done.stderr.strip()}\n{self.log_tail()}"
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def connections(self, host: Optional[str]) -> List[Dict[str, str]]:
        """The established TCP connections ``ss`` shows on ``host`` (None: the root namespace):
        local, peer, users (process and pid) and the kernel's rtt estimate (ms), for each."""
        prefix = [] if host is None else ["ip", "netns", "exec", self.ns[host]]
        text = run([*prefix, "ss", "-tinpH", "state", "established"]).stdout
        out = []
        for block in re.split(r"\n(?=\S)", text.strip()):
            head = block.split()
            if len(head) < 4:
                continue
            rtt = re.search(r"\brtt:([\d.]+)/", block)
            users = re.search(r"users:\(\(.*?\)\)", block)
            out.append({"local": head[2], "peer": head[3], "users": users.group(0) if users else "",
                        "rtt_ms": rtt.group(1) if rtt else ""})  # fmt: skip
        return out

    def veth_rx_bytes(self, host: str) -> int:
        shown = json.loads(run(["ip", "-n", self.ns[host], "-j", "-s", "link", "show", "dev", self.veth[host]]).stdout)
        return int(shown[0]["stats64"]["rx"]["bytes"])

    def leftovers(self) -> List[str]:
        """What of ours `ip netns list` and `ip link` still show."""
        listed = run(["ip", "netns", "list"], check=False).stdout + run(["ip", "-o", "link"], check=False).stdout
        return [name for name in (*self.ns.values(), *self.veth.values()) if re.search(rf"\b{name}\b", listed)]

    # -- removing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Kill our processes by pid, stop the server by pid, delete our namespaces and links by
        name, remove the feeds; every step is tried even if one before it failed."""
        errors: List[str] = []

        def attempt(what: str, step: Any) -> None:
            try:
                step()
            except Exception as exc:
                errors.append(f"{what}: {exc!r}")

        for p in self.procs:
            attempt(f"kill pid {p.pid}", p.kill)
            if p.p.stdin is not None:
                attempt("close stdin", p.p.stdin.close)
        if self.server is not None:
            attempt("stop nats-server", self._stop_server)
        for ns in self.made_ns:
            attempt(f"ip netns del {ns}", lambda ns=ns: run(["ip", "netns", "del", ns]))
        if self.made_link:
            for dev in self.veth.values():  # still in the root namespace only if moving it failed
                if run(["ip", "link", "show", "dev", dev], check=False).returncode == 0:
                    attempt(f"ip link del {dev}", lambda dev=dev: run(["ip", "link", "del", dev]))
        for feed in self.feeds:
            attempt(f"unlink {feed}", lambda feed=feed: unlink_feed(feed))
        for marker in self.markers:
            attempt(f"remove {marker}", lambda marker=marker: (Path("/dev/shm") / marker).unlink(missing_ok=True))
        left = self.leftovers()
        if left:
            errors.append(f"still there after the cleanup: {left}")
        if errors:
            raise AssertionError("cleanup: " + "; ".join(errors))

    def _stop_server(self) -> None:
        assert self.server is not None
        if self.server.poll() is None:
            os.kill(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.server.pid, signal.SIGKILL)
        self.server.wait(timeout=5)


@pytest.fixture
def hosts(tmp_path: Path) -> Any:
    """Two "hosts" (network namespaces and a veth between them); all removed after the test."""
    why = cannot_run()
    if why is not None:
        pytest.skip(why)
    h = TwoHosts(tmp_path)
    try:
        h.create()
        yield h
    finally:
        h.close()


class TwoHostPipeline(Pipeline):
    """test_bridge's Pipeline with each program on its host: the publisher and the bridge in A,
    the mirror and the follower in B."""

    def __init__(self, hosts: TwoHosts, *args: Any, **kwargs: Any) -> None:
        self.hosts = hosts
        super().__init__(*args, **kwargs)

    def _start(self, args: List[str], stdin: Optional[int] = None) -> Proc:
        role = args[3] if args[1:3] == ["-m", "pricefeed"] else args[2]
        assert role in HOST_OF, f"which host runs {args}? (test_bridge.Pipeline started something new)"
        return super()._start([*self.hosts.runner[HOST_OF[role]], *args], stdin)


@pytest.mark.parametrize("delay_ms", [0.0, 1.0], ids=["veth", "veth-netem-1ms"])
def test_bridge_and_mirror_on_two_hosts(hosts: TwoHosts, tmp_path: Path, delay_ms: float) -> None:
    if delay_ms:
        hosts.add_delay(delay_ms)
    url = hosts.start_server()
    # The probes wait until JetStream answers, and time round trips over the veth and, for
    # comparison, over A's own loopback (A's address is local in A).
    over_veth, in_a = hosts.probe("b", url), hosts.probe("a", url)
    assert over_veth["client_ip"] in (hosts.addr["b"], None), over_veth
    if delay_ms:
        assert over_veth["min_us"] >= 2 * delay_ms * 1000 * 0.9, f"netem delay not in effect: {over_veth}"

    src, dst = unique_name(), unique_name()
    hosts.feeds += [src, dst]
    pair = {"src": src, "dst": dst, "bucket": "b" + src.replace("-", "_")}
    rx_before = hosts.veth_rx_bytes("b")
    count, rounds = 25, 200
    started = time.monotonic()
    p = TwoHostPipeline(hosts, hosts.procs, pair, tmp_path, count=count, rounds=rounds, pause_ms=4, bridge_urls=url,
                        mirror_urls=url)  # fmt: skip

    # The mirror (said "mirroring bucket": connected, watching) holds a connection from B's
    # address to A's, across the veth; the root namespace sees no connection to A at all.
    server_end = url.split("//", 1)[1]
    mine = [c for c in hosts.connections("b") if c["peer"] == server_end and f"pid={p.mirror.pid}," in c["users"]]
    assert len(mine) == 1, f"no connection of the mirror (pid {p.mirror.pid}) to {server_end} in B: {mine}"
    assert mine[0]["local"].startswith(hosts.addr["b"] + ":"), mine
    assert not [c for c in hosts.connections(None) if c["peer"] == server_end], (
        "a connection to A in the root namespace"
    )
    bridge_conn = [
        c for c in hosts.connections("a") if c["peer"] == server_end and f"pid={p.bridge.pid}," in c["users"]
    ]
    assert len(bridge_conn) == 1, f"no connection of the bridge (pid {p.bridge.pid}) to {server_end} in A"

    out = p.finish(timeout=120)
    took = time.monotonic() - started
    bridge, mirror = stats_of(out["bridge"], "bridge"), stats_of(out["mirror"], "mirror")
    assert bridge["taken"] == count * rounds, bridge
    assert bridge["sent"] + bridge["conflated"] + bridge["skipped"] == bridge["taken"], bridge
    assert mirror["malformed"] == 0 and mirror["older"] == 0, mirror
    assert "ended for good" in out["mirror"]
    # Every record the bridge sent reached B through its veth: at least the record's bytes each.
    rx = hosts.veth_rx_bytes("b") - rx_before
    assert rx >= bridge["sent"] * 24, f"B's veth received {rx} bytes for {bridge['sent']} records sent"

    print(
        f"\ntwo hosts ({hosts.runner_kind}, netem {delay_ms} ms each way): {count * rounds} changes in {took:.2f} s;"
        f" B's client address as the server saw it {over_veth['client_ip']};"
        f" NATS round trip B->A over the veth min {over_veth['min_us']:.0f} us median {over_veth['median_us']:.0f} us"
        f" p99 {over_veth['p99_us']:.0f} us; in A over loopback median {in_a['median_us']:.0f} us;"
        f" kernel srtt of the mirror's connection {mine[0]['rtt_ms']} ms; B's veth received {rx} bytes;"
        f" the follower saw {out['records']} records, {out['gaps']} gaps; bridge {bridge}; mirror {mirror}"
    )
