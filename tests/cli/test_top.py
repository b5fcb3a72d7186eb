"""`pricefeed top` as an operator runs it: in a real terminal (tmux), on real feeds.

Each test starts its own tmux server (its own socket) with a window of a given size running the
command, reads the screen with capture-pane and types with send-keys, waiting for what the
screen must show with a bounded poll (never a fixed sleep, never a timing assertion). The pane
runs ``pricefeed top ...; echo EXIT=$? > FILE; stty -a > FILE``: how the command exited, and
whether it gave the terminal back as it found it (line editing and echo on), are files the test
reads. The server is killed by its socket whatever happens, and the feeds removed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest
from conftest import ROOT, cli, linux_only, unique_name, unlink_feed

from pricefeed import Publisher, Subscriber
from pricefeed._observe.top import KEYS_LINE

TMUX = shutil.which("tmux")
pytestmark = [
    pytest.mark.skipif(TMUX is None, reason="tmux is not installed: these tests drive top in a real terminal"),
    linux_only,
]

#: How long anything the screen must show may take to show.
PATIENCE = 20.0


def run(*args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert "Traceback" not in p.stderr, p.stderr
    return p


class Terminal:
    """A tmux server of its own, with one window of ``width`` x ``height`` running ``top``."""

    def __init__(self, tmp: Path, args: List[str], width: int = 100, height: int = 30, term: str = "") -> None:
        assert TMUX is not None
        self.socket = f"pf-top-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.exit_file, self.stty_file, self.err_file = tmp / "exit", tmp / "stty", tmp / "stderr"
        command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "pricefeed", "top", *args])
        env = f"TERM={shlex.quote(term)} " if term else ""
        script = (
            f"cd {shlex.quote(str(ROOT))} && {env}{command} 2> {shlex.quote(str(self.err_file))}; "
            f"echo EXIT=$? > {shlex.quote(str(self.exit_file))}; stty -a > {shlex.quote(str(self.stty_file))}"
        )
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
        # Where tmux puts a -L socket; a server that ends with its session leaves it behind.
        self.socket_path = Path(os.environ.get("TMUX_TMPDIR") or "/tmp", f"tmux-{os.getuid()}", self.socket)
        self._tmux("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), script, env=environ)

    def _tmux(self, *args: str, env: Optional[dict] = None, check: bool = True) -> str:
        p = subprocess.run(
            [str(TMUX), "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True, text=True, timeout=30, env=env,
        )  # fmt: skip
        if check:
            assert p.returncode == 0, f"tmux {' '.join(args)}: {p.stderr}"
        return p.stdout

    def screen(self) -> List[str]:
        """The pane's lines, as shown (trailing spaces dropped)."""
        return [line.rstrip() for line in self._tmux("capture-pane", "-p", "-t", "top").split("\n")[:-1]]

    def wait_for(self, what: str, predicate: Callable[[List[str]], bool]) -> List[str]:
        deadline = time.monotonic() + PATIENCE
        while True:
            if self.exited() is not None:
                raise AssertionError(f"top exited ({self.exited()}) while waiting for {what}: {self.stderr()}")
            lines = self.screen()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                shown = "\n".join(lines)
                raise AssertionError(f"timed out after {PATIENCE} s waiting for {what}; the screen:\n{shown}")
            time.sleep(0.05)

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "top", *keys)

    def resize(self, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", "top", "-x", str(width), "-y", str(height))
        size = self._tmux("display-message", "-p", "-t", "top", "#{pane_width}x#{pane_height}").strip()
        assert size == f"{width}x{height}", size

    def top_pid(self) -> int:
        """The pid of the command the pane's shell runs."""
        shell = int(self._tmux("display-message", "-p", "-t", "top", "#{pane_pid}").strip())
        deadline = time.monotonic() + PATIENCE
        while True:
            children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
            if children:
                return int(children[0])
            assert time.monotonic() < deadline, "the pane's shell started nothing"
            time.sleep(0.05)

    def exited(self) -> Optional[int]:
        try:
            text = self.exit_file.read_text()
        except FileNotFoundError:
            return None
        found = re.fullmatch(r"EXIT=(\d+)\n", text)
        return int(found.group(1)) if found else None

    def wait_exit(self) -> int:
        deadline = time.monotonic() + PATIENCE
        while self.exited() is None or not self.stty_file.exists() or not self.stty_file.read_text():
            assert time.monotonic() < deadline, "top did not exit; the screen:\n" + "\n".join(self.screen())
            time.sleep(0.05)
        code = self.exited()
        assert code is not None
        return code

    def stderr(self) -> str:
        try:
            return self.err_file.read_text()
        except FileNotFoundError:
            return ""

    def restored(self) -> bool:
        """Whether the terminal had line editing and echo back after top exited."""
        flags = self.stty_file.read_text().split()
        return "icanon" in flags and "echo" in flags

    def kill(self) -> None:
        self._tmux("kill-server", check=False)
        self.socket_path.unlink(missing_ok=True)


@pytest.fixture
def terminals() -> Iterator[List[Terminal]]:
    started: List[Terminal] = []
    try:
        yield started
    finally:
        for t in started:
            t.kill()


class Ticker:
    """A publisher in a thread: AAPL every 10 ms, MSFT every 50, ES every 200 (so their rates
    order them AAPL, MSFT, ES, and their names AAPL, ES, MSFT), until stopped."""

    def __init__(self, feed: str, fields: Optional[str] = None) -> None:
        self.pub = Publisher.create(feed, fields=fields)
        self.book = fields is not None
        self.publish(0)  # every symbol from the start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def publish(self, i: int) -> None:
        if self.book:
            self.pub.publish_many(
                [("AAPL", {"bid": 100 + i / 100, "ask": 100.5 + i / 100})]
                + ([("MSFT", {"bid": 400 + i / 100, "bid_size": i})] if i % 5 == 0 else [])
                + ([("ES", {"ask": 5000 + i / 4})] if i % 20 == 0 else [])
            )
            return
        self.pub.publish("AAPL", 100 + i / 100)
        if i % 5 == 0:
            self.pub.publish("MSFT", 400 + i / 100)
        if i % 20 == 0:
            self.pub.publish("ES", 5000 + i / 4)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(0.01):
            i += 1
            self.publish(i)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.pub.close()


@pytest.fixture
def ticker(feed: str) -> Iterator[Ticker]:
    t = Ticker(feed)
    try:
        yield t
    finally:
        t.stop()


SYMBOLS = ("AAPL", "ES", "MSFT")


def rows(lines: List[str]) -> List[List[str]]:
    """The symbols table's rows, in screen order: the cells of each line naming a symbol."""
    return [line.split() for line in lines if line.split()[:1] and line.split()[0] in SYMBOLS]


def order(lines: List[str]) -> List[str]:
    return [cells[0] for cells in rows(lines)]


def heading(lines: List[str]) -> List[str]:
    return next((line.split() for line in lines if line.startswith("SYMBOL")), [])


def rates(lines: List[str]) -> List[float]:
    """The RATE/s cell of each row (a feed of one field: SYMBOL PRICE SEQ RATE/s AGE)."""
    column = next(i for i, title in enumerate(heading(lines)) if title.startswith("RATE/s"))
    return [float(cells[column].lstrip("~").replace("k", "e3")) for cells in rows(lines)]


# -- the live view ---------------------------------------------------------------------------------
def test_live_view_sorts_resizes_and_quits_with_0(
    feed: str, ticker: Ticker, tmp_path: Path, terminals: List[Terminal]
) -> None:
    t = Terminal(tmp_path, [feed])
    terminals.append(t)

    def full(lines: List[str]) -> bool:
        return (
            len(lines) == 30
            and lines[0].startswith(f"{feed} live  publisher {os.getpid()} alive  head ")
            and heading(lines)[:5] == ["SYMBOL^", "PRICE", "SEQ", "RATE/s", "AGE"]
            and sorted(order(lines)) == list(SYMBOLS)
            and lines[-1].startswith("q quit  n/r/a/s sort")
        )

    lines = t.wait_for("every symbol, with a rate", lambda s: full(s) and all(r > 0 for r in rates(s)))
    assert order(lines) == ["AAPL", "ES", "MSFT"]  # by name first
    assert "sort name, A-Z" in "\n".join(lines)
    assert all(len(line) <= 100 for line in lines)

    t.keys("r")  # by rate: the busiest first
    lines = t.wait_for("the rate order", lambda s: order(s) == ["AAPL", "MSFT", "ES"] and "RATE/sv" in heading(s))
    assert "sort rate, highest first" in "\n".join(lines)
    t.keys("R")
    t.wait_for("the rate order reversed", lambda s: order(s) == ["ES", "MSFT", "AAPL"] and "RATE/s^" in heading(s))
    t.keys("s")  # by sequence: the newest change first; AAPL changes every time
    t.wait_for("the seq order", lambda s: "SEQv" in heading(s) and order(s)[:1] == ["AAPL"])
    t.keys("n")
    t.wait_for("the name order", lambda s: order(s) == ["AAPL", "ES", "MSFT"] and "SYMBOL^" in heading(s))

    t.resize(40, 12)

    def narrow(lines: List[str]) -> bool:
        # A whole frame at 40x12: the header from the top line, then the table, the keys on
        # the last line; a line written past the edge would have wrapped into the next one.
        return (
            len(lines) == 12
            and lines[0] == f"{feed} live"
            and heading(lines)[:2] == ["SYMBOL^", "PRICE"]
            and order(lines) == ["AAPL", "ES", "MSFT"]
            and lines[-1] == KEYS_LINE[:39]  # the last cell of the screen is never written
        )

    lines = t.wait_for("a frame of 40x12", narrow)
    assert all(len(line) <= 40 for line in lines)
    first_row = next(i for i, line in enumerate(lines) if line.startswith("AAPL"))
    assert lines[first_row - 1].startswith("SYMBOL^")
    assert all(line == "" for line in lines[first_row + 3 : -1])  # nothing below the rows but the keys

    t.resize(20, 5)
    tiny = t.wait_for(
        "a frame of 20x5",
        lambda s: len(s) == 5 and s[0] == f"{feed} live"[:20] and s[1].startswith("SYMBOL^") and s[4] == KEYS_LINE[:19],
    )
    assert order(tiny) == ["AAPL", "ES"]  # two rows fit
    t.keys("j")  # scroll one row
    t.wait_for("the table scrolled", lambda s: order(s) == ["ES", "MSFT"])

    t.resize(100, 30)
    t.keys("g")
    t.wait_for("the whole view again", full)

    t.keys("q")
    assert t.wait_exit() == 0
    assert t.restored() and t.stderr() == ""


def test_ctrl_c_exits_130_and_gives_the_terminal_back(
    feed: str, ticker: Ticker, tmp_path: Path, terminals: List[Terminal]
) -> None:
    # A small vt100 from the start: no alternate screen, no PgUp in its terminfo.
    t = Terminal(tmp_path, [feed, "--interval", "0.1"], width=30, height=5, term="vt100")
    terminals.append(t)
    t.wait_for("a frame", lambda s: s[0] == f"{feed} live"[:30] and order(s) == ["AAPL", "ES"])
    t.keys("PageDown")  # decoded from its escape sequence, which vt100's terminfo does not name
    t.wait_for("a page down", lambda s: order(s) == ["ES", "MSFT"])
    t.keys("C-c")
    assert t.wait_exit() == 130
    assert t.restored() and t.stderr() == "\n"  # click ends the ^C line, as for every command


def test_sigterm_exits_143_and_gives_the_terminal_back(
    feed: str, ticker: Ticker, tmp_path: Path, terminals: List[Terminal]
) -> None:
    t = Terminal(tmp_path, [feed])
    terminals.append(t)
    t.wait_for("a frame", lambda s: order(s) == ["AAPL", "ES", "MSFT"])
    os.kill(t.top_pid(), 15)
    assert t.wait_exit() == 143
    assert t.restored() and t.stderr() == ""


def test_help_filter_and_pause(feed: str, tmp_path: Path, terminals: List[Terminal]) -> None:
    ticker = Ticker(feed, fields="bid:f64,ask:f64,bid_size:i64")
    try:
        t = Terminal(tmp_path, [feed, "--sort", "rate"])
        terminals.append(t)
        lines = t.wait_for("a frame of the book", lambda s: order(s) == ["AAPL", "MSFT", "ES"])
        assert heading(lines)[:6] == ["SYMBOL", "BID", "ASK", "BID_SIZE", "SEQ", "RATE/sv"]
        aapl = rows(lines)[0]
        assert aapl[1].endswith("*") and aapl[2].endswith("*") and not aapl[3].endswith("*")  # what it set
        t.keys("?")
        t.wait_for("the help", lambda s: any(line.startswith("  q, Ctrl-C") for line in s))
        t.keys("x")
        t.wait_for("the view again", lambda s: order(s) == ["AAPL", "MSFT", "ES"])
        t.keys("/", "M", "S")
        t.wait_for("the filter", lambda s: order(s) == ["MSFT"] and s[-1].startswith("filter: MS_"))
        t.keys("Enter")
        t.wait_for("the filter kept", lambda s: order(s) == ["MSFT"] and s[-1].startswith("q quit"))
        t.keys("Escape")
        t.wait_for("the filter cleared", lambda s: order(s) == ["AAPL", "MSFT", "ES"])
        t.keys("p")
        paused = t.wait_for("the pause", lambda s: "PAUSED (p resumes)" in s[0])
        seq = rows(paused)[0][4]
        t.keys("R")  # keys still work on the paused frame
        paused = t.wait_for("the paused frame reversed", lambda s: order(s) == ["ES", "MSFT", "AAPL"])
        assert rows(paused)[2][4] == seq
        t.keys("p")
        t.wait_for("the view moving again", lambda s: "PAUSED" not in s[0] and rows(s)[2][4] != seq)
        t.keys("q")
        assert t.wait_exit() == 0
    finally:
        ticker.stop()


def test_the_feed_ending_its_publisher_going_and_the_feed_removed_and_created_anew(
    feed: str, tmp_path: Path, terminals: List[Terminal]
) -> None:
    pub = Publisher.create(feed)
    pub.publish("AAPL", 1.5)
    t = Terminal(tmp_path, [feed])
    terminals.append(t)
    t.wait_for("live", lambda s: s[0].startswith(f"{feed} live  publisher {os.getpid()} alive"))
    pub.close()
    t.wait_for("publisher gone", lambda s: s[0].startswith(f"{feed} publisher gone  publisher {os.getpid()} gone"))
    with Publisher.open(feed) as again:
        again.end()
    t.wait_for("ended", lambda s: s[0].startswith(f"{feed} ended"))
    unlink_feed(feed)
    lines = t.wait_for("removed", lambda s: s[0].startswith(f"{feed} removed  the feed was removed"))
    assert rows(lines)[0][:2] == ["AAPL", "1.5"]  # as last seen
    p = run("publish", feed, "MSFT=2.25")  # created anew: top follows the new feed
    assert p.returncode == 0, p.stderr
    lines = t.wait_for("the new feed", lambda s: "created anew" in "\n".join(s) and order(s) == ["MSFT"])
    assert "publisher gone" in lines[0] and rows(lines)[0][:2] == ["MSFT", "2.25"]
    t.keys("q")
    assert t.wait_exit() == 0


def test_subscribers_show_with_their_label_state_and_lag(
    feed: str, ticker: Ticker, tmp_path: Path, terminals: List[Terminal]
) -> None:
    with Subscriber(feed, register=False) as sub:
        if not sub.readers().available:
            pytest.skip(f"the subscriber registry is not available here: {sub.readers().reason}")
    # One keeps up; one takes 50 ms over each change of a feed making about 125 a second.
    slow = (
        "import sys, time\n"
        "from pricefeed import Subscriber\n"
        "with Subscriber(sys.argv[1], label='slow-one') as sub:\n"
        "    for event in sub.updates(timeout=60):\n"
        "        time.sleep(0.05)\n"
    )
    procs = [
        subprocess.Popen(cli("subscribe", feed, "--label", "keeps-up"), stdout=subprocess.DEVNULL, cwd=ROOT),
        subprocess.Popen([sys.executable, "-c", slow, feed], cwd=ROOT),
    ]
    try:
        t = Terminal(tmp_path, [feed])
        terminals.append(t)

        def subscriber_rows(lines: List[str]) -> dict:
            return {
                cells[1]: cells
                for cells in (line.split() for line in lines)
                if cells[1:2] in (["keeps-up"], ["slow-one"])
            }

        def both(lines: List[str]) -> bool:
            found = subscriber_rows(lines)
            return len(found) == 2 and found["slow-one"][4].isdigit() and int(found["slow-one"][4]) > 50

        lines = t.wait_for("both subscribers, the slow one lagging", both)
        found = subscriber_rows(lines)
        title = next(line.split() for line in lines if line.lstrip().startswith("PID"))
        assert title[:6] == ["PID", "LABEL", "STATE", "FOR", "LAG", "LAG-T"]
        assert found["slow-one"][0] == str(procs[1].pid) and found["keeps-up"][0] == str(procs[0].pid)
        assert found["slow-one"][2] in ("working", "waiting") and found["keeps-up"][2] in ("working", "waiting")
        assert (
            next(line.split()[1] for line in lines if line.split()[1:2] in (["keeps-up"], ["slow-one"])) == "slow-one"
        )
        assert "subscribers 2/" in "\n".join(lines[:3])
        procs[1].kill()
        procs[1].wait(timeout=10)
        t.wait_for("the slow one gone", lambda s: list(subscriber_rows(s)) == ["keeps-up"])
        t.keys("q")
        assert t.wait_exit() == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


# -- without a terminal ------------------------------------------------------------------------------
def test_once_prints_one_plain_frame(feed: str, ticker: Ticker) -> None:
    p = run("top", feed, "--once", "--interval", "0.5", "--sort", "rate")
    assert p.returncode == 0 and p.stderr == ""
    lines = p.stdout.splitlines()
    assert lines[0].startswith(f"{feed} live  publisher {os.getpid()} alive  head ")
    assert "rates over 0.5s" in p.stdout and "\x1b" not in p.stdout and "q quit" not in p.stdout
    assert order(lines) == ["AAPL", "MSFT", "ES"] and all(r > 0 for r in rates(lines))
    p = run("top", feed, "--once", "--interval", "0.05", "--filter", "s", "--reverse")
    assert p.returncode == 0 and order(p.stdout.splitlines()) == ["MSFT", "ES"]


def test_without_a_terminal_it_says_to_use_once(feed: str, ticker: Ticker) -> None:
    p = run("top", feed)
    assert p.returncode == 2 and p.stdout == ""
    assert "top needs a terminal (standard input and output); --once prints one frame as text" in p.stderr


@pytest.mark.parametrize("bad", ["0", "0.01", "-1", "nan", "inf", "abc", "61", ""])
def test_a_bad_interval_is_a_usage_error(feed: str, bad: str) -> None:
    p = run("top", feed, "--once", "--interval", bad)
    assert p.returncode == 2
    assert "Invalid value for '--interval': must be a number of seconds from 0.05 to 60" in p.stderr


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--sort", "price"], 2, "Invalid value for '--sort'"),
        (["--filter", "A B"], 2, "Invalid value for '--filter'"),
        (["--filter", "\x1b[2J"], 2, "'\\x1b[2J'"),
        (["--bogus"], 2, "--bogus"),  # click says "No such option '--bogus'" or ": --bogus"
    ],
)
def test_bad_options_are_usage_errors(feed: str, args: List[str], code: int, says: str) -> None:
    p = run("top", feed, "--once", *args)
    assert p.returncode == code and says in p.stderr and "\x1b" not in p.stderr


def test_a_missing_feed_exits_3_and_a_bad_name_7() -> None:
    name = unique_name()
    p = run("top", name, "--once")
    assert p.returncode == 3 and p.stdout == ""
    assert p.stderr.startswith("pricefeed: ") and repr(name) in p.stderr
    assert p.stderr.endswith(" (pricefeed ls lists the feeds there are)\n") and p.stderr.count("\n") == 1
    p = run("top", "bad/name", "--once")
    assert p.returncode == 7 and p.stderr.startswith("pricefeed: ")


def test_a_terminal_curses_does_not_know_is_refused_in_one_line(
    feed: str, ticker: Ticker, tmp_path: Path, terminals: List[Terminal]
) -> None:
    t = Terminal(tmp_path, [feed], term="no-such-terminal")
    terminals.append(t)
    assert t.wait_exit() == 1
    err = t.stderr()
    assert err.startswith("pricefeed: top cannot drive this terminal (TERM='no-such-terminal')")
    assert err.endswith("--once prints one frame as text\n") and err.count("\n") == 1
    assert t.restored()
