#!/usr/bin/env python3
"""What skipping the wake-up system call when nobody waits would save, and what a correct check costs.

From a checkout (Linux x86-64 or aarch64, like the other benchmarks):

    python3 scripts/bench/wake_skip.py                  # the full run: about 20 s on 2 cores
    python3 scripts/bench/wake_skip.py --quick          # about 3 s: fewer rounds, fewer calls
    python3 scripts/bench/wake_skip.py --json out.json --impl c

Every change a publisher makes ends with a FUTEX_WAKE_OP (two wake words, one system call),
even when no subscriber waits. This script measures, per change, what that call costs inside a
``Publisher.publish`` and what a check that could replace it would cost. One process per
implementation of the protocol, one after the other: the C accelerator (the default) and the
pure-Python reference (``PRICEFEED_PURE=1``). In each, every contender below runs a fixed number
of calls per round, the contenders taking turns (A, B, C, ..., then B, C, ..., A: the first one
moves each round), and each figure is the median over the rounds of the cost per call, given
beside the baseline measured in the same process as a ratio to it:

1. ``publish(symbol, price)`` on a feed of one field with no subscriber, alternating two prices
   so that every call is a change: the baseline, wake-up included.
2. The same with the wake-up suppressed, in this process only: the announcer's methods become
   no-ops, and with the C accelerator, whose commit makes the wake-up call itself, the writer's
   commit is bound to a second C feed object over the same mapping made with ``wake`` off (the
   same C code, without the system call). Baseline minus this is the most skipping could save.
3. The same with the wake-up replaced by the check a correct skip needs on the publisher's side
   (a full fence after the sequence store, then one load of a "number of waiters" word, zero
   here, so the wake is skipped), made in Python where the pure path wakes (``Announcer.change``).
   With the accelerator, the check would live in C; see the C figures below.
4. The parts, each alone in the same loop shape: ``Announcer.change(slot)`` (the pure path's
   wake-up), the bare FUTEX_WAKE_OP and FUTEX_WAKE through ctypes with no waiter (the cheapest
   form: no ``argtypes``, the address a ``c_void_p`` built once), the empty loop (its overhead
   is in every figure of this group), one read of the waiters word, a full fence (libatomic's
   ``atomic_thread_fence(5)`` through ctypes), the fence and the read together, and a scan of
   the state words of N subscriber-registry entries (N = 1, 8, 64, 1024: one 8-byte word per
   256-byte entry, ``1 in states`` over a strided ``memoryview.cast("Q")``, none waiting).

The waiters word and the registry live in a scratch file of this script in /dev/shm
(``bench-<pid>-wakeskip<n>``), mapped and removed at once, so nothing is left even after kill -9;
the feeds are ``bench-<pid>-ws<n>`` and are unlinked as soon as they are created. Where a C
compiler is on PATH, a small C program (compiled into a temporary folder) gives the same
check as the C core would make it: stores, then FUTEX_WAKE_OP, against stores, a fence and the
waiters load (or a registry scan), interleaved in the same way.

Nothing is pinned to a CPU and no figure is a pass or a fail: the table is printed and every
figure is written to JSON (``bench-wake-skip.json`` by default). Exit 0 unless the run broke (1)
or was interrupted (130).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import mmap
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

SCRIPT = str(Path(__file__).resolve())
ROOT = str(Path(__file__).resolve().parents[2])
if __package__ in (None, ""):  # run as a file: the checkout, not this folder, on sys.path
    _here = Path(__file__).resolve().parent
    if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == _here:
        sys.path[0] = ROOT
    else:
        sys.path.insert(0, ROOT)

import pricefeed  # noqa: E402
from pricefeed._bench import resources  # noqa: E402
from pricefeed._bench.stats import percentile  # noqa: E402

Result = Dict[str, Any]
#: One contender's round: the ns its calls took (the number of calls is fixed per contender).
Round = Callable[[], int]

clock = time.perf_counter_ns
SYMBOL = "S0"
#: The registry as pricefeed/_registry lays it out (version 1): a 64-byte header, then one
#: 256-byte entry per subscriber, whose state word is at byte 128 of the entry.
REGISTRY_HEADER = 64
ENTRY_BYTES = 256
STATE_OFFSET = 128
ENTRIES = 1024
REGISTRY_SIZES = (1, 8, 64, 1024)
IDLE, WAITING, WORKING = 0, 1, 2
#: The scratch file: a page for the futex words and the waiters word, then the registry.
PAGE = 4096
OFF_WORD, OFF_WORD2, OFF_WAITERS = 0, 64, 128
SEQ_CST = 5  # C11 memory_order_seq_cst, as libatomic's atomic_thread_fence takes it
# The futex as pricefeed/_wait/_futex_linux.py calls it.
SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine().lower())
FUTEX_WAKE, FUTEX_WAKE_OP, WAKE_ALL = 1, 5, 0x7FFFFFFF
WAKE_OP_ALWAYS = (2 << 28) | (5 << 24)  # OR 0 into the second word, wake it if its old value >= 0
IMPLEMENTATIONS = {"c": "C accelerator", "python": "pure Python"}
WORKER_TIMEOUT = 600.0

#: (key, label) of each contender, in the order of the table. "publish" is the baseline.
CONTENDERS: List[Tuple[str, str]] = [
    ("publish", "publish(), wake-up included (baseline)"),
    ("publish_nowake", "publish(), wake-up suppressed"),
    ("publish_check", "publish(), wake-up replaced by fence + waiters-word check (Python)"),
    ("announcer_change", "Announcer.change(slot) alone (pure path's wake-up)"),
    ("futex_wake_op", "bare FUTEX_WAKE_OP via ctypes, no waiter"),
    ("futex_wake", "bare FUTEX_WAKE via ctypes, no waiter"),
    ("loop", "empty loop (overhead in every line below)"),
    ("word_read", "one waiters-word read"),
    ("fence", "full fence: atomic_thread_fence(5) via ctypes"),
    ("fence_read", "fence + waiters-word read"),
    *[(f"scan_{n}", f"registry scan, {n} entr{'y' if n == 1 else 'ies'}") for n in REGISTRY_SIZES],
]
PUBLISH_KEYS = ("publish", "publish_nowake", "publish_check")


def progress(message: str) -> None:
    print(f"[wake_skip {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# =================================================================================================
# The worker: one implementation of the protocol, every contender, interleaved rounds
# =================================================================================================
class Scratch:
    """The waiters word, two futex words and a registry of ENTRIES entries, in a file of
    /dev/shm that is removed as soon as it is mapped (the mapping stays shared memory)."""

    def __init__(self) -> None:
        size = PAGE + REGISTRY_HEADER + ENTRIES * ENTRY_BYTES
        path = os.path.join(resources.SHM_DIR, resources.unique("wakeskip"))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.ftruncate(fd, size)
                self.mm = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        finally:
            os.unlink(path)
        self.words = memoryview(self.mm).cast("Q")
        self.waiters = self.words[OFF_WAITERS // 8 : OFF_WAITERS // 8 + 1]  # 0: nobody waits
        stride = ENTRY_BYTES // 8
        self.states = self.words[(PAGE + REGISTRY_HEADER + STATE_OFFSET) // 8 :: stride]  # each entry's state
        assert len(self.states) == ENTRIES
        for k in range(ENTRIES):  # nobody waiting: the case a skip is for
            self.states[k] = WORKING if k % 3 == 0 else IDLE
        self._views: List[memoryview] = []
        self._anchor = ctypes.c_char.from_buffer(self.mm)
        base = ctypes.addressof(self._anchor)
        self.word = ctypes.c_void_p(base + OFF_WORD)
        self.word2 = ctypes.c_void_p(base + OFF_WORD2)

    def registry(self, n: int) -> memoryview:
        """The state words of the first ``n`` entries (released by close())."""
        view = self.states[:n]
        self._views.append(view)
        return view

    def close(self) -> None:
        del self._anchor
        for view in (*self._views, self.waiters, self.states, self.words):
            view.release()
        self.mm.close()


def load_fence() -> Callable[[int], None]:
    """libatomic's C11 fence, looked up with getattr (a name with two leading underscores would be
    mangled inside a class). libatomic exports ``atomic_thread_fence``; ``__atomic_thread_fence``
    is a compiler built-in, tried first in case a build exports it. No argtypes: the order is a
    small int, passed as a C int."""
    lib = ctypes.CDLL(ctypes.util.find_library("atomic") or "libatomic.so.1")
    for name in ("__atomic_thread_fence", "atomic_thread_fence"):
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = None
            return fn  # type: ignore[no-any-return]
    raise OSError("libatomic exports no atomic_thread_fence")


def _noop(*_args: Any) -> None:
    return None


class Feed:
    """A feed of one field with one symbol published once, its publisher, and what the
    benchmark adds to that publisher (released by close() before the publisher closes)."""

    def __init__(self) -> None:
        self.name = resources.feed_name("ws")
        self._closers: List[Callable[[], None]] = []
        self.pub = pricefeed.Publisher.create(self.name, capacity=16)
        try:
            self.pub.unlink()  # it stays mapped here; nothing else needs the name
            self.pub.publish(SYMBOL, 0.5)  # a known symbol: every timed call takes the common path
        except BaseException:
            self.close()
            raise

    def suppress_wake(self) -> None:
        """Make the publisher's wake-up a no-op, in this process: the announcer's methods, and
        with the C accelerator (which wakes inside its commit) the writer's commits bound to a
        C feed object over the same mapping made with ``wake`` off."""
        pub = self.pub
        wake: Any = pub._wake
        wake.change = _noop
        wake.changes = _noop
        w: Any = pub._w
        if getattr(w, "wakes", False):
            from pricefeed._errors import BadSegment
            from pricefeed._protocol import accel, reader

            g = pub.geometry
            types = bytes(kind for _, kind in g.fields)
            quiet = accel._speedups.Feed(
                pub._seg.address, g.capacity, g.ring_size, types, reader.SPIN_TRIES, BadSegment, False
            )
            self._closers.append(quiet.close)  # before the publisher's mapping goes
            w.commit, w.commit_many, w.commit_merge = quiet.commit, quiet.commit_many, quiet.commit_merge

    def check_instead(self, scratch: Scratch, fence: Callable[[int], None]) -> None:
        """The wake-up replaced by the publisher's half of a Dekker check: after the sequence
        store (inside commit), a full fence, then the waiters word; wake only if it is not 0."""
        real = self.pub._wake.change  # bound before suppress_wake() replaces it
        self.suppress_wake()
        waiters = scratch.waiters

        def check(slot: int) -> None:
            fence(SEQ_CST)
            if waiters[0]:
                real(slot)

        wake: Any = self.pub._wake
        wake.change = check
        w: Any = self.pub._w
        w.wakes = False  # so that publish() calls the announcer, as the pure path does

    def publish_round(self, calls: int) -> Round:
        publish = self.pub.publish
        prices = [1.0, 2.0] * (calls // 2)  # alternating: every call is a change

        def run() -> int:
            head = self.pub.head
            t = clock()
            for p in prices:
                publish(SYMBOL, p)
            elapsed = clock() - t
            if self.pub.head - head != len(prices):
                raise RuntimeError(f"{self.pub.head - head} changes for {len(prices)} calls: not every call a change")
            return elapsed

        return run

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()
        self.pub.close()
        resources.forget_feed(self.name)


def micro_rounds(
    scratch: Scratch, fence: Callable[[int], None], change: Callable[[int], None], calls: int
) -> Dict[str, Tuple[Round, int]]:
    """The parts, each in the same loop shape: ``for _ in range(calls): <one operation>``."""
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    nr = SYS_FUTEX
    word, word2, waiters = scratch.word, scratch.word2, scratch.waiters
    if syscall(nr, word, FUTEX_WAKE, WAKE_ALL, None, None, 0) < 0:
        raise OSError(ctypes.get_errno(), "FUTEX_WAKE failed on the scratch word")
    if syscall(nr, word, FUTEX_WAKE_OP, WAKE_ALL, WAKE_ALL, word2, WAKE_OP_ALWAYS) < 0:
        raise OSError(ctypes.get_errno(), "FUTEX_WAKE_OP failed on the scratch words")

    def timed(body: Callable[[range], None], n: int) -> Tuple[Round, int]:
        rng = range(n)

        def run() -> int:
            t = clock()
            body(rng)
            return clock() - t

        return run, n

    def loop(rng: range) -> None:
        for _ in rng:
            pass

    def announcer_change(rng: range) -> None:
        for _ in rng:
            change(0)

    def futex_wake_op(rng: range) -> None:
        for _ in rng:
            syscall(nr, word, FUTEX_WAKE_OP, WAKE_ALL, WAKE_ALL, word2, WAKE_OP_ALWAYS)

    def futex_wake(rng: range) -> None:
        for _ in rng:
            syscall(nr, word, FUTEX_WAKE, WAKE_ALL, None, None, 0)

    def word_read(rng: range) -> None:
        for _ in rng:
            waiters[0]

    def fence_only(rng: range) -> None:
        for _ in rng:
            fence(SEQ_CST)

    def fence_read(rng: range) -> None:
        for _ in rng:
            fence(SEQ_CST)
            waiters[0]

    out: Dict[str, Tuple[Round, int]] = {
        "announcer_change": timed(announcer_change, calls),
        "futex_wake_op": timed(futex_wake_op, calls),
        "futex_wake": timed(futex_wake, calls),
        "loop": timed(loop, calls),
        "word_read": timed(word_read, calls),
        "fence": timed(fence_only, calls),
        "fence_read": timed(fence_read, calls),
    }
    for n in REGISTRY_SIZES:
        states = scratch.registry(n)

        def scan(rng: range, states: memoryview = states, waiting: int = WAITING) -> None:
            for _ in rng:
                if waiting in states:
                    raise AssertionError("a registry entry is waiting")

        out[f"scan_{n}"] = timed(scan, max(100, calls * 8 // n) if n > 8 else calls)
    return out


def summary(per_call: Sequence[float]) -> Result:
    ordered = sorted(per_call)
    return {
        "median": percentile(ordered, 50.0),
        "q1": percentile(ordered, 25.0),
        "q3": percentile(ordered, 75.0),
        "min": ordered[0],
        "max": ordered[-1],
    }


def worker(impl: str, params: Result) -> Result:
    from pricefeed import _protocol

    running = _protocol.implementation().name
    if running != impl:
        return {"unavailable": f"asked for the {impl} implementation, this process runs {running}"}
    rounds, calls, micro_calls = params["rounds"], params["calls"], params["micro_calls"]
    out: Result = {"implementation": running, "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    feeds: List[Feed] = []
    scratch: Optional[Scratch] = None
    try:
        scratch = Scratch()
        fence = load_fence()
        for _ in range(3):
            feeds.append(Feed())
        base, quiet, checked = feeds
        quiet.suppress_wake()
        checked.check_instead(scratch, fence)
        plan: Dict[str, Tuple[Round, int]] = {
            "publish": (base.publish_round(calls), calls),
            "publish_nowake": (quiet.publish_round(calls), calls),
            "publish_check": (checked.publish_round(calls), calls),
        }
        plan.update(micro_rounds(scratch, fence, base.pub._wake.change, micro_calls))
        order = [key for key, _ in CONTENDERS]
        per_call: Dict[str, List[float]] = {key: [] for key in order}
        for key in order:  # a warm-up round each, not kept
            plan[key][0]()
        gc.collect()
        gc.disable()
        try:
            for r in range(rounds):
                turn = order[r % len(order) :] + order[: r % len(order)]
                for key in turn:
                    run, n = plan[key]
                    per_call[key].append(run() / n)
        finally:
            gc.enable()
        out["calls"] = {key: plan[key][1] for key in order}
        out["ns_per_call"] = {key: summary(per_call[key]) for key in order}
        out["rounds_ns_per_call"] = {key: [round(x, 1) for x in per_call[key]] for key in PUBLISH_KEYS}
        # Paired per round: the rounds share the machine's drift.
        base_r = per_call["publish"]
        out["saving_ns_paired"] = percentile(sorted(b - q for b, q in zip(base_r, per_call["publish_nowake"])), 50.0)
        out["check_ns_paired"] = percentile(
            sorted(c - q for c, q in zip(per_call["publish_check"], per_call["publish_nowake"])), 50.0
        )
    finally:
        for feed in feeds:
            feed.close()
        if scratch is not None:
            scratch.close()
        resources.cleanup()
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


def worker_main(impl: str, raw: str) -> int:
    try:
        result = worker(impl, json.loads(raw))
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result))
    return 0


# =================================================================================================
# The C equivalent of the check, as the C core would make it
# =================================================================================================
C_SOURCE = r"""
#define _GNU_SOURCE
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Page 0: the head (0), two futex words (64, 128), the waiters word (192); then a registry:
   a 64-byte header and ENTRIES entries of 256 bytes, the state word at byte 128 of each.
   Anonymous shared memory: shared futexes, as on a feed.
   Usage: wake_skip_c ITERATIONS ROUNDS; prints "name median min max" per line. */
#define ENTRIES 1024
static char *m;
#define HEAD (*(volatile uint64_t *)(m))
#define WORD ((uint32_t *)(m + 64))
#define WORD2 ((uint32_t *)(m + 128))
#define WAITERS (*(volatile uint64_t *)(m + 192))
#define STATE(k) (*(volatile uint64_t *)(m + 4096 + 64 + (size_t)(k) * 256 + 128))

static uint64_t now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static void wake_op(void) {  /* pf_core_wake_op */
    if (syscall(SYS_futex, WORD, FUTEX_WAKE_OP, INT_MAX, (void *)(uintptr_t)INT_MAX, WORD2,
                FUTEX_OP(FUTEX_OP_OR, 0, FUTEX_OP_CMP_GE, 0)) < 0) {
        perror("FUTEX_WAKE_OP");
        exit(1);
    }
}
static void store(uint64_t i) {
    HEAD = i;
    __atomic_store_n(WORD, (uint32_t)i & 0x7fffffffu, __ATOMIC_RELAXED);
}
static int scan(int n) {
    for (int k = 0; k < n; k++)
        if (STATE(k) == 1) return 1;
    return 0;
}

#define KINDS 7
static const char *names[KINDS] = {"store", "store_wake_op", "store_fence_read", "store_fence_scan_1",
                                   "store_fence_scan_8", "store_fence_scan_64", "store_fence_scan_1024"};
static const int scans[KINDS] = {0, 0, 0, 1, 8, 64, 1024};

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    long n = atol(argv[1]);
    int rounds = atoi(argv[2]);
    m = mmap(NULL, 4096 + 64 + ENTRIES * 256, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 1;
    for (int k = 0; k < ENTRIES; k++) STATE(k) = k % 3 == 0 ? 2 : 0;
    double *t = calloc((size_t)KINDS * (size_t)rounds, sizeof(double));
    uint64_t seq = 0;
    for (int r = -1; r < rounds; r++) {  /* round -1: warm-up */
        for (int j = 0; j < KINDS; j++) {
            int c = (j + (r < 0 ? 0 : r)) % KINDS;
            long iters = scans[c] > 64 ? n / 16 : n;
            uint64_t t0 = now();
            for (long i = 0; i < iters; i++) {
                store(++seq);
                if (c == 1) {
                    wake_op();
                } else if (c >= 2) {
                    __atomic_thread_fence(__ATOMIC_SEQ_CST);
                    if (c == 2 ? WAITERS != 0 : scan(scans[c])) wake_op();
                }
            }
            if (r >= 0) t[c * rounds + r] = (double)(now() - t0) / (double)iters;
        }
    }
    for (int c = 0; c < KINDS; c++) {
        qsort(t + c * rounds, (size_t)rounds, sizeof(double), cmp);
        printf("%s %.2f %.2f %.2f\n", names[c], t[c * rounds + rounds / 2], t[c * rounds], t[c * rounds + rounds - 1]);
    }
    return 0;
}
"""


def c_check(rounds: int, iterations: int, notes: List[str]) -> Optional[Result]:
    compiler = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)
    if compiler is None:
        notes.append("no C compiler on PATH: the C figures are skipped")
        return None
    with tempfile.TemporaryDirectory(prefix="pricefeed-wake-skip-") as folder:
        source = os.path.join(folder, "wake_skip.c")
        binary = os.path.join(folder, "wake_skip_c")
        with open(source, "w") as f:
            f.write(C_SOURCE)
        built = subprocess.run(
            [compiler, "-O2", "-std=gnu11", "-o", binary, source], capture_output=True, text=True, check=False
        )
        if built.returncode != 0:
            notes.append(f"{compiler} could not build the C check: {built.stderr.strip()[:300]}")
            return None
        done = subprocess.run(
            [binary, str(iterations), str(rounds)], capture_output=True, text=True, timeout=WORKER_TIMEOUT, check=False
        )
    if done.returncode != 0:
        notes.append(f"the C check failed ({done.returncode}): {done.stderr.strip()[:300]}")
        return None
    figures: Result = {}
    for line in done.stdout.split("\n"):
        parts = line.split()
        if len(parts) == 4:
            figures[parts[0]] = {"median": float(parts[1]), "min": float(parts[2]), "max": float(parts[3])}
    return {"compiler": f"{compiler} -O2", "iterations": iterations, "rounds": rounds, "ns_per_iteration": figures}


# =================================================================================================
# The parent: one worker per implementation, the table, the JSON
# =================================================================================================
def run_worker(impl: str, params: Result) -> Result:
    env = dict(os.environ)
    env.pop("PRICEFEED_PURE", None)
    if impl == "python":
        env["PRICEFEED_PURE"] = "1"
    done = subprocess.run(
        [sys.executable, SCRIPT, "--worker", impl, json.dumps(params)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=WORKER_TIMEOUT,
        check=False,
    )
    if done.returncode == 130:
        raise KeyboardInterrupt
    lines = done.stdout.strip().split("\n")
    if done.returncode != 0 or not lines[-1].startswith("{"):
        raise RuntimeError(f"the {impl} worker failed (exit {done.returncode})")
    result: Result = json.loads(lines[-1])
    return result


def derive(result: Result) -> None:
    """Ratios to the baseline, and what the figures mean for a skip."""
    figures = result["ns_per_call"]
    base = figures["publish"]["median"]
    loop = figures["loop"]["median"]
    for key, fig in figures.items():
        fig["ratio_to_publish"] = fig["median"] / base
        if key not in PUBLISH_KEYS and key not in ("loop", "announcer_change"):
            fig["net_of_loop"] = fig["median"] - loop
    saving = figures["publish"]["median"] - figures["publish_nowake"]["median"]
    check = figures["publish_check"]["median"] - figures["publish_nowake"]["median"]
    result["derived"] = {
        "saving_ns": saving,
        "saving_share_of_publish": saving / base,
        "check_in_publish_ns": check,
        "net_saving_with_check_ns": figures["publish"]["median"] - figures["publish_check"]["median"],
        "net_saving_with_check_share": 1 - figures["publish_check"]["median"] / base,
        "fence_read_net_ns": figures["fence_read"]["median"] - loop,
        **{
            f"fence_scan_{n}_net_ns": figures["fence"]["median"] + figures[f"scan_{n}"]["median"] - 2 * loop
            for n in REGISTRY_SIZES
        },
    }


def environment() -> Result:
    from pricefeed._bench.report import checkout, machine

    return {**machine(), **checkout(str(ROOT))}


def ns(value: float) -> str:
    return f"{value:,.0f} ns" if value >= 100 else f"{value:.1f} ns"


def render(doc: Result) -> List[str]:
    workers = {k: v for k, v in doc["workers"].items() if "ns_per_call" in v}
    heads = [IMPLEMENTATIONS[k] for k in workers]
    width = max(len(label) for _, label in CONTENDERS) + 2
    out = [
        "",
        f"Per call, median of {doc['rounds']} interleaved rounds; ratio to publish() in the same process.",
        "".ljust(width) + "".join(h.ljust(26) for h in heads),
    ]
    for key, label in CONTENDERS:
        cells = []
        for result in workers.values():
            fig = result["ns_per_call"][key]
            cells.append(f"{ns(fig['median']):>11} {fig['ratio_to_publish']:6.3f}x".ljust(26))
        out.append(label.ljust(width) + "".join(cells))
    out.append("")
    for impl, result in workers.items():
        d = result["derived"]
        out.append(
            f"{IMPLEMENTATIONS[impl]}: skipping the wake saves {ns(d['saving_ns'])} a change "
            f"({100 * d['saving_share_of_publish']:.1f}% of a publish; paired per round: "
            f"{ns(result['saving_ns_paired'])}); the Python check put in its place costs "
            f"{ns(d['check_in_publish_ns'])}, net {100 * d['net_saving_with_check_share']:.1f}%."
        )
    c = doc.get("c_check")
    if c:
        figs = c["ns_per_iteration"]
        base = figs["store_wake_op"]["median"]
        out += [
            "",
            f"In C ({c['compiler']}), per iteration, median of {c['rounds']} rounds; ratio to store + FUTEX_WAKE_OP:",
        ]
        for key, fig in figs.items():
            out.append(f"  {key.ljust(26)}{ns(fig['median']):>11} {fig['median'] / base:6.3f}x")
    for note in doc["notes"]:
        out.append(f"note: {note}")
    return out


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench/wake_skip.py", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and calls (under 30 s)")
    p.add_argument("--json", default="bench-wake-skip.json", metavar="PATH", help="where to write every figure")
    p.add_argument("--impl", default="c,python", help="c, python or both (comma-separated; default both)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per implementation (default 61, quick 15)")
    p.add_argument("--calls", type=int, help="publish() calls per round (default 20000, quick 10000)")
    opts = p.parse_args(argv)
    opts.rounds = opts.rounds or (15 if opts.quick else 61)
    opts.calls = opts.calls or (10000 if opts.quick else 20000)
    opts.calls += opts.calls % 2  # two prices, alternating
    opts.impl = [x.strip() for x in opts.impl.split(",") if x.strip()]
    unknown = [x for x in opts.impl if x not in IMPLEMENTATIONS]
    if unknown:
        p.error(f"--impl takes c and python: got {', '.join(unknown)}")
    return opts


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = parse(argv)
    notes: List[str] = []
    doc: Result = {
        "benchmark": "publish with and without the wake-up system call, and the check that could replace it",
        "quick": opts.quick,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "rounds": opts.rounds,
        "notes": notes,
        "workers": {},
    }
    code = 0
    try:
        if not sys.platform.startswith("linux") or SYS_FUTEX is None:
            raise RuntimeError("Linux on x86-64 or aarch64 only, like the other benchmarks")
        doc["environment"] = environment()
        params = {"rounds": opts.rounds, "calls": opts.calls, "micro_calls": opts.calls}
        for impl in opts.impl:
            progress(f"{IMPLEMENTATIONS[impl]}: {opts.rounds} rounds of {opts.calls} calls per contender")
            result = run_worker(impl, params)
            if "ns_per_call" in result:
                derive(result)
            else:
                notes.append(f"{IMPLEMENTATIONS[impl]}: {result.get('unavailable')}")
            doc["workers"][impl] = result
        progress("C: the same check as the C core would make it")
        doc["c_check"] = c_check(opts.rounds, 20_000 if opts.quick else 100_000, notes)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        print(f"scripts/bench/wake_skip.py: the run broke: {exc}", file=sys.stderr)
        doc["error"] = str(exc)
        code = 1
    doc["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if code == 0:
        print("\n".join(render(doc)))
    with open(opts.json, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"figures written to {opts.json}", file=sys.stderr)
    return code


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
