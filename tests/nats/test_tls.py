"""TLS passed through to NATS: a server with a certificate of a private CA, which a bridge and a
mirror reach with --tls-ca, and which a client that does not trust that CA cannot reach."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from conftest import Proc, unique_name, unlink_feed

from pricefeed import Publisher, Subscriber
from pricefeed._nats.server import LocalServer

PY = sys.executable
pytestmark = [
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make the test certificates"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals stop the bridge and the mirror here"),
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Dict[str, str]]:
    """A nats-server that speaks TLS only, with a certificate for 127.0.0.1 from a private CA."""
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=pricefeed test CA", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.cnf", cwd=d)  # fmt: skip
    server = LocalServer(store_dir=str(tmp_path / "store"),
                         extra_args=["--tls", "--tlscert", str(d / "server.pem"), "--tlskey", str(d / "server.key")])  # fmt: skip
    try:
        server.start()
        yield {"url": f"tls://127.0.0.1:{server.port}", "ca": str(d / "ca.pem")}
    finally:
        server.close()


@pytest.fixture
def feeds(procs: List[Proc]) -> Iterator[Dict[str, str]]:
    src, dst = unique_name(), unique_name()
    try:
        yield {"src": src, "dst": dst, "bucket": "b" + src.replace("-", "_")}
    finally:
        for p in procs:
            p.kill()
        unlink_feed(src)
        unlink_feed(dst)


def test_bridge_and_mirror_over_tls_with_a_private_ca(procs, feeds, tls_server) -> None:
    with Publisher.create(feeds["src"], fields="bid:f64,ask:f64") as pub:
        pub.publish_many({"AAPL": {"bid": 187.25, "ask": 187.5}, "BRK.B": {"bid": 412.0, "ask": 412.5}})
        common = ["--nats", tls_server["url"], "--bucket", feeds["bucket"], "--tls-ca", tls_server["ca"]]
        bridge = Proc([PY, "-m", "pricefeed", "bridge", feeds["src"], *common])
        mirror = Proc([PY, "-m", "pricefeed", "mirror", *common, feeds["dst"]])
        procs.extend([bridge, mirror])
        deadline = time.monotonic() + 30
        while True:
            try:
                with Subscriber(feeds["dst"]) as sub:
                    if {s: q.fields for s, q in sub.snapshot().items()} == {
                        "AAPL": {"bid": 187.25, "ask": 187.5}, "BRK.B": {"bid": 412.0, "ask": 412.5}
                    }:  # fmt: skip
                        break
            except FileNotFoundError:
                pass
            assert time.monotonic() < deadline, f"nothing mirrored over TLS:\n{bridge.stderr}\n{mirror.stderr}"
            assert bridge.p.poll() is None and mirror.p.poll() is None, f"{bridge.stderr}\n{mirror.stderr}"
            time.sleep(0.05)
        for p in (bridge, mirror):
            os.kill(p.pid, signal.SIGTERM)
            code, _, err = p.finish(30)
            assert code == 143, err


def test_a_server_whose_ca_is_not_trusted_is_refused_at_once(feeds, tls_server) -> None:
    with Publisher.create(feeds["src"]) as pub:
        pub.publish("AAPL", 1.0)
        started = time.monotonic()
        done = subprocess.run(
            [PY, "-m", "pricefeed", "bridge", feeds["src"], "--nats", tls_server["url"], "--connect-timeout", "30"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 16, done.stderr
    assert time.monotonic() - started < 20, "a refusal must not be retried until the connect timeout"
    assert "refused" in done.stderr and "certificate" in done.stderr.lower(), done.stderr
    assert "Traceback" not in done.stderr
