"""`pricefeed metrics` as an operator runs it: printed once and parsed with prometheus_client's own
parser; served over HTTP, scraped with a real HTTP client while the feed changes, lives and dies
under it; stopped by SIGTERM and Ctrl-C; every bad input refused in one line with its exit code."""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple

import pytest
from conftest import Proc, cli, kill_hard, posix_only, wait_until, worker

from pricefeed import Publisher, Subscriber

HAS_CLIENT = importlib.util.find_spec("prometheus_client") is not None
needs_client = pytest.mark.skipif(
    not HAS_CLIENT, reason="prometheus_client is not installed (the metrics extra: pip install 'pricefeed[metrics]')"
)
BOOK = "bid:f64,ask:f64,bid_size:i64,ask_size:i64"
#: Printable ASCII without spaces, so a valid symbol, and everything the text format must escape.
ODD_SYMBOL = 'a"b\\c{d}=e,f#'

Samples = Dict[str, List[Tuple[Dict[str, str], float]]]


def run(*args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def parse(text: str, openmetrics: bool = False) -> Samples:
    """Every sample by its name, parsed by the library's own parser (OpenMetrics: the strict one)."""
    if openmetrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> Optional[float]:
    """The value of the one sample ``name`` whose labels include ``labels``; None if there is none."""
    found = [v for got, v in samples.get(name, []) if all(got.get(k) == w for k, w in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def labels_of(samples: Samples, name: str, **labels: str) -> Dict[str, str]:
    found = [got for got, _ in samples.get(name, []) if all(got.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


class Server:
    """`pricefeed metrics ... --serve 127.0.0.1:0` in a process of its own, and its address."""

    def __init__(self, procs: List[Proc], *args: object) -> None:
        self.proc = Proc(cli("metrics", *args, "--serve", "127.0.0.1:0"))
        procs.append(self.proc)
        wait_until(lambda: "serving http://" in self.proc.stderr or self.proc.p.poll() is not None, 30, "the server")
        found = re.search(r"serving (http://127\.0\.0\.1:\d+)/metrics\n", self.proc.stderr)
        assert found, self.proc.stderr
        self.base = found.group(1)

    def get(self, path: str = "/metrics", accept: Optional[str] = None) -> Tuple[int, str, str]:
        """(status, content type, body) of a GET; an HTTP error status is returned, not raised."""
        request = urllib.request.Request(self.base + path, headers={"Accept": accept} if accept else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()

    def scrape(self, openmetrics: bool = False) -> Samples:
        accept = "application/openmetrics-text; version=1.0.0; charset=utf-8" if openmetrics else None
        status, kind, body = self.get(accept=accept)
        assert status == 200, (status, body)
        assert kind.startswith("application/openmetrics-text" if openmetrics else "text/plain"), kind
        return parse(body, openmetrics)

    def stop(self, sig: int = signal.SIGTERM) -> Tuple[int, str]:
        os.kill(self.proc.pid, sig)
        code, _, err = self.proc.finish(timeout=15)
        assert "Traceback" not in err, err
        return code, err


def scrape_until(server: Server, predicate, what: str, timeout: float = 15.0) -> Samples:  # type: ignore[no-untyped-def]
    """Scrape until ``predicate(samples)`` holds: what another process does shows in its own time."""
    deadline = time.monotonic() + timeout
    while True:
        samples = server.scrape()
        if predicate(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {samples}")
        time.sleep(0.02)


# -- printed once ----------------------------------------------------------------------------------
@needs_client
def test_prints_the_feed_in_the_prometheus_text_format(feed: str) -> None:
    with Publisher.create(feed, fields=BOOK, capacity=64, ring_size=256) as pub:
        pub.publish("ES", bid=5201.25, ask=5201.5, bid_size=12, ask_size=9)
        pub.publish("NQ", bid=18000.0, ask=18000.25, bid_size=1, ask_size=2**53)
        pub.publish("ES", ask=5201.75)
        pub.publish(ODD_SYMBOL, bid=1.5, ask=2.5, bid_size=-3, ask_size=4)
        with Subscriber(feed) as sub:
            status, quotes = sub.status(), sub.snapshot()
        p = run("metrics", feed, "--symbol", "ES", "--symbol", ODD_SYMBOL, "--symbol", "ES", "--symbol", "NOSUCH")
        assert p.returncode == 0 and p.stderr == "", p.stderr
        m = parse(p.stdout)
        assert value(m, "pricefeed_up", feed=feed) == 1
        assert value(m, "pricefeed_changes_total", feed=feed) == 4 == status.head_seq
        assert value(m, "pricefeed_changes_created", feed=feed) == pytest.approx(status.created_ns / 1e9)
        assert value(m, "pricefeed_symbols", feed=feed) == 3
        assert value(m, "pricefeed_symbols_capacity", feed=feed) == 64
        assert value(m, "pricefeed_ring_size", feed=feed) == 256
        assert value(m, "pricefeed_ended", feed=feed) == 0
        assert value(m, "pricefeed_publisher_up", feed=feed) == 1
        assert value(m, "pricefeed_publisher_pid", feed=feed) == os.getpid()
        assert value(m, "pricefeed_publisher_starts_total", feed=feed) == 1
        assert value(m, "pricefeed_publisher_last_exit_clean", feed=feed) is None  # a publisher holds it
        assert status.last_change_ns is not None
        assert value(m, "pricefeed_last_change_timestamp_seconds", feed=feed) == pytest.approx(
            status.last_change_ns / 1e9
        )
        age = value(m, "pricefeed_last_change_age_seconds", feed=feed)
        assert age is not None and 0 <= age < 60
        info = labels_of(m, "pricefeed_feed_info", feed=feed)
        assert info["fields"] == BOOK and info["incarnation"] == str(status.incarnation)
        assert info["mode"] == "0600" and info["owner"] == status.owner
        build = labels_of(m, "pricefeed_build_info")
        assert build["version"] and build["layout"] and build["implementation"] in ("c", "python")
        # The symbols asked for, every field, exactly (the odd symbol's text read back as it is);
        # no others, and nothing for a symbol the feed lacks.
        for symbol in ("ES", ODD_SYMBOL):
            q = quotes[symbol]
            for name, field_value in q.fields.items():
                assert value(m, "pricefeed_symbol_value", feed=feed, symbol=symbol, field=name) == field_value
            assert value(m, "pricefeed_symbol_seq", feed=feed, symbol=symbol) == q.seq
            assert value(m, "pricefeed_symbol_last_change_timestamp_seconds", feed=feed, symbol=symbol) == (
                pytest.approx(q.time_ns / 1e9)
            )
        assert {labels["symbol"] for labels, _ in m["pricefeed_symbol_seq"]} == {"ES", ODD_SYMBOL}
        # Without --symbols no per-symbol series at all; with --all-symbols every one.
        assert "pricefeed_symbol_value" not in parse(run("metrics", feed).stdout)
        every = parse(run("metrics", feed, "--all-symbols").stdout)
        assert value(every, "pricefeed_symbol_value", feed=feed, symbol="NQ", field="ask_size") == 2**53
        assert len(every["pricefeed_symbol_value"]) == 3 * 4
    # The publisher closed cleanly, then a feed ended for good.
    m = parse(run("metrics", feed).stdout)
    assert value(m, "pricefeed_publisher_up", feed=feed) == 0
    assert value(m, "pricefeed_publisher_last_exit_clean", feed=feed) == 1
    assert value(m, "pricefeed_publisher_pid", feed=feed) == os.getpid()
    with Publisher.open(feed) as pub:
        pub.end()
    m = parse(run("metrics", feed).stdout)
    assert value(m, "pricefeed_ended", feed=feed) == 1 and value(m, "pricefeed_up", feed=feed) == 1
    assert value(m, "pricefeed_publisher_starts_total", feed=feed) == 2


@needs_client
def test_several_feeds_each_with_their_own_label(feed: str) -> None:
    other = feed + "b"
    try:
        with Publisher.create(feed) as one, Publisher.create(other) as two:
            one.publish("A", 1.0)
            two.publish_many({"A": 1.0, "B": 2.0, "C": 3.0})
            p = run("metrics", feed, other, feed)  # named twice: still one set of series
            assert p.returncode == 0, p.stderr
            m = parse(p.stdout)
            assert value(m, "pricefeed_changes_total", feed=feed) == 1
            assert value(m, "pricefeed_changes_total", feed=other) == 3
            assert len(m["pricefeed_up"]) == 2
            two.unlink()
            # One of them missing: the printed form fails as a whole, exit 3, nothing printed.
            p = run("metrics", feed, other)
            assert p.returncode == 3 and p.stdout == ""
            assert (
                p.stderr
                == f"pricefeed: no feed named {other!r} on this machine (pricefeed ls lists the feeds there are)\n"
            )
    finally:
        from conftest import unlink_feed

        unlink_feed(other)


# -- bad input -----------------------------------------------------------------------------------------
@needs_client
@pytest.mark.parametrize(
    "address, message",
    [
        ("9464", "is not HOST:PORT"),
        ("127.0.0.1", "is not HOST:PORT"),
        ("::1:9464", "write an IPv6 address in brackets"),
        ("[127.0.0.1]:9464", "brackets are for an IPv6 address"),
        ("127.0.0.1:65536", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:-1", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:http", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:", "the port must be a number from 0 to 65535"),
        ("a b:9464", "is not a host name or address"),
    ],
)
def test_a_bad_address_is_a_usage_error(feed: str, address: str, message: str) -> None:
    p = run("metrics", feed, "--serve", address)
    assert p.returncode == 2 and message in p.stderr and "--serve" in p.stderr, p.stderr


@needs_client
def test_bad_input_exits_with_one_line_and_its_code(feed: str) -> None:
    p = run("metrics", feed)
    assert p.returncode == 3 and p.stdout == ""
    assert p.stderr == f"pricefeed: no feed named {feed!r} on this machine (pricefeed ls lists the feeds there are)\n"
    p = run("metrics", "-bad")
    assert p.returncode == 2  # click takes it for an option
    p = run("metrics", "bad/name")
    assert p.returncode == 7 and p.stderr.startswith("pricefeed: ") and len(p.stderr.splitlines()) == 1
    p = run("metrics", feed, "--symbol", "A", "--symbol", "B C")
    assert (
        p.returncode == 7
        and p.stderr == "pricefeed: symbol must be 1 to 31 printable ASCII characters without spaces: got 'B C'\n"
    )
    p = run("metrics", feed, "--symbol", "")
    assert p.returncode == 7 and len(p.stderr.splitlines()) == 1
    p = run("metrics")
    assert p.returncode == 2 and "Missing argument" in p.stderr


@needs_client
def test_an_address_that_cannot_be_listened_on_is_one_line(feed: str) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            p = run("metrics", feed, "--serve", f"127.0.0.1:{port}")
        assert p.returncode == 1
        assert p.stderr == f"pricefeed: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        p = run("metrics", feed, "--serve", "no-such-host.invalid:0")
        assert p.returncode == 1 and p.stderr.startswith("pricefeed: cannot listen on no-such-host.invalid:0: ")
        assert len(p.stderr.splitlines()) == 1


def test_without_prometheus_client_it_says_how_to_install_it(feed: str) -> None:
    """Run as a machine without the extra would: the import fails, the command says what to do,
    in one line, exit 1; importing pricefeed and its CLI never needed it."""
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import pricefeed, pricefeed._cli.main as m\n"
        "assert 'prometheus_client' not in sys.modules or sys.modules['prometheus_client'] is None\n"
        "sys.exit(m.main(sys.argv[1:]))"
    )
    for args in ([feed], [feed, "--serve", "127.0.0.1:0"]):
        p = subprocess.run([sys.executable, "-c", code, "metrics", *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and p.stdout == "", p.stderr
        assert p.stderr == (
            "pricefeed: pricefeed metrics needs prometheus_client, which is not installed: "
            "pip install 'pricefeed[metrics]'\n"
        )
    p = subprocess.run(
        [sys.executable, "-c", "import sys, pricefeed, pricefeed._cli.main; print('prometheus_client' in sys.modules)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.stdout == "False\n", p.stderr


# -- served --------------------------------------------------------------------------------------------
@needs_client
@posix_only
def test_served_scrapes_follow_the_feed_and_sigterm_exits_143(feed: str, procs: List[Proc]) -> None:
    with Publisher.create(feed, fields=BOOK) as pub:
        pub.publish("ES", bid=5200.0, ask=5200.25, bid_size=1, ask_size=1)
        server = Server(procs, feed, "--symbol", "ES")
        before = 0.0
        for k in range(1, 6):
            pub.publish("ES", bid=5200.0 + k, bid_size=k)
            m = server.scrape(openmetrics=k % 2 == 0)
            head = value(m, "pricefeed_changes_total", feed=feed)
            assert head == 1 + k and head > before
            before = head
            assert value(m, "pricefeed_symbol_value", feed=feed, symbol="ES", field="bid") == 5200.0 + k
            assert value(m, "pricefeed_symbol_value", feed=feed, symbol="ES", field="bid_size") == k
            assert value(m, "pricefeed_symbol_value", feed=feed, symbol="ES", field="ask") == 5200.25
            assert value(m, "pricefeed_publisher_up", feed=feed) == 1

        # Scrapes while a thread publishes as fast as it can, several at once: every one a
        # whole, parseable answer, and the counter never goes back.
        stop = threading.Event()

        def flood() -> None:
            k = 0
            while not stop.is_set():
                k += 1
                pub.publish("NQ", bid=float(k), ask=float(k) + 0.25, bid_size=k, ask_size=k)

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        heads: List[List[float]] = [[] for _ in range(4)]

        def scraper(i: int) -> None:
            for _ in range(5):
                heads[i].append(value(server.scrape(openmetrics=i % 2 == 1), "pricefeed_changes_total", feed=feed) or 0)

        scrapers = [threading.Thread(target=scraper, args=(i,)) for i in range(4)]
        for t in scrapers:
            t.start()
        for t in scrapers:
            t.join(timeout=30)
        stop.set()
        flooder.join(timeout=10)
        for seen in heads:
            assert len(seen) == 5 and seen == sorted(seen) and seen[0] >= before, heads
        assert max(max(seen) for seen in heads) > before

        # A client that connects and says nothing holds up no one.
        with socket.create_connection(("127.0.0.1", int(server.base.rsplit(":", 1)[1])), timeout=10) as idle:
            idle.sendall(b"GET /metrics HTTP/1.1\r\n")
            assert value(server.scrape(), "pricefeed_up", feed=feed) == 1

        # Prometheus's own way of asking for some families only.
        status, _, body = server.get("/metrics?name[]=pricefeed_up&name[]=pricefeed_changes_total")
        assert status == 200 and set(parse(body)) == {"pricefeed_up", "pricefeed_changes_total"}, body

        # The index points at /metrics; other paths are 404, never metrics.
        status, kind, body = server.get("/")
        assert status == 200 and 'href="/metrics"' in body and kind.startswith("text/html")
        status, _, body = server.get("/nothing-here")
        assert status == 404 and "/metrics" in body
        code, err = server.stop(signal.SIGTERM)
    assert code == 143
    assert re.search(r"pricefeed metrics: terminated after \d+ scrapes\n$", err), err


@needs_client
@posix_only
def test_served_feed_that_comes_goes_and_changes_hands(feed: str, procs: List[Proc]) -> None:
    """The server starts before the feed exists, and outlives each of its lives: up 0 (never an
    HTTP 500) while it cannot be read, a publisher killed, a takeover, the end, removal,
    re-creation (counters start anew), a re-created feed it must not trust; Ctrl-C exits 130."""
    server = Server(procs, feed)
    m = server.scrape()
    assert value(m, "pricefeed_up", feed=feed) == 0 and "pricefeed_changes_total" not in m
    assert f"feed {feed!r}: no feed named {feed!r} on this machine (pricefeed_up 0 until it can be read)" in (
        server.proc.stderr
    )

    holder = Proc(worker("hold_publisher", feed), stdin=subprocess.PIPE)
    procs.append(holder)
    assert holder.readline() == "ready"
    m = server.scrape()
    assert value(m, "pricefeed_up", feed=feed) == 1
    assert value(m, "pricefeed_publisher_up", feed=feed) == 1
    assert value(m, "pricefeed_publisher_pid", feed=feed) == holder.pid
    first = labels_of(m, "pricefeed_feed_info", feed=feed)["incarnation"]
    wait_until(lambda: f"feed {feed!r} is readable" in server.proc.stderr, 10, "the news on stderr")

    kill_hard(holder.pid)
    holder.finish(timeout=10)
    m = server.scrape()
    assert value(m, "pricefeed_publisher_up", feed=feed) == 0
    assert value(m, "pricefeed_publisher_last_exit_clean", feed=feed) == 0
    assert value(m, "pricefeed_publisher_pid", feed=feed) == holder.pid

    with Publisher.open_or_create(feed) as pub:  # takes over from the dead one
        pub.publish("A", 1.0)
        pub.publish("A", 2.0)
        m = server.scrape()
        assert value(m, "pricefeed_publisher_starts_total", feed=feed) == 2
        assert value(m, "pricefeed_changes_total", feed=feed) == 2
        assert value(m, "pricefeed_publisher_pid", feed=feed) == os.getpid()
        pub.end()
        m = server.scrape()
        assert value(m, "pricefeed_ended", feed=feed) == 1 and value(m, "pricefeed_up", feed=feed) == 1
        pub.unlink()
    m = server.scrape()
    assert value(m, "pricefeed_up", feed=feed) == 0 and "pricefeed_ended" not in m

    with Publisher.create(feed) as pub:  # the same name, a new feed: its counter starts at 0
        m = server.scrape()
        assert value(m, "pricefeed_up", feed=feed) == 1
        assert value(m, "pricefeed_changes_total", feed=feed) == 0
        assert labels_of(m, "pricefeed_feed_info", feed=feed)["incarnation"] != first
        pub.publish("B", 1.0)
        assert value(server.scrape(), "pricefeed_changes_total", feed=feed) == 1
        pub.unlink()

    # Re-created so that every user may write it: not followed without --allow-world-writable.
    with Publisher.create(feed, mode=0o666, allow_world_writable=True) as pub:
        pub.publish("C", 1.0)
        m = server.scrape()
        assert value(m, "pricefeed_up", feed=feed) == 0
        wait_until(lambda: "may be written by every user" in server.proc.stderr, 10, "the reason on stderr")
        pub.unlink()
    code, err = server.stop(signal.SIGINT)
    assert code == 130 and "pricefeed metrics: interrupted after" in err, err
    # One line per change of state, not one per scrape.
    assert err.count("no feed named") == 2, err


# -- subscribers -------------------------------------------------------------------------------------
SUBSCRIBER = """
import sys
from pricefeed import Subscriber
feed, label, take = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Subscriber(feed, label=label) as sub:
    print("ready", flush=True)
    updates = sub.updates(timeout=60)
    for n, q in enumerate(updates, 1):
        print(q.seq, flush=True)
        if n == take:
            break
    sys.stdin.readline()  # (after `take` changes: holds the last one, working, until stdin closes)
"""


def _registry_or_skip(feed: str) -> None:
    with Subscriber(feed, register=False) as sub:
        readers = sub.readers()
    if not readers.available:
        pytest.skip(f"the subscriber registry is not available yet: {readers.reason}")


@needs_client
@posix_only
def test_subscribers_with_their_state_lag_and_counts(feed: str, procs: List[Proc]) -> None:
    label = 'desk "7" \\ {fx}=é'  # printable UTF-8, and every character the format escapes
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        fast = Proc(cli("subscribe", feed, "--label", label))
        slow = Proc([sys.executable, "-c", SUBSCRIBER, feed, "slow", "1"], stdin=subprocess.PIPE)
        procs.extend([fast, slow])
        assert slow.readline() == "ready"
        _registry_or_skip(feed)
        server = Server(procs, feed)

        def waiting(m: Samples) -> bool:
            return all(value(m, "pricefeed_subscriber_state", feed=feed, label=name, state="waiting") == 1
                       for name in (label, "slow"))  # fmt: skip

        scrape_until(server, waiting, "both subscribers to wait for a change")
        for k in range(2, 7):
            pub.publish("A", float(k))
        assert slow.readline() == "2"  # took change 2 and holds it: 4 more wait for it
        assert [fast.readline().split()[0] for _ in range(5)] == ["2", "3", "4", "5", "6"]

        def settled(m: Samples) -> bool:
            return (
                value(m, "pricefeed_subscriber_delivered_total", feed=feed, label=label) == 5
                and value(m, "pricefeed_subscriber_state", feed=feed, label=label, state="waiting") == 1
                and value(m, "pricefeed_subscriber_state", feed=feed, label="slow", state="working") == 1
            )

        m = scrape_until(server, settled, "both subscribers to settle")
        assert value(m, "pricefeed_subscribers", feed=feed) == 2
        assert value(m, "pricefeed_registry_available", feed=feed) == 1
        for proc, name, seq, lag in ((fast, label, 6, 0), (slow, "slow", 2, 4)):
            info = labels_of(m, "pricefeed_subscriber_info", feed=feed, label=name)
            assert info["pid"] == str(proc.pid) and info["conflate"] == "false" and info["async"] == "false"
            assert info["uid"] == str(os.getuid())
            assert value(m, "pricefeed_subscriber_seq", feed=feed, label=name) == seq
            assert value(m, "pricefeed_subscriber_lag_changes", feed=feed, label=name) == lag
            assert value(m, "pricefeed_subscriber_lapped", feed=feed, label=name) == 0
            states = {s: value(m, "pricefeed_subscriber_state", feed=feed, label=name, state=s) for s in
                      ("idle", "waiting", "working")}  # fmt: skip
            assert sorted(states.values()) == [0, 0, 1]
            assert value(m, "pricefeed_subscriber_gaps_total", feed=feed, label=name) == 0
            assert value(m, "pricefeed_subscriber_missed_total", feed=feed, label=name) == 0
        lag_seconds = value(m, "pricefeed_subscriber_lag_seconds", feed=feed, label="slow")
        assert lag_seconds is not None and 0 < lag_seconds < 60
        assert value(m, "pricefeed_subscriber_delivered_total", feed=feed, label="slow") == 1
        # The label survives the strict OpenMetrics parser as well.
        om = server.scrape(openmetrics=True)
        assert value(om, "pricefeed_subscriber_delivered_total", feed=feed, label=label) == 5

        pub.end()
        for proc in (fast, slow):
            assert proc.finish(timeout=30)[0] == 0
        m = scrape_until(server, lambda m: value(m, "pricefeed_subscribers", feed=feed) == 0, "the subscribers to go")
        assert "pricefeed_subscriber_info" not in m
        assert server.stop()[0] == 143


@needs_client
@posix_only
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_in_the_middle_of_scrapes_stops_it_cleanly(feed: str, procs: List[Proc], sig: int, code: int) -> None:
    with Publisher.create(feed) as pub:
        pub.publish_many({f"S{k}": float(k) for k in range(200)})
        server = Server(procs, feed, "--all-symbols")
        done = threading.Event()
        answered: List[int] = []

        def hammer() -> None:
            while not done.is_set():
                try:
                    answered.append(server.get()[0])
                except (OSError, http.client.HTTPException):
                    return  # the server has gone

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(answered) >= 20, 30, "scrapes under way")
        sent = time.monotonic()
        got, err = server.stop(sig)
        assert time.monotonic() - sent < 5
        done.set()
        for t in threads:
            t.join(timeout=10)
    assert got == code and set(answered) == {200}, (got, err)
    assert "Exception" not in err, err
