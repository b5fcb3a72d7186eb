"""The least privileges docs/distributed.md gives each side are enough, and the mirror's are
read-only: a server with one user for the bridge and one for the mirror, each allowed only the
subjects the documentation lists."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from conftest import Proc, unique_name, unlink_feed

from pricefeed import Publisher, Subscriber
from pricefeed._nats.server import LocalServer

PY = sys.executable
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals stop the bridge and the mirror here")
BUCKET = "perm_prices"


def users() -> Dict[str, Any]:
    """The permissions docs/distributed.md lists, for bucket BUCKET."""
    return {
        "authorization": {
            "users": [
                {"user": "bridge", "password": "bridge-pw", "permissions": {
                    "publish": [f"$KV.{BUCKET}.>", "$JS.API.>"], "subscribe": ["_INBOX.>"]}},
                {"user": "mirror", "password": "mirror-pw", "permissions": {
                    "publish": ["$JS.API.>", "$JS.FC.>"], "subscribe": ["_INBOX.>"]}},
            ]
        }
    }  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    s = LocalServer(store_dir=str(tmp_path / "store"), settings=users())
    try:
        s.start()
        yield s
    finally:
        s.close()


@pytest.fixture
def feeds(procs: List[Proc]) -> Iterator[Dict[str, str]]:
    src, dst = unique_name(), unique_name()
    try:
        yield {"src": src, "dst": dst}
    finally:
        for p in procs:
            p.kill()
        unlink_feed(src)
        unlink_feed(dst)


def test_the_documented_permissions_suffice_and_the_mirror_cannot_write(procs, feeds, server) -> None:
    url = server.url
    with Publisher.create(feeds["src"]) as pub:
        pub.publish_many({"AAPL": 187.25, "BRK.B": 412.5})
        bridge = Proc([PY, "-m", "pricefeed", "bridge", feeds["src"], "--nats", url, "--bucket", BUCKET,
                       "--user", "bridge"], env={"PRICEFEED_NATS_PASSWORD": "bridge-pw"})  # fmt: skip
        mirror = Proc([PY, "-m", "pricefeed", "mirror", "--nats", url, "--bucket", BUCKET, "--user", "mirror",
                       feeds["dst"]], env={"PRICEFEED_NATS_PASSWORD": "mirror-pw"})  # fmt: skip
        procs.extend([bridge, mirror])
        deadline = time.monotonic() + 30
        want = {"AAPL": 187.25, "BRK.B": 412.5}
        while True:
            assert bridge.p.poll() is None and mirror.p.poll() is None, f"{bridge.stderr}\n{mirror.stderr}"
            try:
                with Subscriber(feeds["dst"]) as sub:
                    if {s: q.price for s, q in sub.snapshot().items()} == want:
                        break
            except FileNotFoundError:
                pass
            assert time.monotonic() < deadline, f"nothing mirrored:\n{bridge.stderr}\n{mirror.stderr}"
            time.sleep(0.05)
        pub.publish("AAPL", 188.0)  # and a live change, through the mirror's consumer
        want["AAPL"] = 188.0
        while {s: q.price for s, q in Subscriber(feeds["dst"]).snapshot().items()} != want:
            assert time.monotonic() < deadline + 10, f"the live change did not arrive:\n{mirror.stderr}"
            time.sleep(0.05)
        for p in (bridge, mirror):
            os.kill(p.pid, signal.SIGTERM)
            code, _, err = p.finish(30)
            assert code == 143, err
            assert "refused" not in err and "ermission" not in err, err

    async def mirror_user_writes() -> str:
        import nats

        errors: List[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(url, user="mirror", password="mirror-pw", error_cb=on_error, allow_reconnect=False)
        try:
            await nc.publish(f"$KV.{BUCKET}.s.AAPL", b'{"forged": true}')
            await nc.flush()
            for _ in range(100):
                if errors:
                    break
                await asyncio.sleep(0.02)
        finally:
            await nc.close()
        return " ".join(errors)

    refused = asyncio.run(asyncio.wait_for(mirror_user_writes(), 20))
    assert "permissions violation" in refused.lower(), refused
