"""Other languages on the same feed: the C header, a C++ subscriber, a Rust publisher.

Each program is compiled here with the compiler found on the machine (gcc, g++, rustc; a test
whose compiler is missing is skipped, saying which), then run as a real process next to the
Python library on a feed of its own. What is checked is the contract, end to end: every change
exactly once, in order, with equal values; a Gap and the final values after a lap; the end of
the feed; and, for the C API, the documented error for each kind of bad input.
docs/interop.md describes the programs and these tests.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

if sys.platform != "win32":
    import posix_ipc  # POSIX shared memory: the tests that use it are marked posix_only
from conftest import ROOT, Proc, blocked_in_futex, cli, kill_hard, peek, poke, unlink_feed, wait_until, worker

from pricefeed import Publisher, PublisherRestarted, Quote, Subscriber
from pricefeed._errors import BadSegment
from pricefeed._protocol import accel
from pricefeed._protocol import layout as L
from pricefeed._segment import NAME_MAX, segment_name

CLIENTS = ROOT / "clients"
CC = shutil.which("gcc")
CXX = shutil.which("g++")
RUSTC = shutil.which("rustc")
WARN = ["-Wall", "-Wextra", "-Werror", "-O2"]

#: name -> (compiler, the command after the compiler, given the output path)
BUILDS = {
    "layout_check": (CC, lambda out: ["-std=c11", *WARN, str(CLIENTS / "c/layout_check.c"), "-o", out]),
    "layout_check_cxx": (
        CXX,
        lambda out: ["-std=c++17", *WARN, "-x", "c++", str(CLIENTS / "c/layout_check.c"), "-o", out],
    ),
    "layout_check_m32": (CC, lambda out: ["-m32", "-std=c11", *WARN, str(CLIENTS / "c/layout_check.c"), "-o", out]),
    "pfcat": (CC, lambda out: ["-std=c11", *WARN, str(CLIENTS / "c/pfcat.c"), "-o", out]),
    "pfcat_m32": (CC, lambda out: ["-m32", "-std=c11", *WARN, str(CLIENTS / "c/pfcat.c"), "-o", out]),
    "subscriber": (
        CXX,
        lambda out: ["-std=c++17", *WARN, "-I", str(CLIENTS / "c"), str(CLIENTS / "cpp/subscriber.cpp"), "-o", out],
    ),
    "publisher": (RUSTC, lambda out: ["-O", str(CLIENTS / "rust/publisher.rs"), "-o", out]),
}
COMPILER_NAMES = {CC: "gcc", CXX: "g++", RUSTC: "rustc"}


pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the C, C++ and Rust clients are written for Linux (futex, POSIX shared memory)",
)


class Builds:
    """Every program is compiled at once, in parallel, when the first test asks for one."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.running: Dict[str, subprocess.Popen] = {}
        for name, (compiler, args) in BUILDS.items():
            if compiler is not None:
                out = str(where / name)
                self.running[name] = subprocess.Popen(
                    [compiler, *args(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )

    def __call__(self, name: str) -> str:
        compiler, _ = BUILDS[name]
        if compiler is None:
            wanted = {"subscriber": "g++", "layout_check_cxx": "g++", "publisher": "rustc"}.get(name, "gcc")
            pytest.skip(f"{wanted} is not installed: cannot build {name}")
        proc = self.running[name]
        output, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            if "m32" in name:
                lines = output.strip().splitlines()
                # The compiler's first line is often "In file included from ...": say the error.
                first = next(
                    (x for x in lines if "error" in x or "cannot find" in x), lines[0] if lines else "no output"
                )
                pytest.skip(
                    f"gcc -m32 cannot build a 32-bit program here (Debian: apt-get install gcc-multilib): {first}"
                )
            pytest.fail(f"{COMPILER_NAMES[compiler]} failed to build {name}:\n{output}")
        assert "warning" not in output, output
        return str(self.where / name)

    def close(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builds]:
    builds = Builds(tmp_path_factory.mktemp("interop"))
    try:
        yield builds
    finally:
        builds.close()


def blocked(pid: int) -> bool:
    """In FUTEX_WAIT: blocked_in_futex, or a 32-bit process's futex (240) or futex_time64 (422)."""
    if blocked_in_futex(pid):
        return True
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split(" ", 1)[0] in ("240", "422")
    except OSError:
        return False


def start(procs: List[Proc], args: List[str], stdin: Optional[int] = None) -> Proc:
    p = Proc(args, stdin=stdin)
    procs.append(p)
    return p


def wait_blocked(*ps: Proc) -> None:
    wait_until(lambda: all(blocked(p.pid) for p in ps), 30, "the subscribers to block in FUTEX_WAIT")


def read_until_ended(p: Proc, timeout: float = 30) -> List[dict]:
    """Every JSON line up to {"event": "ended"}, which is left out; then the exit code must be 0."""
    lines = []
    while True:
        line = p.json_line(timeout)
        if line.get("event") == "ended":
            break
        lines.append(line)
    code, rest, err = p.finish(timeout)
    assert code == 0 and not rest.strip(), (code, rest, err)
    return lines


def quotes(lines: List[dict]) -> List[Tuple[int, str, float]]:
    return [(d["seq"], d["symbol"], d["price"]) for d in lines if "event" not in d]


def events(lines: List[dict], name: str) -> List[dict]:
    return [d for d in lines if d.get("event") == name]


def expected_changes(pairs: List[Tuple[str, float]], first_seq: int = 1) -> List[Tuple[int, str, float]]:
    """What publishing these pairs one by one must produce: equal prices are not changes."""
    current: Dict[str, float] = {}
    out = []
    seq = first_seq
    for symbol, price in pairs:
        if current.get(symbol) != price:
            current[symbol] = price
            out.append((seq, symbol, price))
            seq += 1
    return out


def shm_path(feed: str) -> str:
    return f"/dev/shm{segment_name(feed)}"


@pytest.fixture(autouse=True)
def _python_children_run_a_built_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python child (pricefeed subscribe, a worker) runs the pure implementation while the C
    accelerator here is not built, or was built from another layout (it would warn on stderr)."""
    if not accel.AVAILABLE:
        monkeypatch.setenv("PRICEFEED_PURE", "1")


# -- records: a schema of four fields --------------------------------------------------------------
SCHEMA = "bid:f64,ask:f64,bid_size:i64,ask_size:i64"
NAMES = ("bid", "ask", "bid_size", "ask_size")
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
#: A change as the tests compare it: (seq, symbol, every field's value, the names it changed).
Change = Tuple[int, str, Dict[str, float], List[str]]


def random_records(count: int, symbols: int = 5, seed: int = 7) -> List[Tuple[str, Dict[str, float]]]:
    """(symbol, {field: value}) records that set 1 to 4 fields each, from few enough values that
    many of them change nothing, or only some of the fields they set."""
    rng = random.Random(seed)
    floats = [100.0, 100.25, -0.0, 0.0, 1e-300, 2.0**60, -5201.5]
    ints = [0, 1, 12, -3, 2**40, I64_MIN, I64_MAX]
    out = []
    for _ in range(count):
        names = rng.sample(NAMES, rng.randint(1, len(NAMES)))
        given = {n: rng.choice(floats if n in ("bid", "ask") else ints) for n in sorted(names, key=NAMES.index)}
        out.append((f"S{rng.randrange(symbols)}", given))
    return out


def record_changes(items: List[Tuple[str, Dict[str, float]]], first_seq: int = 1) -> List[Change]:
    """What publishing these records one by one must produce: a symbol's first record changes
    every field (the ones it does not set start at 0), a later one the fields it sets to a
    value that differs; one that changes nothing is no change. A value equal to the current
    one (-0.0 to 0.0) leaves it as it was."""
    current: Dict[str, Dict[str, float]] = {}
    out: List[Change] = []
    seq = first_seq
    for symbol, given in items:
        fresh = symbol not in current
        values = dict(current.get(symbol) or {n: (0.0 if n in ("bid", "ask") else 0) for n in NAMES})
        changed = [n for n in NAMES if n in given and given[n] != values[n]]
        values.update((n, given[n]) for n in changed)
        if fresh:
            changed = list(NAMES)
        elif not changed:
            continue
        current[symbol] = values
        out.append((seq, symbol, values, changed))
        seq += 1
    return out


def record_lines(items: List[Tuple[str, Dict[str, float]]]) -> List[str]:
    """The records as "SYMBOL NAME=VALUE ..." lines (a float as repr writes it)."""
    return [symbol + "".join(f" {n}={v!r}" for n, v in given.items()) for symbol, given in items]


def from_json(lines: List[dict]) -> List[Change]:
    return [(d["seq"], d["symbol"], {n: d[n] for n in NAMES}, d["changed"]) for d in lines if "event" not in d]


def from_quotes(qs: List[Quote]) -> List[Change]:
    return [(q.seq, q.symbol, dict(q.fields), list(q.changed)) for q in qs]


def exact(changes: List[Change]) -> List[tuple]:
    """The changes with every float as its bits' repr, so that -0.0 and 0.0 are told apart."""
    return [(seq, s, {n: repr(v) for n, v in values.items()}, changed) for seq, s, values, changed in changes]


# -- (a) the constants of every client equal pricefeed._protocol.layout ------------------------------------
@pytest.mark.parametrize("program", ["layout_check", "layout_check_cxx", "layout_check_m32", "publisher"])
def test_layout_constants_match_the_python_layout(build: Builds, program: str) -> None:
    args = [build(program)] + (["--print-layout"] if program == "publisher" else [])
    got = json.loads(subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout)
    python = {k: v for k, v in vars(L).items() if k.isupper() and isinstance(v, int) and not isinstance(v, bool)}
    assert set(python) - set(got) == set(), "constants of pricefeed._protocol.layout that the client does not have"
    for name, value in got.items():
        if name == "geometries":
            assert {n for _, _, n, *_ in value} >= {1, 4, 5, 16}, "schemas of one field, one line, more, the most"
            for capacity, ring, n, slot_size, record_size, slots_off, ring_off, size in value:
                assert (slot_size, record_size, slots_off, ring_off, size) == (
                    L.slot_size(n),
                    L.record_size(n),
                    L.slots_offset(capacity),
                    L.ring_offset(capacity, n),
                    L.segment_size(capacity, ring, n),
                ), (capacity, ring, n)
        elif name == "slots":
            for slot, capacity, n, offset, symbol, word, word_offset in value:
                assert (offset, symbol, word, word_offset) == (
                    L.slot_offset(slot, capacity, n),
                    L.symbol_offset(slot),
                    L.wake_word_of(slot),
                    L.wake_offset(word),
                ), (slot, capacity, n)
        elif name == "schema":
            assert [(k, off) for k, off in value] == [(k, L.schema_entry_offset(k)) for k, _ in value]
        elif name == "NAME_MAX":
            assert value == NAME_MAX
        else:
            assert value == python[name], f"{name}: the client says {value}, pricefeed._protocol.layout {python[name]}"


# -- (b) Python publisher -> C++ subscriber -----------------------------------------------------------
def test_python_publisher_to_cpp_subscribers_all_and_filtered(build: Builds, feed: str, procs: List[Proc]) -> None:
    sub = build("subscriber")
    pub = Publisher.create(feed, capacity=64, ring_size=1024)
    try:
        pub.publish("S0", 1.0, time_ns=1)
        everything = start(procs, [sub, feed, "--timeout", "30"])
        some = start(procs, [sub, feed, "S1", "S3", "LATE", "--timeout", "30"])
        wait_blocked(everything, some)
        pairs = [(f"S{k % 5}", float((k * 7) % 4) + 0.5) for k in range(300)]  # many repeats
        pairs += [("LATE", 2.0**60), ("S1", 0.1), ("S1", 0.1), ("S3", -1e-300), ("S0", 1.0)]
        want = []
        for k, (symbol, price) in enumerate(pairs):
            if pub.publish(symbol, price, time_ns=1_000_000_000_000 + k):
                want.append((pub.head, symbol, price, 1_000_000_000_000 + k))
        assert pub.publish_many({"S2": 99.25, "S4": 98.5, "NEW": 3.0}) == 3
        want += [(pub.head - 2, "S2", 99.25, None), (pub.head - 1, "S4", 98.5, None), (pub.head, "NEW", 3.0, None)]
        pub.end()
    finally:
        pub.close()
    got = read_until_ended(everything)
    assert quotes(got) == [w[:3] for w in want], "every change exactly once, in order, equal values"
    assert [d["time_ns"] for d in got[: len(want) - 3]] == [w[3] for w in want[:-3]]
    assert quotes(read_until_ended(some)) == [w[:3] for w in want if w[1] in ("S1", "S3", "LATE")]


def test_cpp_subscriber_lapped_reports_a_gap_then_the_final_values(build: Builds, feed: str, procs: List[Proc]) -> None:
    sub = build("subscriber")
    with Publisher.create(feed, ring_size=16) as pub:
        pub.publish("A0", 0.5)
        cpp = start(procs, [sub, feed, "--timeout", "30"])
        wait_blocked(cpp)
        os.kill(cpp.pid, signal.SIGSTOP)  # a subscriber that falls far behind
        try:
            final: Dict[str, Tuple[float, int]] = {}
            for k in range(1, 501):
                symbol, price = f"A{k % 12}", float(k)
                assert pub.publish(symbol, price)
                final[symbol] = (price, pub.head)
            lap_head = pub.head
        finally:
            os.kill(cpp.pid, signal.SIGCONT)
        gap = cpp.json_line()
        assert gap == {"event": "gap", "missed": lap_head - 1 - 12, "first_seq": 2, "last_seq": lap_head}
        catch_up = [cpp.json_line() for _ in range(12)]
        assert [q["seq"] for q in catch_up] == sorted(seq for _, seq in final.values()), "in feed order"
        assert {q["symbol"]: (q["price"], q["seq"]) for q in catch_up} == final, "each symbol's final value, once"
        wait_blocked(cpp)
        after = [("A3", -1.0), ("B", 7.0), ("A3", -1.0)]
        for symbol, price in after:
            pub.publish(symbol, price)
        pub.end()
    rest = read_until_ended(cpp)
    assert quotes(rest) == expected_changes(after, lap_head + 1)
    view = {s: p for _, s, p in quotes(catch_up + rest)}
    with Subscriber(feed) as check:
        assert view == {s: q.price for s, q in check.snapshot().items()}, "the C++ view ends equal to the feed's"


def test_cpp_subscriber_events_and_exit_codes(build: Builds, feed: str, procs: List[Proc]) -> None:
    """The liveness events through pricefeed.h: nothing for a departure before it started, a
    clean close and a kill told apart, a restart only after the kill."""
    sub = build("subscriber")
    made_by_python(feed)  # A=1.0, published by this process, which has closed the feed cleanly
    cpp = start(procs, [sub, feed, "--count", "3", "--timeout", "30"])
    wait_blocked(cpp)
    with Publisher.open(feed) as pub:  # after a clean close: a takeover, not a restart
        pub.publish("A", 2.0)
        assert quotes([cpp.json_line(10)]) == [(2, "A", 2.0)], "no publisher_gone from before it started"
    assert cpp.json_line(10) == {"event": "publisher_gone", "pid": os.getpid(), "head_seq": 2, "clean": True}
    holder = start(procs, worker("hold_publisher", feed), stdin=subprocess.PIPE)
    assert holder.readline() == "ready"
    kill_hard(holder.pid)
    assert cpp.json_line(10) == {"event": "publisher_gone", "pid": holder.pid, "head_seq": 2, "clean": False}
    with Publisher.open(feed) as pub:
        assert cpp.json_line(10) == {"event": "publisher_restarted", "pid": os.getpid(), "epoch": 4, "head_seq": 2}
        pub.publish("B", 3.0)
        pub.publish("C", 4.0)
        pub.publish("D", 5.0)
    assert quotes([cpp.json_line(), cpp.json_line()]) == [(3, "B", 3.0), (4, "C", 4.0)]
    assert cpp.finish()[0] == 0, "--count 3: done after three changes"

    idle = subprocess.run([sub, feed, "--timeout", "0.2"], capture_output=True, text=True, timeout=30)
    assert idle.returncode == 12 and "within the timeout of 0.2 s" in idle.stderr
    interrupted = start(procs, [sub, feed])
    wait_blocked(interrupted)
    os.kill(interrupted.pid, signal.SIGINT)
    assert interrupted.finish(10)[0] == 130
    poke(feed, L.OFF_VERSION, "I", 2)
    old = subprocess.run([sub, feed], capture_output=True, text=True, timeout=30)
    assert old.returncode == 9 and "layout version 2; this reader reads version 3" in old.stderr, old.stderr


# -- (c) Rust publisher -> Python subscriber ----------------------------------------------------------
@pytest.mark.parametrize("lapped", [False, True], ids=["in-step", "lapped"])
def test_rust_publisher_to_python_subscriber(build: Builds, feed: str, procs: List[Proc], lapped: bool) -> None:
    ring = "16" if lapped else "65536"  # 16: far smaller than the burst
    rust = start(procs, [build("publisher"), feed, "--stdin", "--ring", ring, "--end"], stdin=subprocess.PIPE)
    ready = rust.json_line()
    assert ready["ready"] and ready["head_seq"] == 0 and ready["epoch"] == 1
    assert os.stat(shm_path(feed)).st_mode & 0o777 == 0o600, "created with mode 0600, whatever the umask"
    py = start(procs, cli("subscribe", feed, "--json", "--timeout", "30"))
    wait_blocked(py)
    burst = [(f"R{k % 6}", float(k // 2)) for k in range(400)]  # every other one repeats a price
    tail = [("R1", 1e-7), ("R1", 1e-7), ("Z", 12345.678)]
    if lapped:
        os.kill(py.pid, signal.SIGSTOP)
    try:
        rust.stdin.write("".join(f"{s} {p!r}\n" for s, p in burst) + "# a comment\n\nnot-a-line\n")
        rust.stdin.flush()
        burst_changes = expected_changes(burst)
        with Subscriber(feed) as watch:
            wait_until(lambda: watch.head == len(burst_changes), 30, "the Rust publisher to publish the burst")
    finally:
        if lapped:
            os.kill(py.pid, signal.SIGCONT)
    if lapped:
        wait_blocked(py)
    rust.stdin.write("".join(f"{s}={p!r}\n" for s, p in tail))
    code, out, err = rust.finish()
    assert code == 7 and "line 403" in err, (code, err)  # the bad line, reported and skipped
    assert json.loads(out) == {"published": len(burst_changes) + 2, "head_seq": len(burst_changes) + 2}
    got = read_until_ended(py)
    tail_changes = [(seq + len(burst_changes), s, p) for seq, s, p in expected_changes(tail)]
    if not lapped:
        assert quotes(got) == burst_changes + tail_changes
        return
    head = len(burst_changes)
    (gap,) = events(got, "gap")
    final = {s: (p, seq) for seq, s, p in burst_changes}
    catch_up = quotes(got)[:6]
    assert gap == {"event": "gap", "missed": head - 6, "first_seq": 1, "last_seq": head}
    assert sorted((s, (p, seq)) for seq, s, p in catch_up) == sorted(final.items())
    assert quotes(got)[6:] == tail_changes


# -- (d) C++ and Python side by side on one Rust-published feed ------------------------------------
def test_cpp_and_python_subscribers_side_by_side_on_a_rust_feed(build: Builds, feed: str, procs: List[Proc]) -> None:
    sub = build("subscriber")
    rust = start(
        procs, [build("publisher"), feed, "--stdin", "--generate", "3000", "--symbols", "7", "--end"], subprocess.PIPE
    )
    assert rust.json_line()["ready"]
    cpp = start(procs, [sub, feed, "--timeout", "30"])
    py = start(procs, cli("subscribe", feed, "--json", "--timeout", "30"))
    wait_blocked(cpp, py)
    code, out, err = rust.finish()  # closing its stdin starts the generated sequence
    assert code == 0 and json.loads(out) == {"published": 3000, "head_seq": 3000}, err
    want = [(k, f"G{(k - 1) % 7}", 100 + k / 4) for k in range(1, 3001)]
    from_cpp, from_py = read_until_ended(cpp), read_until_ended(py)
    assert quotes(from_cpp) == want
    assert quotes(from_py) == want
    assert from_cpp == from_py, "the same changes, time stamps included"


# -- (e) a 32-bit C reader ------------------------------------------------------------------------
def test_32_bit_c_reader(build: Builds, feed: str, procs: List[Proc]) -> None:
    pfcat32 = build("pfcat_m32")
    values = {"A": 0.1, "B": 1e300, "C": -2.5, "D": 2.0**53 + 2}
    with Publisher.create(feed, ring_size=1024) as pub:  # more than the changes below: no lap
        for k, (symbol, price) in enumerate(values.items()):
            pub.publish(symbol, price, time_ns=(1 << 63) + k)  # above 2**32: both halves matter
        check = json.loads(subprocess.run([pfcat32, "check", feed], capture_output=True, text=True, timeout=30).stdout)
        assert check["pointer_bits"] == 32 and check["head_seq"] == 4
        p = subprocess.run([pfcat32, "get", feed, *values, "NOPE"], capture_output=True, text=True, timeout=30)
        got = [json.loads(line) for line in p.stdout.splitlines()]
        assert p.returncode == 4 and got[-1]["error"] == "PF_ENOSYMBOL"
        assert [(d["symbol"], d["price"], d["seq"], d["time_ns"]) for d in got[:-1]] == [
            (s, v, k + 1, (1 << 63) + k) for k, (s, v) in enumerate(values.items())
        ]
        follower = start(procs, [pfcat32, "follow", feed, "--timeout", "30"])
        wait_blocked(follower)
        pairs = [(f"X{k % 3}", float(k % 5)) for k in range(200)]
        want = []
        for symbol, price in pairs:
            if pub.publish(symbol, price):
                want.append((pub.head, symbol, price))
        pub.end()
    assert quotes(read_until_ended(follower)) == want


# -- (f) the C API's errors ---------------------------------------------------------------------------
def make_segment(feed: str, data: bytes) -> None:
    shm = posix_ipc.SharedMemory(segment_name(feed), posix_ipc.O_CREX, size=len(data) or 1)
    try:
        os.pwrite(shm.fd, data, 0)
        os.ftruncate(shm.fd, len(data))
    finally:
        shm.close_fd()


def made_by_python(feed: str) -> None:
    with Publisher.create(feed, capacity=8, ring_size=16) as pub:
        pub.publish("A", 1.0)


def damage(feed: str, offset: int, fmt: str, value: int) -> None:
    made_by_python(feed)
    poke(feed, offset, fmt, value)


CORRUPTIONS = {
    "missing": (lambda feed: None, "PF_ENOTFOUND", 3, "no feed named"),
    "foreign": (lambda feed: make_segment(feed, b"hello, world\n" * 100), "PF_EBADSEG", 9, "not a pricefeed segment"),
    "tiny": (lambda feed: make_segment(feed, b"PRCFEED\0"), "PF_EBADSEG", 9, "smaller than the 256-byte header"),
    "version 2": (
        lambda feed: damage(feed, L.OFF_VERSION, "I", 2),
        "PF_EVERSION",
        9,
        "segment has layout version 2; this reader reads version 3",
    ),
    "version 4": (lambda feed: damage(feed, L.OFF_VERSION, "I", 4), "PF_EVERSION", 9, "layout version 4;"),
    "ring size": (lambda feed: damage(feed, L.OFF_RING_SIZE, "I", 24), "PF_EBADSEG", 9, "ring_size=24"),
    "slot size": (
        lambda feed: damage(feed, L.OFF_SLOT_SIZE, "I", 32),
        "PF_EBADSEG",
        9,
        "slot_size is 32, expected 64 for capacity 8 and 1 field(s)",
    ),
    "symbols offset": (
        lambda feed: damage(feed, L.OFF_SYMBOLS_OFFSET, "Q", 768),
        "PF_EBADSEG",
        9,
        "symbols_offset is 768, expected 1280",
    ),
    "truncated": (
        lambda feed: (made_by_python(feed), os.truncate(shm_path(feed), L.segment_size(8, 16) - 32)),
        "PF_EBADSEG",
        9,
        "truncated",
    ),
    "never initialised": (lambda feed: damage(feed, L.OFF_VERSION, "I", 0), "PF_EBADSEG", 9, "initialised"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_c_reader_reports_each_bad_segment(build: Builds, feed: str, case: str) -> None:
    make, code, exit_code, words = CORRUPTIONS[case]
    make(feed)
    p = subprocess.run([build("pfcat"), "check", feed], capture_output=True, text=True, timeout=30)
    got = json.loads(p.stdout)
    assert (got["error"], p.returncode) == (code, exit_code), got
    assert words in got["message"] and repr(feed) in got["message"], got["message"]


def test_c_api_refuses_bad_input(build: Builds, feed: str, procs: List[Proc]) -> None:
    pfcat = build("pfcat")

    def run(*args: str, stdin: str = "") -> Tuple[int, List[dict]]:
        p = subprocess.run([pfcat, *args], input=stdin, capture_output=True, text=True, timeout=30)
        return p.returncode, [json.loads(line) for line in p.stdout.splitlines()]

    code, got = run("check", "-bad-name")
    assert code == 7 and got[0]["error"] == "PF_EINVAL" and "feed name must be" in got[0]["message"]
    code, got = run(
        "publish", feed, "--capacity", "2", "--ring", "4", stdin="A 1\nbad\x7fsym 2\nB nan\nB inf\nB 2\nC 3\n"
    )
    assert code == 8 and got[0]["ready"]
    assert [d.get("error") or d["seq"] for d in got[1:]] == [1, "PF_EINVAL", "PF_EINVAL", "PF_EINVAL", 2, "PF_EFULL"]
    assert "must be a finite number" in got[3]["message"] and "is full: 2 of 2 slots" in got[6]["message"]
    code, got = run("publish", feed, "--capacity", "0")  # the feed exists: the creation options do not apply
    assert code == 0 and got[0]["head_seq"] == 2
    with Publisher.open(feed) as holder:
        code, got = run("publish", feed)
        assert code == 6 and f"already has a publisher (pid {os.getpid()})" in got[0]["message"]
        holder.end()
    code, got = run("publish", feed)
    assert code == 11 and got[0]["error"] == "PF_EENDED" and "ended for good" in got[0]["message"]
    code, got = run("publish", feed + "x", "--ring", "1000")
    assert code == 7 and "ring size must be a power of 2" in got[0]["message"]
    assert not os.path.exists(shm_path(feed + "x"))


# -- the C header's publisher, and takeover ------------------------------------------------------------
def test_c_publisher_to_python_subscriber(build: Builds, feed: str, procs: List[Proc]) -> None:
    c = start(procs, [build("pfcat"), "publish", feed, "--capacity", "8", "--end"], subprocess.PIPE)
    assert c.json_line() == {"ready": True, "head_seq": 0, "epoch": 1, "repaired": 0, "fields": "price:f64"}
    py = start(procs, cli("subscribe", feed, "--json", "--timeout", "30"))
    wait_blocked(py)
    pairs = [(f"C{k % 4}", float(k % 3)) for k in range(60)] + [("C0", -0.0), ("C0", 0.0)]
    c.stdin.write("".join(f"{s} {p!r}\n" for s, p in pairs))
    code, _, err = c.finish()
    assert code == 0, err
    assert quotes(read_until_ended(py)) == expected_changes(pairs)


def test_c_publisher_takes_over_and_repairs_a_half_written_feed(build: Builds, feed: str) -> None:
    with Publisher.create(feed, ring_size=16) as pub:
        pub.publish_many({"A": 1.0, "B": 2.0, "C": 3.0})
    # Died inside A's write (lock odd, the new price stored), and after writing C=5.0 as
    # change 4 without moving the head: layout.md, section 10.
    with Subscriber(feed) as sub:
        lock_a = L.slot_offset(0, L.DEFAULT_CAPACITY) + L.SLOT_LOCK
        poke(feed, lock_a, "Q", 3)
        poke(feed, L.slot_offset(0, L.DEFAULT_CAPACITY) + L.SLOT_VALUES, "d", 1.5)
        slot_c = L.slot_offset(2, L.DEFAULT_CAPACITY)
        poke(feed, slot_c + L.SLOT_SEQ, "QQI", 4, 123, 1)
        poke(feed, slot_c + L.SLOT_VALUES, "d", 5.0)
        it = sub.updates(timeout=10)
        p = subprocess.run(
            [build("pfcat"), "publish", feed], input="B 2\nB 2.5\n", capture_output=True, text=True, timeout=30
        )
        lines = [json.loads(line) for line in p.stdout.splitlines()]
        assert lines[0] == {"ready": True, "head_seq": 5, "epoch": 2, "repaired": 2, "fields": "price:f64"}, p.stdout
        assert lines[1:] == [{"changed": False, "seq": 5}, {"changed": True, "seq": 6}]
        restarted = next(it)
        assert isinstance(restarted, PublisherRestarted) and restarted.epoch == 2
        assert [(q.symbol, q.price, q.seq) for q in (next(it), next(it), next(it))] == [
            ("A", 1.5, 4),
            ("C", 5.0, 5),
            ("B", 2.5, 6),
        ]
        assert peek(feed, lock_a, "Q")[0] % 2 == 0, "A's lock made even again"
    with Publisher.open(feed) as again:
        assert again.repaired == 0 and again.head == 6


def test_rust_publisher_refuses_a_half_written_feed(build: Builds, feed: str) -> None:
    made_by_python(feed)
    poke(feed, L.slot_offset(0, 8) + L.SLOT_LOCK, "Q", 3)
    p = subprocess.run([build("publisher"), feed], capture_output=True, text=True, timeout=30)
    assert p.returncode == 9 and "slot 0 ('A') was left mid-change" in p.stderr and "lock is odd (3)" in p.stderr
    with Subscriber(feed) as sub:
        assert sub.status().publisher_epoch == 1, "a refusal leaves the feed as it was"


# -- (h) records: a schema of several fields, each change setting any of them ---------------------------
def test_python_records_to_cpp_subscribers_and_c_reader(build: Builds, feed: str, procs: List[Proc]) -> None:
    """Python publishes records of a four-field schema; two C++ subscribers (everything; two
    symbols and only changes of the sizes, --on) and the C reader (pfcat follow) each see every
    wanted change once, in order, with the values and the changed mask the Python subscriber sees."""
    sub, pfcat = build("subscriber"), build("pfcat")
    items = random_records(1500)
    with Publisher.create(feed, capacity=16, ring_size=4096, fields=SCHEMA) as pub:
        everything = start(procs, [sub, feed, "--timeout", "30"])
        sizes = start(procs, [sub, feed, "S1", "S3", "--on", "bid_size,ask_size", "--timeout", "30"])
        reader = start(procs, [pfcat, "follow", feed, "--timeout", "30"])
        wait_blocked(everything, sizes, reader)
        with Subscriber(feed) as check:
            it = check.updates(timeout=30)
            changes = sum(
                pub.publish(symbol, time_ns=1_000_000 + k, **given) for k, (symbol, given) in enumerate(items)
            )
            batch = {"S0": {"bid": 1.5, "ask_size": 7}, "NEW": {"ask": 3.25}, "S1": {"bid_size": -1}}
            changes += pub.publish_many(batch)
            pub.end()
            seen = [q for q in it if isinstance(q, Quote)]
    python = from_quotes(seen)
    want = record_changes(items + list(batch.items()))
    assert changes == len(want) and len(want) > 500, "many changes, and many records that changed nothing"
    assert any(len(c[3]) not in (1, len(NAMES)) for c in want), "changes of some of the fields, not one nor all"
    assert exact(python) == exact(want), "the Python subscriber sees what the model says"
    got = read_until_ended(everything)
    assert exact(from_json(got)) == exact(want), "the C++ subscriber: every change once, in order, values and masks"
    assert [d["time_ns"] for d in got] == [q.time_ns for q in seen], "the same time stamps"
    assert exact(from_json(read_until_ended(reader))) == exact(want), "the C reader (pfcat follow) likewise"
    wanted = [c for c in want if c[1] in ("S1", "S3") and {"bid_size", "ask_size"} & set(c[3])]
    assert exact(from_json(read_until_ended(sizes))) == exact(wanted), "--on: only changes of those fields"
    p = subprocess.run([pfcat, "get", feed, "S0", "S1", "NEW"], capture_output=True, text=True, timeout=30)
    final = {c[1]: c for c in want}
    assert exact(from_json([json.loads(line) for line in p.stdout.splitlines()])) == exact(
        [final["S0"], final["S1"], final["NEW"]]
    ), "pf_get: each symbol's last record and the mask of its last change"


#: Lines no publisher may apply, with what the error says: each is refused whole, nothing of it written.
BAD_RECORD_LINES = [
    ("S1 bid=nan ask=1.5", "must be a finite number"),
    ("S1 ask=inf", "must be a finite number"),
    ("S1 bid=1.5 nope=1", "no field"),
    ("S1 bid_size=1.5", "bid_size"),
    ("S1 5.0", "bid, ask, bid_size, ask_size"),
    ("S9 bid=nan", "must be a finite number"),
]


def test_rust_records_to_python_subscriber(build: Builds, feed: str, procs: List[Proc]) -> None:
    """The Rust publisher creates a four-field feed (--fields) and publishes records from stdin,
    several fields per change, then generated ones; the Python subscriber sees each change once,
    in order, with its values and mask. A bad line is reported with its number, nothing of it
    written."""
    rust = start(
        procs,
        [build("publisher"), feed, "--fields", SCHEMA, "--capacity", "16", "--stdin", "--generate", "30",
         "--symbols", "3", "--end"],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    ready = rust.json_line()
    assert ready["ready"] and ready["head_seq"] == 0 and ready["fields"] == SCHEMA
    items = random_records(1200, seed=11)
    lines = record_lines(items)
    bad_at = {}
    for k, (line, words) in enumerate(BAD_RECORD_LINES):
        at = 100 * (k + 1) + k  # among the good lines; line numbers count from 1
        lines.insert(at, line)
        bad_at[at + 1] = words
    with Subscriber(feed) as sub:
        assert sub.fields == (("bid", 1), ("ask", 1), ("bid_size", 2), ("ask_size", 2))
        it = sub.updates(timeout=30)
        rust.stdin.write("".join(line + "\n" for line in lines))
        code, out, err = rust.finish()
        got = from_quotes([q for q in it if isinstance(q, Quote)])
    assert code == 7, (code, err)
    reported = [line for line in err.splitlines() if line.startswith("publisher: line ")]
    assert [int(line.split()[2].rstrip(":")) for line in reported] == sorted(bad_at), err
    for line, (number, words) in zip(reported, sorted(bad_at.items())):
        assert words in line, (number, line)
    want = record_changes(items)
    generated = [(f"G{(k - 1) % 3}", {"bid": 100 + k / 4, "ask": 101 + k / 4, "bid_size": k + 2, "ask_size": k + 3})
                 for k in range(1, 31)]  # fmt: skip
    want += record_changes(generated, len(want) + 1)
    assert json.loads(out) == {"published": len(want), "head_seq": len(want)}
    assert exact(got) == exact(want), "every change once, in order, the values and masks the Rust publisher made"


def test_c_records_to_python_subscriber(build: Builds, feed: str, procs: List[Proc]) -> None:
    """The header's publisher (pf_create_fields, pf_record, pf_publish_record through pfcat)
    on a four-field feed, to the Python subscriber: every change once, in order, values and
    masks; each line's answer says whether it was a change and its sequence."""
    c = start(procs, [build("pfcat"), "publish", feed, "--fields", SCHEMA, "--capacity", "8", "--end"], subprocess.PIPE)
    assert c.json_line() == {"ready": True, "head_seq": 0, "epoch": 1, "repaired": 0, "fields": SCHEMA}
    items = random_records(1200, symbols=6, seed=5)
    with Subscriber(feed) as sub:
        it = sub.updates(timeout=30)
        c.stdin.write("".join(line + "\n" for line in record_lines(items)))
        code, out, err = c.finish()
        got = from_quotes([q for q in it if isinstance(q, Quote)])
    assert code == 0, err
    want = record_changes(items)
    assert exact(got) == exact(want)
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["seq"] for a in answers if a["changed"]] == [w[0] for w in want]
    assert len(answers) == len(items) and sum(a["changed"] for a in answers) == len(want)


def test_c_api_refuses_bad_records(build: Builds, feed: str) -> None:
    """pf_record and pf_publish_record refuse an unknown field, a NaN or infinite f64, a double
    for an i64, pf_publish on a feed of several fields, and a bad symbol, each with PF_EINVAL
    and nothing written (not even a new symbol); pf_create_fields refuses a bad schema and
    leaves nothing behind."""
    pfcat = build("pfcat")

    def run(*args: str, stdin: str = "") -> Tuple[int, List[dict]]:
        p = subprocess.run([pfcat, *args], input=stdin, capture_output=True, text=True, timeout=30)
        return p.returncode, [json.loads(line) for line in p.stdout.splitlines()]

    lines = ["ES bid=1 ask=2 bid_size=3"] + [line for line, _ in BAD_RECORD_LINES]
    lines += ["bad\x7fsym bid=1", "ES bid=1 bid_size=3", "ES ask_size=-4"]
    code, got = run("publish", feed, "--fields", SCHEMA, "--capacity", "4", stdin="".join(x + "\n" for x in lines))
    assert code == 7 and got[0]["ready"] and got[0]["fields"] == SCHEMA
    assert got[1] == {"changed": True, "seq": 1}
    refused = got[2 : 2 + len(BAD_RECORD_LINES) + 1]
    assert [d.get("error") for d in refused] == ["PF_EINVAL"] * len(refused), refused
    for d, (line, words) in zip(refused, BAD_RECORD_LINES):
        assert words in d["message"], (line, d["message"])
    assert "symbol must be" in refused[-1]["message"]
    assert got[-2:] == [{"changed": False, "seq": 1}, {"changed": True, "seq": 2}], "nothing of the refused lines"
    with Subscriber(feed) as sub:
        assert sub.symbols() == ["ES"] and sub.head == 2, "no symbol added by a refused record"
        es = sub["ES"]
        assert (es.bid, es.ask, es.bid_size, es.ask_size, es.changed) == (1.0, 2.0, 3, -4, ("ask_size",))

    schemas = {
        "1bid:f64": "a field name is 1 to 23 characters",
        "bid:f32": "has type 'f32'; expected f64 or i64",
        "bid,ask,BID": "fields 'bid' and 'BID' have the same name (ignoring case)",
        ",".join(f"f{k}" for k in range(17)): "a schema has 1 to 16 fields: got 17",
        "bid,seq:i64": "is taken by every quote",
        "x" * 24: "a field name is 1 to 23 characters",
        " ": "a schema has 1 to 16 fields: got 0",
    }
    for spec, words in schemas.items():
        code, got = run("publish", feed + "x", "--fields", spec)
        assert code == 7 and got[0]["error"] == "PF_EINVAL", (spec, got)
        assert got[0]["message"].startswith("bad schema: ") and words in got[0]["message"], (spec, got)
        assert not os.path.exists(shm_path(feed + "x")), spec
    code, got = run("publish", feed + "x", "--fields", " bid , size : i64 ")  # spaces around the parts
    try:
        assert code == 0 and got[0]["fields"] == "bid:f64,size:i64", got
    finally:
        unlink_feed(feed + "x")


def made_with_fields(feed: str) -> None:
    with Publisher.create(feed, capacity=8, ring_size=16, fields=SCHEMA) as pub:
        pub.publish("ES", bid=5201.25, ask=5201.5, bid_size=12, ask_size=3)


def entry(field: int, at: int = 0) -> int:
    return L.schema_entry_offset(field) + at


#: name -> (what to write: [(offset, struct format, value)], what the message says, and whether
#: the Python reader's message is the same, word for word)
SCHEMA_DAMAGE = {
    "field_count 0": ([(L.OFF_FIELD_COUNT, "I", 0)], "damaged header: field_count is 0, expected 1 to 16", True),
    "field_count 17": ([(L.OFF_FIELD_COUNT, "I", 17)], "damaged header: field_count is 17, expected 1 to 16", True),
    "field_count 3": (
        [(L.OFF_FIELD_COUNT, "I", 3)],
        "damaged schema: entry 3 is not zero, but the schema has 3 field(s)",
        True,
    ),
    "unused entry": (
        [(entry(5, 7), "B", 1)],
        "damaged schema: entry 5 is not zero, but the schema has 4 field(s)",
        True,
    ),
    "bad name": ([(entry(0), "4s", b"1bid")], "damaged schema: entry 0 has name ", False),
    "reserved name": ([(entry(1), "4s", b"seq\0")], "damaged schema: entry 1 has name ", False),
    "empty name": ([(entry(2), "8s", bytes(8))], "damaged schema: entry 2 has name ", False),
    "bytes after the NUL": (
        [(entry(0, 5), "B", ord("x"))],
        "damaged schema: entry 0 has bytes after its name's NUL or in its reserved word",
        True,
    ),
    "reserved word": (
        [(entry(2, L.FIELD_RESERVED), "I", 1)],
        "damaged schema: entry 2 has bytes after its name's NUL or in its reserved word",
        True,
    ),
    "bad type": (
        [(entry(2, L.FIELD_TYPE), "I", 3)],
        "damaged schema: field 'bid_size' has type 3, expected 1 (f64) or 2 (i64)",
        True,
    ),
    "same name": (
        [(entry(1), "4s", b"BID\0")],
        "damaged schema: fields 'bid' and 'BID' have the same name (ignoring case)",
        True,
    ),
    "a fifth field": (
        [(L.OFF_FIELD_COUNT, "I", 5), (entry(4), "5s", b"extra"), (entry(4, L.FIELD_TYPE), "I", 1)],
        "damaged header: slot_size is 64, expected 128 for capacity 8 and 5 field(s)",
        True,
    ),
    "schema offset": ([(L.OFF_SCHEMA_OFFSET, "Q", 512)], "damaged header: schema_offset is 512, expected 256", True),
    "version 2": ([(L.OFF_VERSION, "I", 2)], "segment has layout version 2; this reader reads version 3", False),
}


@pytest.mark.parametrize("case", list(SCHEMA_DAMAGE))
def test_c_reader_refuses_a_damaged_schema(build: Builds, feed: str, case: str) -> None:
    """pf_open validates the schema as pricefeed/_protocol/header.py does (and words it alike),
    and refuses a version-2 segment naming both versions."""
    pokes, words, same = SCHEMA_DAMAGE[case]
    made_with_fields(feed)
    for offset, fmt, value in pokes:
        poke(feed, offset, fmt, value)
    p = subprocess.run([build("pfcat"), "check", feed], capture_output=True, text=True, timeout=30)
    got = json.loads(p.stdout)
    code = "PF_EVERSION" if case == "version 2" else "PF_EBADSEG"
    assert (got["error"], p.returncode) == (code, 9), got
    assert got["message"].startswith(f"feed {feed!r}: ") and words in got["message"], got["message"]
    with pytest.raises(BadSegment) as python:
        Subscriber(feed).close()
    if same:
        assert got["message"] == str(python.value), "the words of pricefeed/_protocol/header.py"


def test_c_and_python_readers_agree_on_fuzzed_schemas(build: Builds, feed: str) -> None:
    """300 schemas damaged at random (1 to 24 bytes of the schema table or of the header's
    schema words): the C reader (pf_open, through pfcat check) and the Python one accept the
    same ones, with the same fields, and refuse the others, each with a clear error."""
    from pricefeed._protocol.header import read_geometry
    from pricefeed._segment import segment_path
    from pricefeed._values import format_fields

    made_with_fields(feed)
    path = segment_path(feed)
    with open(path, "rb") as f:
        image = f.read()
    rng = random.Random(13)
    spots = [*range(L.OFF_FIELD_COUNT, L.HEADER_SIZE), *range(L.SCHEMA_OFFSET, L.SCHEMA_OFFSET + L.SCHEMA_SIZE)]
    accepted = refused = 0
    for case in range(300):
        damaged = bytearray(image)
        at = rng.choice(spots)
        junk = rng.choice([bytes([rng.randrange(256) for _ in range(rng.randint(1, 24))]), b"\0" * rng.randint(1, 8)])
        damaged[at : at + len(junk)] = junk
        with open(path, "r+b") as f:
            f.write(damaged)
        p = subprocess.run([build("pfcat"), "check", feed], capture_output=True, text=True, timeout=30)
        got = json.loads(p.stdout)
        try:
            fields = format_fields(read_geometry(memoryview(bytes(damaged))).fields)
        except BadSegment as exc:
            assert p.returncode == 9 and got["error"] in ("PF_EBADSEG", "PF_EVERSION"), (case, at, junk, got, exc)
            assert got["message"].startswith(f"feed {feed!r}: "), got
            refused += 1
        else:
            assert p.returncode == 0 and got["fields"] == fields, (case, at, junk, got, fields)
            accepted += 1
    assert accepted > 10 and refused > 100, (accepted, refused)


@pytest.mark.parametrize("case", ["bad type", "version 2"])
def test_rust_publisher_refuses_a_damaged_schema(build: Builds, feed: str, case: str) -> None:
    pokes, words, _ = SCHEMA_DAMAGE[case]
    made_with_fields(feed)
    for offset, fmt, value in pokes:
        poke(feed, offset, fmt, value)
    p = subprocess.run([build("publisher"), feed], capture_output=True, text=True, timeout=30)
    assert p.returncode == 9, p.stderr
    assert words.replace("this reader reads", "this publisher writes") in p.stderr
    assert peek(feed, L.OFF_PUBLISHER_EPOCH, "I") == (1,), "a refusal leaves the feed as it was"


@pytest.mark.parametrize("fields", [None, SCHEMA], ids=["one-field", "four-fields"])
def test_cpp_and_c_print_what_the_cli_prints(
    build: Builds, feed: str, procs: List[Proc], fields: Optional[str]
) -> None:
    """The C++ subscriber (JSON, and --text) and pfcat follow --text print, line for line, what
    `pricefeed subscribe` prints with and without --json: one value on a feed of one field,
    NAME=VALUE... changed=... on a feed of more."""
    sub, pfcat = build("subscriber"), build("pfcat")
    pub = Publisher.create(feed, capacity=8, ring_size=64, fields=fields)
    try:
        pairs = {
            "json": ([sub, feed, "--timeout", "30"], cli("subscribe", feed, "--json", "--timeout", "30")),
            "text": ([sub, feed, "ES", "NQ", "--text", "--timeout", "30"], cli("subscribe", feed, "ES", "NQ", "--timeout", "30")),
            "pfcat": ([pfcat, "follow", feed, "--text", "--timeout", "30"], cli("subscribe", feed, "--timeout", "30")),
        }  # fmt: skip
        running = {name: (start(procs, ours), start(procs, theirs)) for name, (ours, theirs) in pairs.items()}
        wait_blocked(*(p for both in running.values() for p in both))
        if fields is None:
            for symbol, price in [("ES", 5201.25), ("NQ", -0.5), ("ES", 1e-05), ("OTHER", 2.0**60), ("ES", 1e16)]:
                pub.publish(symbol, price)
        else:
            pub.publish("ES", bid=5201.25, ask=5201.5, bid_size=12, ask_size=3)
            pub.publish("ES", bid=5201.5, ask_size=I64_MIN)
            pub.publish("OTHER", ask=0.1)
            pub.publish("NQ", bid=1e-05, bid_size=I64_MAX)
            pub.publish_many({"ES": {"ask": 1e16}, "NQ": {"bid": -0.5}})
        pub.end()
    finally:
        pub.close()
    for name, (ours, theirs) in running.items():
        mine, cli_out = ours.finish(), theirs.finish()
        assert mine[0] == cli_out[0] == 0, (name, mine, cli_out)
        assert mine[1].splitlines() == cli_out[1].splitlines() and mine[1].count("\n") >= 4, name


def test_32_bit_c_reader_of_records(build: Builds, feed: str, procs: List[Proc]) -> None:
    """A 32-bit pfcat reads and follows a four-field feed: every i64 and f64 whole (both halves
    of each 8-byte word), the masks as published."""
    pfcat32 = build("pfcat_m32")
    items = [
        ("A", {"bid": 0.1, "ask": 1e300, "bid_size": I64_MIN, "ask_size": I64_MAX}),
        ("B", {"ask": -2.5, "ask_size": (1 << 32) + 1}),
        ("A", {"bid_size": -(1 << 33)}),
    ]
    follow_items = random_records(300, symbols=3, seed=3)
    with Publisher.create(feed, capacity=8, ring_size=1024, fields=SCHEMA) as pub:
        for k, (symbol, given) in enumerate(items):
            pub.publish(symbol, time_ns=(1 << 63) + k, **given)
        check = json.loads(subprocess.run([pfcat32, "check", feed], capture_output=True, text=True, timeout=30).stdout)
        assert check["pointer_bits"] == 32 and check["fields"] == SCHEMA and check["head_seq"] == 3
        p = subprocess.run([pfcat32, "get", feed, "A", "B"], capture_output=True, text=True, timeout=30)
        got = [json.loads(line) for line in p.stdout.splitlines()]
        want = record_changes(items)
        assert exact(from_json(got)) == exact([want[2], want[1]])
        assert [d["time_ns"] for d in got] == [(1 << 63) + 2, (1 << 63) + 1]
        follower = start(procs, [pfcat32, "follow", feed, "--timeout", "30"])
        wait_blocked(follower)
        for symbol, given in follow_items:
            pub.publish(symbol, **given)
        pub.end()
    followed = record_changes(items + follow_items)[len(want) :]
    assert len(followed) > 100 and exact(from_json(read_until_ended(follower))) == exact(followed)


def test_cpp_subscriber_lapped_on_records(build: Builds, feed: str, procs: List[Proc]) -> None:
    """Lapped on a four-field feed: a gap with the exact count, then each symbol's last record
    once, in feed order, with the mask of its last change; then the live changes."""
    sub = build("subscriber")
    with Publisher.create(feed, capacity=16, ring_size=16, fields=SCHEMA) as pub:
        pub.publish("A0", bid=0.5)
        cpp = start(procs, [sub, feed, "--timeout", "30"])
        wait_blocked(cpp)
        os.kill(cpp.pid, signal.SIGSTOP)
        try:
            items = random_records(600, symbols=6, seed=13)
            for symbol, given in items:
                pub.publish(symbol, **given)
            lap_head = pub.head
        finally:
            os.kill(cpp.pid, signal.SIGCONT)
        want = record_changes([("A0", {"bid": 0.5}), *items])
        final = {c[1]: c for c in want}
        del final["A0"]  # published before the subscriber started, never since
        gap = cpp.json_line()
        assert gap == {"event": "gap", "missed": lap_head - 1 - len(final), "first_seq": 2, "last_seq": lap_head}
        catch_up = from_json([cpp.json_line() for _ in final])
        assert exact(catch_up) == exact(sorted(final.values())), "each symbol's last record and mask, in feed order"
        wait_blocked(cpp)
        pub.publish("S0", bid=-7.25, ask_size=9)
        pub.end()
    (live,) = from_json(read_until_ended(cpp))
    assert live[0] == lap_head + 1 and live[2]["bid"] == -7.25 and live[2]["ask_size"] == 9
    assert set(live[3]) <= {"bid", "ask_size"} and live[3]


# -- (g) one C core: the generated files are current, and the core stands on its own -------------
CORE_HEADERS = sorted((CLIENTS / "c" / "core").glob("*.h"))


def test_generated_c_files_are_what_the_generator_makes() -> None:
    """clients/c/core/pf_layout.h (from pricefeed/_protocol/layout.py) and clients/c/pricefeed.h
    (clients/c/src/pricefeed_api.h with the core inlined) are generated: edited by hand, or
    left behind by a change to their sources, they fail here."""
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_c.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    single = (CLIENTS / "c" / "pricefeed.h").read_text(encoding="utf-8")
    assert '#include "' not in single, "the single-file header includes nothing of its own"


@pytest.mark.parametrize(
    "compiler, flags",
    [
        (CC, ["-std=c11", "-x", "c"]),
        (CC, ["-std=c11", "-U__linux__", "-U__linux", "-Ulinux", "-x", "c"]),  # as on macOS or FreeBSD
        (CXX, ["-std=c++17", "-x", "c++"]),
    ],
    ids=["c11", "c11-not-linux", "c++17"],
)
@pytest.mark.parametrize("header", CORE_HEADERS, ids=lambda p: p.name)
def test_each_core_header_compiles_alone(compiler: Optional[str], flags: List[str], header: Path) -> None:
    """Each piece of clients/c/core includes what it uses, and builds without Linux (its futex
    calls are compiled out there), as the accelerator needs on macOS and FreeBSD."""
    if compiler is None:
        pytest.skip(f"{'g++' if '-std=c++17' in flags else 'gcc'} is not installed")
    p = subprocess.run(
        [compiler, *flags, "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-fsyntax-only", str(header)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and not p.stderr, p.stderr
