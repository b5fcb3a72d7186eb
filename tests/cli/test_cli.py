"""The pricefeed command, run as real processes (and through click's runner for parsing)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
from conftest import Proc, blocked_in_futex, cli, posix_only, unique_name, unlink_feed, wait_until

from pricefeed import Publisher, Subscriber
from pricefeed._cli.main import main
from pricefeed._protocol import layout as L
from pricefeed._segment import list_feeds, segment_path

MODE_RULE = (
    "mode must be octal permissions from 0600 to 0777 that let the owner read and write, such as 0600, 0640 or 0644"
)


def run(*args: object, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), input=stdin, capture_output=True, text=True, timeout=timeout)


def no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr


def test_python_m_and_help() -> None:
    p = run("--help")
    assert p.returncode == 0 and "subscribe" in p.stdout and "publish" in p.stdout
    from pricefeed import ACCELERATED

    version = run("--version").stdout.strip()
    assert version.startswith(f"pricefeed 0.1.0 (layout {L.LAYOUT_VERSION}, C accelerator ")
    assert version.endswith("on)" if ACCELERATED else "off)")


def test_publish_pairs_creates_the_feed_then_get_snapshot_status(feed: str) -> None:
    p = run("publish", feed, "AAPL=187.5", "MSFT=415", "EUR/USD=1.0851")
    assert p.returncode == 0, p.stderr
    assert run("get", feed, "AAPL").stdout == "187.5\n"
    got = json.loads(run("get", feed, "MSFT", "--json").stdout)
    assert got == {"symbol": "MSFT", "price": 415.0, "seq": 2, "time_ns": got["time_ns"], "changed": ["price"]}
    assert list(got) == ["symbol", "price", "seq", "time_ns", "changed"]
    snap = [json.loads(line) for line in run("snapshot", feed, "--json").stdout.splitlines()]
    assert [(s["symbol"], s["price"], s["seq"]) for s in snap] == [
        ("AAPL", 187.5, 1),
        ("MSFT", 415.0, 2),
        ("EUR/USD", 1.0851, 3),
    ]
    text = run("snapshot", feed).stdout.splitlines()
    assert text[0].split() == ["1", "AAPL", "187.5"]
    st = json.loads(run("status", feed, "--json").stdout)
    assert (st["head_seq"], st["symbols"], st["state"], st["publisher_alive"]) == (3, 3, "publisher gone", False)
    assert st["capacity"] == L.DEFAULT_CAPACITY and st["last_change_age_s"] >= 0
    human = run("status", feed).stdout
    assert "head seq     3" in human and "(gone)" in human


def test_publish_batch_is_all_or_nothing(feed: str) -> None:
    run("publish", feed, "A=1")
    p = run("publish", feed, "A=2", "B=nan")
    assert p.returncode == 7
    assert "price for symbol 'B' must be a decimal number such as 187.25" in p.stderr
    assert p.stderr.endswith(": got 'nan'\n")
    no_traceback(p)
    with Subscriber(feed) as sub:
        assert sub.head == 1 and sub["A"].price == 1.0 and sub.get("B") is None


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["publish", "{feed}", "AAPL"], 7, "expected SYMBOL=PRICE, such as AAPL=187.5: got 'AAPL'"),
        (["publish", "{feed}", "AAPL=abc"], 7, "price for symbol 'AAPL' must be a decimal number such as 187.25"),
        (["publish", "{feed}", "AAPL=inf"], 7, "no spaces, underscores, inf, nan or hex): got 'inf'"),
        (["publish", "{feed}", "=5"], 7, "symbol must be 1 to 31 printable ASCII characters"),
        (
            ["publish", "{feed}", "A=1", "--ring", "1000"],
            7,
            "ring size must be a power of 2 from 2 to 16777216: got '1000'",
        ),
        (["create", "{feed}", "--mode", "abc"], 7, f"{MODE_RULE}: got 'abc'"),
        (["create", "{feed}", "--mode", "999"], 7, f"{MODE_RULE}: got '999'"),
        (["create", "{feed}", "--mode", "0200"], 7, f"{MODE_RULE}: got '0200'"),
        (["publish", "{feed}", "A=1", "--mode", "1777"], 7, f"{MODE_RULE}: got '1777'"),
        (["create", "{feed}", "--capacity", "0"], 7, "capacity must be a whole number from 1 to 1048576: got '0'"),
        (["create", "{feed}", "--capacity", "ten"], 7, "capacity must be a whole number from 1 to 1048576: got 'ten'"),
        (["create", "bad/name"], 7, "feed name must be 1 to 27 characters"),
        (["get", "{feed}", "A"], 3, "no feed named '{feed}' on this machine (pricefeed ls lists the feeds there are)"),
        (["snapshot", "{feed}"], 3, "no feed named '{feed}' on this machine (pricefeed ls lists the feeds there are)"),
        (["status", "{feed}"], 3, "no feed named '{feed}' on this machine (pricefeed ls lists the feeds there are)"),
        (
            ["subscribe", "{feed}"],
            3,
            "no feed named '{feed}' on this machine (--wait waits for it to appear; pricefeed ls lists the feeds there are)",
        ),
        (["rm", "{feed}"], 3, "no feed named '{feed}' on this machine: nothing to remove\n"),
        (["rm"], 2, "name at least one FEED, or use --stale"),
        (["subscribe", "{feed}", "--count", "0"], 2, "--count"),
        (["bogus"], 2, "No such command"),
    ],
)
def test_bad_input_exit_codes_and_messages(feed: str, args: List[str], code: int, message: str) -> None:
    p = run(*[a.format(feed=feed) for a in args])
    assert p.returncode == code, (p.returncode, p.stderr)
    assert message.format(feed=feed) in p.stderr
    assert len(p.stderr.splitlines()) == 1 or code == 2, p.stderr
    no_traceback(p)
    with pytest.raises(FileNotFoundError):
        Subscriber(feed)  # nothing was created


def test_unknown_symbol_and_foreign_and_versioned_segments(feed: str) -> None:
    run("publish", feed, "A=1")
    p = run("get", feed, "B")
    assert (p.returncode, p.stderr.strip()) == (4, f"pricefeed: feed '{feed}' has no symbol 'B'")
    with open(segment_path(feed), "r+b") as f:
        f.seek(L.OFF_VERSION)
        f.write((L.LAYOUT_VERSION + 1).to_bytes(4, "little"))
    other = f"layout version {L.LAYOUT_VERSION + 1}; this pricefeed reads version {L.LAYOUT_VERSION}"
    for args in (["get", feed, "A"], ["publish", feed, "A=2"], ["publish", feed, "-"], ["subscribe", feed]):
        p = run(*args)
        assert p.returncode == 9 and other in p.stderr, p.stderr
        no_traceback(p)
    with open(segment_path(feed), "r+b") as f:
        f.write(b"garbage!")
    p = run("snapshot", feed)
    assert p.returncode == 9 and "not a pricefeed segment" in p.stderr


@posix_only
def test_create_and_exists(feed: str) -> None:
    assert run("create", feed, "--capacity", "8", "--ring", "64", "--mode", "0640").returncode == 0
    assert os.stat(segment_path(feed)).st_mode & 0o777 == 0o640
    p = run("create", feed)
    assert p.returncode == 5 and "already exists" in p.stderr
    st = json.loads(run("status", feed, "--json").stdout)
    assert (st["capacity"], st["ring_size"], st["head_seq"]) == (8, 64, 0)


def test_full_feed_exit_code(feed: str) -> None:
    run("create", feed, "--capacity", "1")
    p = run("publish", feed, "A=1", "B=2")
    assert p.returncode == 8 and "is full" in p.stderr


def test_stream_into_two_json_subscribers(feed: str, procs: List[Proc]) -> None:
    """A real `publish FEED -` process piped into real `subscribe --json` processes."""
    run("create", feed, "--ring", "4096")
    subs = [Proc(cli("subscribe", feed, "--json", "--timeout", "60")) for _ in range(2)]
    procs.extend(subs)
    wait_until(lambda: all(blocked_in_futex(s.pid) for s in subs), 30, "subscribers to block")
    lines = []
    expected = []
    for i in range(500):
        sym, price = f"S{i % 7}", float(i // 3)
        lines.append(f"{sym} {price}")
    current: dict = {}
    for line in lines:
        sym, price = line.split()
        if current.get(sym) != float(price):
            current[sym] = float(price)
            expected.append((sym, float(price)))
    lines.insert(10, "this line is bad")
    lines.insert(20, "# a comment")
    lines.insert(30, "")
    lines.insert(40, "X=9.5")
    pub = subprocess.run(
        cli("publish", feed, "-", "--end"), input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60
    )
    assert pub.returncode == 7, pub.stderr
    assert (
        "pricefeed: line 11: expected 'SYMBOL PRICE' or 'SYMBOL=PRICE', such as 'AAPL 187.5': got 'this line is bad'"
        in pub.stderr
    )
    assert "1 bad line skipped" in pub.stderr
    for s in subs:
        code, out, err = s.finish(timeout=60)
        assert code == 0, err
        rows = [json.loads(x) for x in out.splitlines()]
        assert rows[-1] == {"event": "ended", "feed": feed}
        # The feed was made by `create`, which closed cleanly: the stream's publisher is no
        # restart. A subscriber may hear of that clean departure before the end.
        events = [r for r in rows if "event" in r]
        assert {r["event"] for r in events} <= {"publisher_gone", "ended"}, events
        assert all(r["clean"] for r in events if r["event"] == "publisher_gone"), events
        changes = [r for r in rows if "event" not in r]
        assert [r["seq"] for r in changes] == list(range(1, len(changes) + 1))
        got = [(r["symbol"], r["price"]) for r in changes]
        assert ("X", 9.5) in got
        got.remove(("X", 9.5))
        assert got == expected
        assert all(list(r) == ["symbol", "price", "seq", "time_ns", "changed"] for r in changes)
        assert all(r["changed"] == ["price"] for r in changes)


def test_strict_stream_stops_at_the_first_bad_line(feed: str) -> None:
    p = run("publish", feed, "-", "--strict", stdin="A 1\nB two\nC 3\n")
    assert p.returncode == 7
    assert "pricefeed: line 2: price for symbol 'B' must be a decimal number such as 187.25" in p.stderr
    assert p.stderr.endswith(": got 'two'\n")
    with Subscriber(feed) as sub:
        assert sub.symbols() == ["A"]


@posix_only
def test_exec_runs_once_per_change(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    out = tmp_path / "exec.log"
    run("create", feed)
    cmd = f'echo "$PRICEFEED_SEQ $PRICEFEED_SYMBOL $PRICEFEED_PRICE $PRICEFEED_FEED" >> {out}; test -n "$PRICEFEED_TIME_NS"'
    sub = Proc(cli("subscribe", feed, "--exec", cmd, "--count", "30", "--timeout", "60"))
    procs.append(sub)
    wait_until(lambda: blocked_in_futex(sub.pid), 30, "subscriber to block")
    with Publisher.open(feed) as pub:
        for i in range(40):
            pub.publish("A" if i % 2 else "B", float(i))
            pub.publish("A" if i % 2 else "B", float(i))  # repeat: no change, no run
            time.sleep(0.001)
    code, stdout, err = sub.finish(timeout=60)
    assert code == 0, err
    assert stdout == ""
    rows = out.read_text().splitlines()
    assert rows == [f"{i + 1} {'A' if i % 2 else 'B'} {float(i)!r} {feed}" for i in range(30)]


def test_count_snapshot_and_filter(feed: str) -> None:
    run("publish", feed, "A=1", "B=2", "C=3")
    p = run("subscribe", feed, "B", "C", "--snapshot", "--count", "2", "--timeout", "10")
    assert p.returncode == 0, p.stderr
    assert [line.split()[1:] for line in p.stdout.splitlines()] == [["B", "2.0"], ["C", "3.0"]]


def test_subscribe_timeout_exit_code(feed: str) -> None:
    run("create", feed)
    start = time.monotonic()
    p = run("subscribe", feed, "--timeout", "0.3")
    assert p.returncode == 12 and "within the timeout of 0.3 s" in p.stderr
    assert time.monotonic() - start >= 0.3
    no_traceback(p)


@posix_only
def test_gap_event_in_json(feed: str, procs: List[Proc]) -> None:
    """While the subscriber acts on one change, a burst laps its ring of 8: a gap event, in
    JSON, right after the change it acted on."""
    run("create", feed, "--ring", "8")
    sub = Proc(cli("subscribe", feed, "--json", "--exec", 'echo "acting $PRICEFEED_SEQ"; sleep 0.5', "--count", "3",
                   "--timeout", "30"))  # fmt: skip
    procs.append(sub)
    wait_until(lambda: blocked_in_futex(sub.pid), 30, "subscriber to block")
    with Publisher.open(feed) as pub:
        # The burst must come while the action runs: wait for the action to say it started (a
        # subscriber slow to start, on a loaded machine, may not have seen the first change).
        taken = 0
        for attempt in range(5):
            pub.publish("A", float(attempt))
            try:
                taken = int(sub.readline(timeout=5).split()[1])
                break
            except AssertionError:
                continue
        assert taken, f"the subscriber acted on nothing: {sub.stderr}"
        for i in range(1, 50):
            pub.publish("AB"[i % 2], 100.0 + i)
    code, out, err = sub.finish(timeout=60)
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    events = [json.loads(line) for line in err.splitlines()]
    gap = next(e for e in events if e["event"] == "gap")
    assert gap["missed"] > 0 and gap["first_seq"] == taken + 1, (taken, events)


@posix_only
def test_ctrl_c_stops_a_blocked_subscriber_promptly(feed: str, procs: List[Proc]) -> None:
    run("create", feed)
    sub = Proc(cli("subscribe", feed))
    procs.append(sub)
    wait_until(lambda: blocked_in_futex(sub.pid), 30, "subscriber to block in futex")
    sent = time.monotonic()
    os.kill(sub.pid, signal.SIGINT)
    code, out, err = sub.finish(timeout=10)
    assert time.monotonic() - sent < 2.0
    assert code == 130 and "Traceback" not in err and out == ""


def test_second_publisher_is_refused(feed: str, procs: List[Proc]) -> None:
    first = Proc(cli("publish", feed, "-"), stdin=subprocess.PIPE)
    procs.append(first)
    first.stdin.write("A 1\n")
    first.stdin.flush()
    wait_until(lambda: os.path.exists(segment_path(feed)) and Subscriber(feed).head == 1, 30, "first publish")
    p = run("publish", feed, "A=2")
    assert p.returncode == 6
    assert f"already has a publisher (pid {first.pid})" in p.stderr
    no_traceback(p)
    p = run("rm", feed)
    assert p.returncode == 6 and f"live publisher (pid {first.pid})" in p.stderr
    p = run("rm", "--stale", feed)
    assert p.returncode == 0 and "kept" in p.stderr
    code, _, err = first.finish(timeout=30)
    assert code == 0, err
    assert run("publish", feed, "A=2").returncode == 0, "released on exit, not ended"
    assert run("get", feed, "A").stdout == "2.0\n"


def test_ls_and_rm(procs: List[Proc]) -> None:
    live, idle, ended = unique_name(), unique_name(), unique_name()
    try:
        holder = Proc(cli("publish", live, "-"), stdin=subprocess.PIPE)
        procs.append(holder)
        holder.stdin.write("A 1\n")
        holder.stdin.flush()
        run("publish", idle, "A=1")
        run("publish", ended, "A=1", "--end")
        wait_until(lambda: live in run("ls").stdout, 30, "live feed to show")
        rows = {r["name"]: r for r in map(json.loads, run("ls", "--json").stdout.splitlines())}
        assert rows[live]["state"] == "live" and rows[live]["publisher_pid"] == holder.pid
        assert rows[idle]["state"] == "publisher gone" and rows[idle]["publisher_gone"]
        assert rows[ended]["state"] == "ended"
        assert run("rm", "--stale", idle, ended, live).returncode == 0
        names = run("ls").stdout
        assert live in names and idle not in names and ended not in names
        assert run("rm", "--force", live).returncode == 0
        assert live not in run("ls").stdout
    finally:
        for name in (live, idle, ended):
            unlink_feed(name)


def test_demo_runs_and_cleans_up() -> None:
    def demos() -> set:
        return {n for n in list_feeds() if n.startswith("demo-")}

    before = demos()  # other runs' feeds may come and go meanwhile: look at demo feeds only
    p = run("demo", "--seconds", "1", timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("demo: feed") and lines[-1].startswith("demo: done")
    assert len(lines) > 5
    assert demos() <= before, "the demo left its feed behind"


def test_demo_is_one_publisher_printing_a_top_of_book_exactly_and_saying_what_latency_is() -> None:
    """The demo's first publisher is the one that publishes (no takeover event); each change is
    a top of book (the bid below the ask, the sizes positive) printed exactly, and a * marks
    the fields it set: exactly those that differ from the symbol's line before."""
    p = run("demo", "--seconds", "1", timeout=60)
    assert p.returncode == 0, p.stderr
    no_traceback(p)
    assert "restarted" not in p.stdout.lower() and "#" not in p.stdout, p.stdout
    lines = p.stdout.splitlines()
    assert lines[1].split() == ["seq", "symbol", "bid", "ask", "bid_size", "ask_size", "latency"]
    changes = [line.split() for line in lines if line.split()[0].isdigit()]
    assert len(changes) >= 5, p.stdout  # the opening batch, at least
    last: dict = {}
    for seq, symbol, *cells, _latency, unit in changes:
        assert unit == "µs" and len(cells) == 4, cells
        values = [cell.rstrip("*") for cell in cells]
        starred = [cell.endswith("*") for cell in cells]
        bid, ask = (float(v) for v in values[:2])
        assert repr(bid) == values[0] and repr(ask) == values[1], values  # exactly as stored
        assert bid < ask and int(values[2]) > 0 and int(values[3]) > 0, values
        before = last.get(symbol)
        if before is None:
            assert all(starred), (seq, cells)  # a symbol's first value sets every field
        else:
            assert starred == [v != b for v, b in zip(values, before)], (seq, cells, before)
            assert any(starred), f"seq {seq}: a change that set nothing"
        last[symbol] = values
    assert "pricefeed bench" in p.stdout and "Python's print" in p.stdout
    assert "*: the fields the change set" in p.stdout


def test_main_maps_errors_without_traceback(feed: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["get", feed, "X"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("pricefeed: no feed named") and "Traceback" not in err


def test_usage_goes_through_main(capsys: pytest.CaptureFixture) -> None:
    assert main(["subscribe"]) == 2
    assert "Missing argument 'FEED'" in capsys.readouterr().err


def test_spin_option(feed: str) -> None:
    run("publish", feed, "A=1")
    p = run("subscribe", feed, "--snapshot", "--count", "1", "--spin-us", "50", "--timeout", "10")
    assert p.returncode == 0 and p.stdout.split()[1:] == ["A", "1.0"], p.stderr
    p = run("subscribe", feed, "--spin-us", "20000")
    assert p.returncode == 2 and "--spin-us" in p.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pricefeed bench is Linux-only (fork, /proc)")
def test_bench_command_runs_and_writes_its_figures(tmp_path: Path) -> None:
    """`pricefeed bench` is reachable and its JSON has every target; figures are not judged."""
    out = tmp_path / "bench.json"
    p = run("bench", "--quick", "--only", "reads", "--json", out, timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert "reads" in doc["results"] and doc["machine"]
    assert {t["status"] for t in doc["targets"]} <= {"met", "not met", "not measured", "not available"}
    assert "\nTargets\n" in p.stdout and "issue" not in p.stdout.lower()
    p = run("bench", "--only", "nope")
    assert p.returncode == 2 and "unknown suite" in p.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pricefeed bench is Linux-only (fork, /proc)")
def test_bench_stopped_by_sigterm_exits_143_and_leaves_nothing(tmp_path: Path) -> None:
    """SIGTERM mid-run: the figures so far, a note, exit 143, no child and no name left behind."""
    out = tmp_path / "bench.json"
    proc = subprocess.Popen(
        cli("bench", "--quick", "--only", "wake", "--json", out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("pricefeed benchmark, quick run")
        assert proc.stderr.readline().strip() == "wake ..."
        time.sleep(1.0)  # inside the wake suite: the C baseline and the receivers are running
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, stdout
    assert "stopped by SIGTERM" in stdout and json.loads(out.read_text())["notes"]
    assert not [e for e in os.listdir("/dev/shm") if f"bench-{proc.pid}-" in e]
    ps = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True)
    assert ps.stdout.strip() == "", ps.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmarks run on Linux only")
def test_bench_peer_comparison_runs_from_the_checkout() -> None:
    """scripts/bench/run.py (not shipped) takes the package's options, plus --plot."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "run.py"
    p = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "--plot" in p.stdout and "wake, bursts, publish" in p.stdout
    assert "--plot" not in run("bench", "--help").stdout


@pytest.mark.skipif(sys.platform.startswith("linux"), reason="on Linux the benchmark runs (the test above)")
def test_bench_elsewhere_says_it_is_linux_only() -> None:
    p = run("bench", "--quick")
    assert p.returncode == 1 and "pricefeed bench runs on Linux only" in p.stderr, p.stderr
    no_traceback(p)


def test_selftest_runs_the_conformance_suite_and_says_what_failed() -> None:
    from pricefeed import UnsupportedPlatform
    from pricefeed._wait import select

    r = run("selftest", "--check", "wake_with")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"PASS  wake_with  {select().name}" in r.stdout
    assert ", 0 failed" in r.stdout
    listed = run("selftest", "--list")
    assert listed.returncode == 0 and "check    feed_round_trip" in listed.stdout
    bad = run("selftest", "--backend", "nope")
    assert (
        bad.returncode == UnsupportedPlatform.exit_code
        and "unknown wait backend 'nope'" in bad.stderr
        and "Traceback" not in bad.stderr
    )


def test_every_help_is_self_sufficient(capsys: pytest.CaptureFixture) -> None:
    """No --help sends the reader to a file an installed package lacks; the top one lists
    every exit code, from the error classes."""
    from pricefeed import _errors
    from pricefeed._cli.main import cli as group

    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "Exit codes:" in top
    for name in _errors.__all__:
        code = getattr(_errors, name).exit_code
        assert any(line.split()[:2] == [str(code), name] for line in top.splitlines()), name
    assert any(line.split()[:1] == ["130"] for line in top.splitlines())
    helps = {"pricefeed": top}
    for command in group.commands:
        if command != "bench":
            assert main([command, "--help"]) == 0
            helps[command] = capsys.readouterr().out
    if sys.platform.startswith("linux"):  # elsewhere bench refuses to run (tested below)
        helps["bench"] = run("bench", "--help").stdout
    for command, text in helps.items():
        assert "Usage:" in text or "usage:" in text, command
        assert "docs/" not in text and ".md" not in text, (command, text)
        assert "issue" not in text.lower(), (command, text)


def test_counts_are_singular_for_one(feed: str) -> None:
    run("publish", feed, "A=1")
    p = run("publish", feed, "-", stdin="A x\n")
    assert p.returncode == 7 and "pricefeed: 1 bad line skipped" in p.stderr, p.stderr
    listing = run("ls").stdout
    assert "1 symbols" not in listing
    row = next(line for line in listing.splitlines() if line.split()[:1] == [feed])
    assert row.split()[1:5] == ["publisher", "gone", "1", "1"], row


def test_columns_line_up_for_the_longest_symbols(feed: str) -> None:
    longest = "S" * L.SYMBOL_MAX
    run("publish", feed, "A=1.5", f"{longest}=2.5", "MID.SYMBOL=3.5")
    rows = run("snapshot", feed).stdout.splitlines()
    assert [r.split()[1] for r in rows] == ["A", longest, "MID.SYMBOL"]
    assert len({r.rindex(" ") for r in rows}) == 1, rows
    for args in (["--snapshot"], ["A", longest, "--snapshot"]):
        p = run("subscribe", feed, *args, "--count", "2", "--timeout", "10")
        assert p.returncode == 0, p.stderr
        rows = p.stdout.splitlines()
        assert len(rows) == 2 and len({r.rindex(" ") for r in rows}) == 1, rows


def test_ls_columns_line_up() -> None:
    short, long = unique_name(), unique_name() + "-long-feed"
    try:
        run("publish", short, "A=1")
        run("publish", long, *[f"S{i}=1" for i in range(12)])
        lines = run("ls").stdout.splitlines()
        header = lines[0]
        assert header.split() == ["FEED", "STATE", "SYMBOLS", "HEAD", "OWNER", "MODE"]
        rows = [r for r in lines if r.split()[0] in (short, long)]
        assert len(rows) == 2
        cells = [[(m.start(), m.end()) for m in re.finditer(r"\S+", line)] for line in (header, *rows)]
        head, *body = cells
        for row in body:  # name, "publisher", "gone", symbols, head seq, owner, mode
            assert row[1][0] == head[1][0], rows  # STATE, left-aligned
            assert (row[3][1], row[4][1]) == (head[2][1], head[3][1]), rows  # the numbers, right-aligned
            assert (row[5][0], row[6][0]) == (head[4][0], head[5][0]), rows  # OWNER and MODE
        counts = {r.split()[0]: r.split()[3:5] for r in rows}
        assert counts == {short: ["1", "1"], long: ["12", "12"]}
    finally:
        unlink_feed(short)
        unlink_feed(long)


def test_create_names_what_to_do_with_a_feed_that_exists(feed: str) -> None:
    run("create", feed)
    p = run("create", feed)
    assert p.returncode == 5
    assert p.stderr == (
        f"pricefeed: feed '{feed}' already exists (pricefeed publish {feed} publishes to it; "
        f"pricefeed rm {feed} removes it)\n"
    )


@posix_only
def test_status_and_ls_show_the_owner_and_the_mode(feed: str) -> None:
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    run("create", feed, "--mode", "0640")
    st = json.loads(run("status", feed, "--json").stdout)
    assert (st["owner"], st["mode"]) == (me, 0o640)
    text = run("status", feed).stdout.splitlines()
    assert f"owner        {me}" in text and "mode         0640" in text
    listed = json.loads(next(line for line in run("ls", "--json").stdout.splitlines() if f'"{feed}"' in line))
    assert (listed["owner"], listed["mode"]) == (me, 0o640)
    row = next(line for line in run("ls").stdout.splitlines() if line.split()[:1] == [feed])
    assert row.split()[-2:] == [me, "0640"]


@posix_only
def test_owner_option_is_given_to_the_library(feed: str) -> None:
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    assert run("publish", feed, "A=1", "--owner", me).returncode == 0
    for args in (["get", feed, "A"], ["snapshot", feed], ["status", feed]):
        for owner in (me, str(os.geteuid())):
            p = run(*args, "--owner", owner)
            assert p.returncode == 0, p.stderr
    p = run("subscribe", feed, "--snapshot", "--count", "1", "--owner", me, "--timeout", "10")
    assert p.returncode == 0 and p.stdout.split()[1:] == ["A", "1.0"], p.stderr
    other = str(os.geteuid() + 4_000_000)  # a uid that owns nothing here
    for args in (["get", feed, "A"], ["status", feed], ["subscribe", feed], ["publish", feed, "A=2"]):
        p = run(*args, "--owner", other)
        assert p.returncode == 14, (args, p.stderr)
        assert f"not to uid {other}" in p.stderr
        no_traceback(p)
    p = run("get", feed, "A", "--owner", "no-such-user-here")
    assert p.returncode == 7
    assert "owner must be the name or uid of a user of this machine: got 'no-such-user-here'" in p.stderr
    assert run("get", feed, "A").stdout == "1.0\n", "nothing was written"


@posix_only
def test_allow_world_writable_is_given_to_the_library(feed: str) -> None:
    p = run("create", feed, "--mode", "0666")
    assert p.returncode == 7 and "--allow-world-writable" in p.stderr
    assert run("create", feed, "--mode", "0666", "--allow-world-writable").returncode == 0
    assert run("publish", feed, "A=1").returncode == 14
    assert run("publish", feed, "A=1", "--allow-world-writable").returncode == 0
    for args in (["get", feed, "A"], ["snapshot", feed], ["status", feed]):
        assert run(*args).returncode == 14
        p = run(*args, "--allow-world-writable")
        assert p.returncode == 0, p.stderr
    p = run("subscribe", feed, "--snapshot", "--count", "1", "--allow-world-writable", "--timeout", "10")
    assert p.returncode == 0, p.stderr
    row = next(line for line in run("ls").stdout.splitlines() if line.split()[:1] == [feed])
    assert row.endswith("0666"), "ls lists it, and its mode says why it is refused"
