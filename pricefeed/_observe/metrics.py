"""Prometheus metrics of feeds: a collector that reads each feed afresh at every scrape, and the
HTTP server that ``pricefeed metrics --serve`` runs around it.

prometheus_client (the ``metrics`` extra) is imported only by the functions that need it, so
``import pricefeed`` and every other command work without it; without it, ``load()`` says how to
install it. The text format is the library's own (``generate_latest``, ``make_wsgi_app``): it
escapes label values, negotiates OpenMetrics and gzip, and is what Prometheus reads.

Why it reads at scrape time and nothing in between: a feed's state is already in shared memory,
so a background poller would add a thread and a staleness of its own for nothing. A scrape
costs a few reads of the header, the registry and (if asked for) the slots.

Decisions an operator sees (and the docs state):

- ``pricefeed_up 0`` (never an HTTP 500) when a feed cannot be read at a scrape: missing,
  removed, refused (another owner, world-writable), damaged. The other series of that feed are
  then absent, and stderr says why, once per change of state. Every feed has its own ``up``.
- A feed removed and created anew is opened anew at the next scrape (its counters restart,
  which rate() handles; ``pricefeed_changes_created`` moves); without ``--owner``, only a new
  feed of the owner of the first one seen is followed, as a subscriber does.
- Per-symbol series are opt-in (``--symbol``, ``--all-symbols``): a feed can hold a million
  symbols of sixteen fields, and every (symbol, field) is a series.
- Label values that come from shared memory (symbols, subscriber labels) are untrusted: they
  are bounded and have anything unprintable escaped before the library escapes them again, so
  odd bytes cannot break the output or make a scrape fail on encoding.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from .. import __version__
from .._errors import FeedNotFound, PricefeedError
from .._protocol import implementation
from .._protocol import layout as L
from .._registry.types import STATE_NAMES, Readers
from .._roles.subscriber import FeedStatus, Subscriber
from .._values import Fields, Quote, format_fields

#: What the command says when prometheus_client is missing.
INSTALL_HINT = "pip install 'pricefeed[metrics]'"

#: Longest label value taken from shared memory; longer ones are cut (and marked so).
LABEL_MAX = 64

#: How long ``close()`` waits for a scrape in progress before closing the feeds anyway.
CLOSE_WAIT_SECONDS = 5.0

Report = Callable[[str], None]


def load() -> None:
    """Import prometheus_client, or raise PricefeedError (exit 1, as ``export --to-parquet``
    does without pyarrow) naming the extra that installs it.

    Not RemoteError: that is the network side of the bridge and the mirror failing, and a
    missing package is no failure of anything remote."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise PricefeedError(
            f"pricefeed metrics needs prometheus_client, which is not installed: {INSTALL_HINT}"
        ) from None


# -- what to read --------------------------------------------------------------------------------
class SymbolChoice(NamedTuple):
    """Which symbols get per-symbol series: none (the default), the ones named, or every one."""

    every: bool = False
    names: Tuple[str, ...] = ()


NO_SYMBOLS = SymbolChoice()


class Reading(NamedTuple):
    """One feed as one scrape read it: everything is read before a sample is added, so a feed
    that fails halfway adds none (only its ``up 0``)."""

    status: FeedStatus
    readers: Readers
    quotes: List[Quote]
    now_ns: int


def label_text(value: Optional[str]) -> str:
    """A label value from shared memory, safe to expose: printable characters kept, anything
    else (control characters, lone surrogates from undecodable bytes) written as an escape, and
    at most LABEL_MAX characters (then "..." marks the cut)."""
    if value is None:
        return ""
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in value[: LABEL_MAX + 1])
    return text[:LABEL_MAX] + "..." if len(text) > LABEL_MAX else text


class _Source:
    """One feed: a Subscriber kept open between scrapes, opened again when the feed's name leads
    to another segment (removed and re-created) or nowhere (removed)."""

    def __init__(self, feed: str, owner: Optional[str], allow_world_writable: bool, symbols: SymbolChoice) -> None:
        self.feed = feed
        self.owner: Optional[str] = owner
        self.allow_world_writable = allow_world_writable
        self.symbols = symbols
        self.sub: Optional[Subscriber] = None
        #: None while readable; else the reason last reported (so each change is reported once).
        self.problem: Optional[str] = "not read yet"

    def open(self) -> Subscriber:
        if self.sub is not None and not _still_linked(self.sub):
            self.close()
        if self.sub is None:
            # register=False: the exporter only looks; it is no subscriber the registry should list.
            self.sub = Subscriber(
                self.feed, owner=self.owner, allow_world_writable=self.allow_world_writable, register=False
            )
            if self.owner is None:
                # Pin the owner, as a Subscriber does for its own re-attaching: a feed re-created
                # under this name by another user is not followed as if it were the same.
                self.owner = self.sub.status().owner
        return self.sub

    def read(self) -> Reading:
        sub = self.open()
        status = sub.status()
        try:
            readers = sub.readers()
        except PricefeedError as exc:
            # A registry that cannot be read hides the subscribers, not the feed.
            readers = Readers(False, str(exc), [], 0, 0, 0)
        quotes: List[Quote] = []
        if self.symbols.every:
            quotes = list(sub.snapshot().values())
        else:
            for name in self.symbols.names:
                q = sub.get(name)
                if q is not None:
                    quotes.append(q)
        return Reading(status, readers, quotes, time.time_ns())

    def close(self) -> None:
        if self.sub is not None:
            self.sub.close()
            self.sub = None


def _still_linked(sub: Subscriber) -> bool:
    """Whether the feed's name still leads to the segment ``sub`` has open."""
    return sub.still_linked()


# -- the collector -------------------------------------------------------------------------------
class FeedCollector:
    """A prometheus_client custom collector (``collect()``) over one or more feeds.

    ``strict``: an error reading a feed propagates (the one-shot command: its exit code says
    what went wrong); otherwise it is ``pricefeed_up 0`` and one line to ``report`` when the
    feed's state changes (the server: a scrape never fails). Thread-safe: scrapes are served
    one at a time, since a Subscriber is for one thread at a time."""

    def __init__(
        self,
        feeds: Iterable[str],
        owner: Optional[str] = None,
        allow_world_writable: bool = False,
        symbols: SymbolChoice = NO_SYMBOLS,
        strict: bool = True,
        report: Optional[Report] = None,
    ) -> None:
        load()
        names = list(dict.fromkeys(feeds))  # a feed named twice would give duplicate series
        self._sources = [_Source(f, owner, allow_world_writable, symbols) for f in names]
        self._strict = strict
        self._report = report or (lambda line: None)
        self._lock = threading.Lock()
        self._closed = False
        self.scrapes = 0

    def open(self) -> None:
        """Open every feed now: in strict mode the first error propagates; otherwise each feed's
        state is reported, and a feed that cannot be opened yet is tried again at each scrape."""
        with self._lock:
            for source in self._sources:
                self._attempt(source, source.open)

    def _attempt(self, source: _Source, action: Callable[[], Any]) -> Any:
        try:
            got = action()
        except Exception as exc:
            if self._strict:
                source.close()
                raise
            self._down(source, exc)
            return None
        if source.problem is not None:
            source.problem = None
            self._report(f"feed {source.feed!r} is readable")
        return got

    def _down(self, source: _Source, exc: Exception) -> None:
        """A feed that could not be read at this scrape: close it (it is opened afresh next
        time), and report why if that is news. An error that is not pricefeed's (a bug) is
        named by its type: the server must outlive it, and a traceback reaches no user."""
        source.close()
        why = str(exc) if isinstance(exc, PricefeedError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, FeedNotFound):
            why = f"no feed named {source.feed!r} on this machine"
        if why != source.problem:
            source.problem = why
            self._report(f"feed {source.feed!r}: {why} (pricefeed_up 0 until it can be read)")

    def collect(self) -> Iterator[Any]:
        out = _Families()
        with self._lock:
            if self._closed:
                return
            self.scrapes += 1
            for source in self._sources:
                reading: Optional[Reading] = self._attempt(source, source.read)
                out.f["up"].add_metric([source.feed], 1.0 if reading is not None else 0.0)
                if reading is not None:
                    out.add(source.feed, reading)
        out.f["build"].add_metric([], {"version": __version__, "layout": str(L.LAYOUT_VERSION),
                                  "implementation": implementation().name})  # fmt: skip
        for family in out.families():
            if family.samples:
                yield family

    def describe(self) -> List[Any]:
        """Every family, empty: the registry learns the names (so that ``?name[]=`` picks
        families out) without reading any feed, which registering would otherwise do."""
        return _Families().families()

    def close(self) -> None:
        """Close every feed once no scrape is reading it; later scrapes give nothing. A scrape
        stuck for longer than CLOSE_WAIT_SECONDS is not waited for: its process is exiting."""
        got = self._lock.acquire(timeout=CLOSE_WAIT_SECONDS)
        try:
            self._closed = True
            if got:
                for source in self._sources:
                    source.close()
        finally:
            if got:
                self._lock.release()


FEED = ("feed",)
SUBSCRIBER = ("feed", "slot", "pid", "label")
SYMBOL = ("feed", "symbol")

#: Every metric family: (key, type, name, help, labels). A counter's name gets ``_total`` (and
#: its ``_created``) and an info's ``_info`` from the library; docs/observability.md lists them.
FAMILIES: Tuple[Tuple[str, str, str, str, Tuple[str, ...]], ...] = (
    ("build", "info", "pricefeed_build", "The exporter's pricefeed version, layout and protocol implementation.", ()),
    ("up", "gauge", "pricefeed_up", "1 if the feed could be read at this scrape, else 0.", FEED),
    ("info", "info", "pricefeed_feed", "The feed's incarnation (new at each creation), fields, owner and mode.", FEED),
    ("changes", "counter", "pricefeed_changes", "Changes published to the feed: its head sequence number.", FEED),
    ("last_change", "gauge", "pricefeed_last_change_timestamp_seconds", "Publish time of the newest change.", FEED),
    ("age", "gauge", "pricefeed_last_change_age_seconds", "Seconds since the newest change, at this scrape.", FEED),
    ("symbols", "gauge", "pricefeed_symbols", "Symbols the feed holds.", FEED),
    ("capacity", "gauge", "pricefeed_symbols_capacity", "Most symbols the feed can hold.", FEED),
    ("ring", "gauge", "pricefeed_ring_size", "Changes the ring keeps for subscribers that fall behind.", FEED),
    ("ended", "gauge", "pricefeed_ended", "1 if the feed was ended for good, else 0.", FEED),
    ("publisher_up", "gauge", "pricefeed_publisher_up", "1 if a live publisher holds the feed, else 0.", FEED),
    ("publisher_pid", "gauge", "pricefeed_publisher_pid", "Pid of the live publisher, else of the last one.", FEED),
    ("publisher_starts", "counter", "pricefeed_publisher_starts",
     "Times a publisher has taken the feed, the first one included.", FEED),
    ("publisher_clean", "gauge", "pricefeed_publisher_last_exit_clean",
     "With no publisher holding the feed: 1 if the last one closed it cleanly, 0 if it died.", FEED),
    ("registry", "gauge", "pricefeed_registry_available", "1 if the subscriber registry could be read, else 0.", FEED),
    ("registry_capacity", "gauge", "pricefeed_registry_capacity", "Subscribers the registry has room for.", FEED),
    ("dead", "gauge", "pricefeed_registry_dead_entries", "Registry entries left by subscribers that are gone.", FEED),
    ("invalid", "gauge", "pricefeed_registry_invalid_entries", "Registry entries that failed validation.", FEED),
    ("subscribers", "gauge", "pricefeed_subscribers", "Live registered subscribers.", FEED),
    ("sub_info", "info", "pricefeed_subscriber", "A registered subscriber's uid and how it follows.", SUBSCRIBER),
    ("sub_state", "gauge", "pricefeed_subscriber_state",
     "1 for the subscriber's state (idle, waiting, working), 0 for the others.", (*SUBSCRIBER, "state")),
    ("sub_state_seconds", "gauge", "pricefeed_subscriber_state_seconds",
     "Seconds the subscriber has been in its state, at this scrape.", SUBSCRIBER),
    ("sub_seq", "gauge", "pricefeed_subscriber_seq", "The last change the subscriber has dealt with.", SUBSCRIBER),
    ("sub_lag", "gauge", "pricefeed_subscriber_lag_changes",
     "Changes published that the subscriber has not dealt with yet (absent while idle).", SUBSCRIBER),
    ("sub_lag_seconds", "gauge", "pricefeed_subscriber_lag_seconds",
     "How long the oldest change the subscriber has not dealt with has waited.", SUBSCRIBER),
    ("sub_lapped", "gauge", "pricefeed_subscriber_lapped",
     "1 if that change has left the ring: lag_seconds is a lower bound and a gap is coming.", SUBSCRIBER),
    ("sub_delivered", "counter", "pricefeed_subscriber_delivered", "Changes given to the subscriber.", SUBSCRIBER),
    ("sub_gaps", "counter", "pricefeed_subscriber_gaps", "Gaps reported to the subscriber.", SUBSCRIBER),
    ("sub_missed", "counter", "pricefeed_subscriber_missed", "Changes the subscriber's gaps skipped.", SUBSCRIBER),
    ("sym_value", "gauge", "pricefeed_symbol_value",
     "A field's current value (an i64 field is exact up to 2**53).", (*SYMBOL, "field")),
    ("sym_seq", "gauge", "pricefeed_symbol_seq", "The change that last set the symbol.", SYMBOL),
    ("sym_time", "gauge", "pricefeed_symbol_last_change_timestamp_seconds",
     "Publish time of the symbol's last change.", SYMBOL),
)  # fmt: skip


class _Families:
    """Every metric family of one scrape, empty; ``add`` puts one feed's samples in them."""

    def __init__(self) -> None:
        from prometheus_client.core import (  # type: ignore[import-not-found, unused-ignore]
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        kinds = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily, "info": InfoMetricFamily}
        self.f: Dict[str, Any] = {
            key: kinds[kind](name, doc, labels=list(labels)) for key, kind, name, doc, labels in FAMILIES
        }

    def families(self) -> List[Any]:
        return list(self.f.values())

    def add(self, feed: str, r: Reading) -> None:
        f, s, at = self.f, r.status, [feed]
        created = s.created_ns / 1e9
        mode = "" if s.mode is None else f"{s.mode:04o}"
        info = {
            "incarnation": str(s.incarnation),
            "fields": format_fields(s.fields),
            "owner": s.owner or "",
            "mode": mode,
        }
        f["info"].add_metric(at, info)
        f["changes"].add_metric(at, float(s.head_seq), created=created)
        if s.last_change_ns is not None:
            f["last_change"].add_metric(at, s.last_change_ns / 1e9)
            f["age"].add_metric(at, max(0.0, (r.now_ns - s.last_change_ns) / 1e9))
        f["symbols"].add_metric(at, float(s.symbols))
        f["capacity"].add_metric(at, float(s.capacity))
        f["ring"].add_metric(at, float(s.ring_size))
        f["ended"].add_metric(at, float(s.ended))
        f["publisher_up"].add_metric(at, float(s.publisher_alive))
        if s.publisher_pid:
            f["publisher_pid"].add_metric(at, float(s.publisher_pid))
        f["publisher_starts"].add_metric(at, float(s.publisher_epoch), created=created)
        if s.publisher_clean is not None:
            f["publisher_clean"].add_metric(at, float(s.publisher_clean))
        self._add_readers(feed, r.readers, r.now_ns)
        self._add_symbols(feed, r.quotes, s.fields)

    def _add_readers(self, feed: str, readers: Readers, now_ns: int) -> None:
        f, at = self.f, [feed]
        f["registry"].add_metric(at, float(readers.available))
        if not readers.available:
            return  # how many subscribers there are is unknown: no series rather than a false 0
        f["registry_capacity"].add_metric(at, float(readers.capacity))
        f["dead"].add_metric(at, float(readers.dead))
        f["invalid"].add_metric(at, float(readers.invalid))
        f["subscribers"].add_metric(at, float(len(readers.entries)))
        seen = set()
        for e in readers.entries:
            if e.slot in seen:
                continue  # one set of series per slot, whatever a damaged registry says
            seen.add(e.slot)
            labels = [feed, str(e.slot), str(e.pid), label_text(e.label)]
            modes = {"uid": str(e.uid), "conflate": _flag(e.conflate), "filtered": _flag(e.filtered),
                     "async": _flag(e.is_async)}  # fmt: skip
            f["sub_info"].add_metric(labels, modes)
            for state in STATE_NAMES:
                f["sub_state"].add_metric([*labels, state], float(e.state == state))
            f["sub_state_seconds"].add_metric(labels, max(0.0, (now_ns - e.state_ns) / 1e9))
            f["sub_seq"].add_metric(labels, float(e.seq))
            if e.lag is not None:
                f["sub_lag"].add_metric(labels, float(e.lag))
                f["sub_lapped"].add_metric(labels, float(e.lag_lower_bound))
            if e.lag_seconds is not None:
                f["sub_lag_seconds"].add_metric(labels, e.lag_seconds)
            registered = e.registered_ns / 1e9
            f["sub_delivered"].add_metric(labels, float(e.delivered), created=registered)
            f["sub_gaps"].add_metric(labels, float(e.gaps), created=registered)
            f["sub_missed"].add_metric(labels, float(e.missed), created=registered)

    def _add_symbols(self, feed: str, quotes: List[Quote], fields: Fields) -> None:
        f = self.f
        for q in quotes:
            symbol = label_text(q.symbol)
            for (name, _), value in zip(fields, q[1 : 1 + len(fields)]):
                f["sym_value"].add_metric([feed, symbol, name], float(value))
            f["sym_seq"].add_metric([feed, symbol], float(q.seq))
            f["sym_time"].add_metric([feed, symbol], q.time_ns / 1e9)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def render(collector: FeedCollector) -> bytes:
    """One scrape in the Prometheus text format (what the one-shot command prints)."""
    from prometheus_client import CollectorRegistry, generate_latest  # type: ignore[import-not-found, unused-ignore]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    data: bytes = generate_latest(registry)
    return data


# -- serving ---------------------------------------------------------------------------------------
def parse_address(text: str) -> Tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (every IPv4 interface) -> (host, port); port 0
    asks the system for a free one. ValueError says what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r} is not HOST:PORT (such as 127.0.0.1:9464, [::1]:9464 or :9464)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"{text!r}: brackets are for an IPv6 address, such as [::1]:9464")
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, such as [::1]:9464")
    elif not host:
        host = "0.0.0.0"
    if any(ch.isspace() or ch in "[]/" for ch in host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535 (0: any free port)")
    return host, int(port_text)


def url_of(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"


def serve(collector: FeedCollector, host: str, port: int, report: Report) -> str:
    """Serve the collector's metrics at /metrics on (host, port) until SIGINT or SIGTERM; returns
    "interrupted" or "terminated". The listening address is reported once bound (with port 0,
    the port the system chose). Cannot bind (in use, no such address, not allowed):
    PricefeedError, one line, exit 1. The feeds are opened once the address is bound, then
    read afresh at every scrape (``FeedCollector``)."""
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app  # type: ignore[import-not-found, unused-ignore]
    from prometheus_client.exposition import ThreadingWSGIServer  # type: ignore[import-not-found, unused-ignore]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    metrics_app = make_wsgi_app(registry)
    index = (
        b"<html><head><title>pricefeed metrics</title></head><body><h1>pricefeed metrics</h1>"
        b'<p><a href="/metrics">/metrics</a></p></body></html>\n'
    )

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            try:
                body: List[bytes] = metrics_app(environ, start_response)
            except Exception as exc:  # a bug, since the collector turns every feed's error into up 0
                report(f"a scrape failed: {type(exc).__name__}: {exc}")  # a line, not wsgiref's traceback
                start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
                return [b"the scrape failed; the exporter's standard error says why\n"]
            return body
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [index]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: the metrics are at /metrics\n"]

    class Handler(WSGIRequestHandler):
        #: A client that connects and says nothing holds its thread this long at most.
        timeout = 30

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would drown the lines that matter

    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except (OSError, UnicodeError) as exc:
        raise PricefeedError(f"cannot listen on {where}: {_reason(exc)}") from None

    class Server(ThreadingWSGIServer):  # type: ignore[misc, unused-ignore]
        address_family = family

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that timed out, went away or sent garbage: its own business, and no
            # traceback on the exporter's stderr (socketserver's default prints one).
            exc = sys.exc_info()[1]
            if exc is not None and not isinstance(exc, OSError):
                report(f"a request from {client_address[0]} failed: {type(exc).__name__}: {exc}")

    try:
        httpd = make_server(host, port, app, Server, handler_class=Handler)
    except (OSError, UnicodeError, OverflowError) as exc:
        raise PricefeedError(f"cannot listen on {where}: {_reason(exc)}") from None

    try:
        return _serve_until_signalled(httpd, collector, report)
    finally:
        httpd.server_close()
        collector.close()


def _serve_until_signalled(httpd: Any, collector: FeedCollector, report: Report) -> str:
    """Serve in a thread of its own while the main thread waits for SIGINT or SIGTERM.

    The handlers only note the signal; the wait ends through ``signal.set_wakeup_fd``, whose
    byte the interpreter writes at the signal itself. A handler that raised instead (as
    KeyboardInterrupt does) could land in a finaliser (a ``__del__``) that swallows it, and the
    process would then ignore every later signal (seen once: a server that outlived SIGTERM)."""
    import select
    import socket

    noted: List[str] = []

    def note(signum: Any, frame: Any) -> None:
        noted.append("terminated" if signum == signal.SIGTERM else "interrupted")

    wake_r, wake_w = socket.socketpair()
    before: Dict[Any, Any] = {}
    old_fd: Optional[int] = None
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True)
    try:
        for sock in (wake_r, wake_w):
            sock.setblocking(False)
        old_fd = signal.set_wakeup_fd(wake_w.fileno())  # ValueError outside the main thread: a bug
        for sig in (signal.SIGINT, signal.SIGTERM):
            before[sig] = signal.signal(sig, note)
        collector.open()
        thread.start()
        bound = httpd.server_address
        report(f"serving {url_of(str(bound[0]), int(bound[1]))}")
        while not noted:
            select.select([wake_r], [], [], 5.0)
            try:
                wake_r.recv(4096)
            except OSError:  # nothing to read (a timeout): look again
                pass
            if not thread.is_alive():
                raise PricefeedError("the HTTP server stopped")
        return noted[0]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        if old_fd is not None:
            signal.set_wakeup_fd(old_fd)
        if thread.is_alive():
            httpd.shutdown()  # the serving loop ends within its poll interval; scrapes in flight finish
        wake_r.close()
        wake_w.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
