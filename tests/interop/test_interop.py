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
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

if sys.platform != "win32":
    import posix_ipc  # POSIX shared memory: the tests that use it are marked posix_only
from conftest import ROOT, Proc, blocked_in_futex, cli, kill_hard, peek, poke, wait_until, worker

from pricefeed import Publisher, PublisherRestarted, Subscriber
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


# -- (a) the constants of every client equal pricefeed._protocol.layout ------------------------------------
@pytest.mark.parametrize("program", ["layout_check", "layout_check_cxx", "layout_check_m32", "publisher"])
def test_layout_constants_match_the_python_layout(build: Builds, program: str) -> None:
    args = [build(program)] + (["--print-layout"] if program == "publisher" else [])
    got = json.loads(subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout)
    python = {k: v for k, v in vars(L).items() if k.isupper() and isinstance(v, int) and not isinstance(v, bool)}
    assert set(python) - set(got) == set(), "constants of pricefeed._protocol.layout that the client does not have"
    for name, value in got.items():
        if name == "geometries":
            for capacity, ring, ring_off, size in value:
                assert (ring_off, size) == (L.ring_offset(capacity), L.segment_size(capacity, ring)), (capacity, ring)
        elif name == "slots":
            for slot, offset, word, word_offset in value:
                assert (offset, word, word_offset) == (L.slot_offset(slot), L.wake_word_of(slot), L.wake_offset(word))
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
    poke(feed, L.OFF_VERSION, "I", 1)
    old = subprocess.run([sub, feed], capture_output=True, text=True, timeout=30)
    assert old.returncode == 9 and "layout version 1; this reader reads version 2" in old.stderr, old.stderr


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
    "version 1": (
        lambda feed: damage(feed, L.OFF_VERSION, "I", 1),
        "PF_EVERSION",
        9,
        "segment has layout version 1; this reader reads version 2",
    ),
    "version 3": (lambda feed: damage(feed, L.OFF_VERSION, "I", 3), "PF_EVERSION", 9, "layout version 3;"),
    "ring size": (lambda feed: damage(feed, L.OFF_RING_SIZE, "I", 24), "PF_EBADSEG", 9, "ring_size=24"),
    "slot size": (lambda feed: damage(feed, L.OFF_SLOT_SIZE, "I", 32), "PF_EBADSEG", 9, "slot_size is 32, expected 64"),
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
    assert c.json_line() == {"ready": True, "head_seq": 0, "epoch": 1, "repaired": 0}
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
        lock_a = L.slot_offset(0) + L.SLOT_LOCK
        poke(feed, lock_a, "Q", 3)
        poke(feed, L.slot_offset(0) + L.SLOT_PRICE, "d", 1.5)
        poke(feed, L.slot_offset(2) + L.SLOT_PRICE, "dQQ", 5.0, 123, 4)
        it = sub.updates(timeout=10)
        p = subprocess.run([build("pfcat"), "publish", feed], input="B 2\nB 2.5\n", capture_output=True, text=True)
        lines = [json.loads(line) for line in p.stdout.splitlines()]
        assert lines[0] == {"ready": True, "head_seq": 5, "epoch": 2, "repaired": 2}, p.stdout
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
    poke(feed, L.slot_offset(0) + L.SLOT_LOCK, "Q", 3)
    p = subprocess.run([build("publisher"), feed], capture_output=True, text=True, timeout=30)
    assert p.returncode == 9 and "slot 0 ('A') was left mid-change" in p.stderr and "lock is odd (3)" in p.stderr
    with Subscriber(feed) as sub:
        assert sub.status().publisher_epoch == 1, "a refusal leaves the feed as it was"


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
