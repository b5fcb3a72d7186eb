"""Connecting to NATS: the options a user passes through (servers, credentials, TLS), the first
connection tried until a deadline, reconnection forever after, and nats-py's errors in our terms."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Union

from .._errors import InvalidInput, RemoteError

Report = Callable[[str], None]


def require() -> Any:
    """The nats-py module, or RemoteError saying how to install it."""
    try:
        import nats
    except ImportError:
        raise RemoteError(
            "the bridge and the mirror need nats-py, which is not installed: pip install 'pricefeed[nats]'"
        ) from None
    return nats


@dataclass(frozen=True)
class Options:
    """How to reach NATS. ``servers``: one URL or several ("nats://h1:4222,nats://h2:4222"),
    user and password may be in a URL. ``token``, ``user``/``password``, ``creds`` (a
    credentials file: a JWT and its NKey seed): the server's authentication. ``tls_ca``: a CA
    file to verify the server with (implies TLS); ``tls_cert``/``tls_key``: a client
    certificate. ``connect_timeout``: seconds to keep trying the first connection (None:
    forever); once connected, a lost connection is retried forever."""

    servers: Union[str, Sequence[str]] = "nats://127.0.0.1:4222"
    token: Optional[str] = field(default=None, repr=False)
    user: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    creds: Optional[str] = None
    tls_ca: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    name: Optional[str] = None
    connect_timeout: Optional[float] = 10.0

    def urls(self) -> List[str]:
        raw = [self.servers] if isinstance(self.servers, str) else list(self.servers)
        urls = [u.strip() for part in raw for u in part.split(",") if u.strip()]
        if not urls:
            raise InvalidInput("no NATS server given: expected a URL such as nats://127.0.0.1:4222")
        for u in urls:
            if "://" not in u and not u.replace(".", "").replace(":", "").isalnum():
                raise InvalidInput(f"NATS server must be a URL such as nats://host:4222: got {u!r}")
        return urls

    def check(self) -> None:
        """InvalidInput now, before any connection, for options that cannot work."""
        self.urls()
        for what, path in (("--creds", self.creds), ("--tls-ca", self.tls_ca), ("--tls-cert", self.tls_cert),
                           ("--tls-key", self.tls_key)):  # fmt: skip
            if path is not None and not os.path.isfile(path):
                raise InvalidInput(f"{what}: no such file: {path!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInput("--tls-cert and --tls-key go together: a client certificate needs its key")
        if self.password is not None and self.user is None:
            raise InvalidInput("a NATS password needs its user name (--user)")
        if self.connect_timeout is not None and not self.connect_timeout >= 0:
            raise InvalidInput(f"connect timeout must be 0 or more seconds: got {self.connect_timeout!r}")

    def kwargs(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"servers": self.urls()}
        if self.token is not None:
            out["token"] = self.token
        if self.user is not None:
            out["user"] = self.user
            out["password"] = self.password or ""
        if self.creds is not None:
            out["user_credentials"] = self.creds
        if self.tls_ca is not None or self.tls_cert is not None:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert is not None:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            out["tls"] = ctx
        if self.name is not None:
            out["name"] = self.name
        return out


def _refused(exc: BaseException) -> bool:
    """Whether a connection error is the server refusing us (retrying will not help)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("authorization", "authentication", "permission", "certificate", "ssl"))


async def connect(
    options: Options,
    report: Report,
    on_reconnect: Optional[Callable[[], Awaitable[None]]] = None,
    on_disconnect: Optional[Callable[[], Awaitable[None]]] = None,
) -> Any:
    """A connected nats-py client. The first connection is retried until ``connect_timeout``
    (RemoteError then, with the last reason); a refusal (credentials, TLS) is RemoteError at once."""
    nats = require()
    options.check()
    kwargs = options.kwargs()
    deadline = None if options.connect_timeout is None else time.monotonic() + options.connect_timeout
    where = ", ".join(kwargs["servers"])
    said = False
    nc: Any = None
    errors: List[BaseException] = []  # what went wrong in the current first-connection attempt
    refused = asyncio.Event()

    async def error_cb(exc: Exception) -> None:
        if nc is None:
            errors.append(exc)
            if _refused(exc):
                refused.set()
        elif _refused(exc):
            report(f"NATS refused us: {exc}")

    async def disconnected_cb() -> None:
        if nc is None or nc.is_closed or getattr(nc, "_pricefeed_closing", False):
            return  # our own close(), or a first attempt that failed
        report(f"lost the connection to NATS ({where}); reconnecting")
        if on_disconnect is not None:
            await on_disconnect()

    async def reconnected_cb() -> None:
        report(f"reconnected to NATS at {nc.connected_url.netloc if nc.connected_url else where}")
        if on_reconnect is not None:
            await on_reconnect()

    while True:
        errors.clear()
        refused.clear()
        # nats-py retries a first connection inside connect() for as long as its reconnect
        # limit allows (forever with no limit), and a failed TLS handshake can leave it
        # waiting: so the first connection is made with a limit of one retry per server, as a
        # task this loop abandons at a refusal or the deadline; the limit is lifted once
        # connected (the client reads it at each reconnection).
        attempt = asyncio.ensure_future(
            nats.connect(
                **kwargs, allow_reconnect=True, max_reconnect_attempts=1, reconnect_time_wait=0.5,
                connect_timeout=2, error_cb=error_cb, disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb, ping_interval=5, max_outstanding_pings=2,
            )
        )  # fmt: skip
        watch = asyncio.ensure_future(refused.wait())
        left = 30.0 if deadline is None else max(0.1, min(30.0, deadline - time.monotonic()))
        await asyncio.wait([attempt, watch], timeout=left, return_when=asyncio.FIRST_COMPLETED)
        watch.cancel()
        if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
            client = attempt.result()
            client.options["max_reconnect_attempts"] = -1
            nc = client
            return nc
        if attempt.done() and not attempt.cancelled():
            errors.append(attempt.exception())
        else:
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
        refusal = next((e for e in errors if _refused(e)), None)
        if refusal is not None:
            raise RemoteError(f"NATS at {where} refused the connection: {_text(refusal)}") from None
        causes = [e for e in errors if not isinstance(e, nats.errors.NoServersError)]
        cause = _text(causes[-1]) if causes else "no answer"
        if deadline is not None and time.monotonic() >= deadline:
            raise RemoteError(
                f"could not connect to NATS at {where} within {options.connect_timeout:g} s: {cause}"
            ) from None
        if not said:
            report(f"waiting for NATS at {where}: {cause}")
            said = True
        await asyncio.sleep(0.5)


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def close(nc: Any, timeout: float = 2.0) -> None:
    """Close a connection from connect(), quietly (no "lost the connection" report), within ``timeout``."""
    if nc is None:
        return
    nc._pricefeed_closing = True
    try:
        await asyncio.wait_for(nc.close(), timeout)
    except Exception:
        pass
