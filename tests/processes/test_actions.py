"""The action pool with real processes and real commands: `pricefeed subscribe --exec` with
its pool options, and the library's act()/aact(). Each action appends a line to a log (with
O_APPEND, `>>`), and the tests read the log, the state file, the exit code and stderr, and
count the pool's worker processes from /proc, never from the pool's own counters."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest
from conftest import LINUX, Proc, cli, posix_only, wait_until

from pricefeed import InvalidInput, Publisher, Quote, Subscriber
from pricefeed._act import aact, act
from pricefeed._errors import ActionFailed

linux_only = pytest.mark.skipif(not LINUX, reason="Linux-specific: it counts worker processes in /proc")
pytestmark = posix_only  # sh, signals and process groups

LINE = 'echo "$PRICEFEED_SYMBOL $PRICEFEED_SEQ $PRICEFEED_PRICE $PRICEFEED_ATTEMPT" >> {log}'


# -- helpers -------------------------------------------------------------------------------------------
def workers_of(pid: int) -> Set[int]:
    """The pool's worker processes: children of ``pid`` running pricefeed/_act/worker.py."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"_act/worker.py" in cmdline:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """True while any process of process group ``pgid`` lives."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def rows(log: Path) -> List[List[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def start(args: List[object], procs: List[Proc], workers: int = 1) -> Proc:
    """Start a subscriber and wait until its pool has ``workers`` workers (its start point is
    taken before the first one is spawned)."""
    sub = Proc(cli(*args))
    procs.append(sub)
    if LINUX:
        wait_until(lambda: len(workers_of(sub.pid)) >= workers or sub.p.poll() is not None, 30, "workers to start")
    else:
        time.sleep(1.0)
    return sub


def kill_leftovers(pids: Set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def state_of(path: Path) -> Dict[str, object]:
    data: Dict[str, object] = json.loads(path.read_text())
    return data


# -- order and parallelism ---------------------------------------------------------------------------------
@linux_only
def test_parallel_actions_keep_each_symbols_order_and_act_on_every_change_once(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    log = tmp_path / "log"
    symbols, per_symbol = ["A", "B", "C", "D"], 500
    total = len(symbols) * per_symbol
    cmd = f"sleep 0.00$((PRICEFEED_SEQ % 5)); {LINE.format(log=log)}"
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, "--jobs", "4", "--queue", "100000", "--count", total,
                     "--timeout", "60"], procs, workers=4)  # fmt: skip
        seen_workers = set(workers_of(sub.pid))
        expected: Dict[int, Tuple[str, float]] = {}
        for i in range(per_symbol):
            for s in symbols:
                pub.publish(s, float(i + 1))
                expected[len(expected) + 1] = (s, float(i + 1))
            if i % 50 == 0:
                seen_workers |= workers_of(sub.pid)
                time.sleep(0.01)
        code, _, err = sub.finish(timeout=120)
    assert code == 0, err
    assert len(seen_workers) == 4  # four workers, never more, none replaced
    got = rows(log)
    assert sorted(int(r[1]) for r in got) == list(range(1, total + 1)), "each change acted on exactly once"
    last: Dict[str, int] = {}
    for symbol, seq, price, attempt in got:
        assert int(seq) > last.get(symbol, 0), f"{symbol} ran seq {seq} after {last.get(symbol)}"
        last[symbol] = int(seq)
        assert (symbol, float(price)) == expected[int(seq)] and attempt == "1"
    assert [int(r[1]) for r in got] != list(range(1, total + 1)), "the actions ran in parallel, out of feed order"


@linux_only
def test_conflation_gives_a_busy_symbol_only_its_newest_value(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    log = tmp_path / "log"
    cmd = f"sleep 0.03; {LINE.format(log=log)}"
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, "--jobs", "2", "--conflate", "--timeout", "60"], procs, 2)
        for i in range(1, 301):
            pub.publish("A", float(i))
            pub.publish("B", float(-i))
            time.sleep(0.001)
        wait_until(lambda: {("A", "300.0"), ("B", "-300.0")} <= {(r[0], r[2]) for r in rows(log)}, 30, "the newest")
        sub.p.send_signal(signal.SIGTERM)
        code, _, err = sub.finish(timeout=30)
    assert code == 143, err
    got = rows(log)
    assert len(got) < 300, "conflation acted on fewer changes than were published"
    for symbol, sign in (("A", 1), ("B", -1)):
        values = [sign * float(r[2]) for r in got if r[0] == symbol]
        assert values == sorted(set(values)), f"{symbol}: an older value after a newer one: {values}"


# -- the elastic pool ----------------------------------------------------------------------------------------
@linux_only
def test_the_pool_grows_under_load_and_shrinks_when_idle(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    log = tmp_path / "log"
    cmd = f"sleep 0.6; {LINE.format(log=log)}"
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, "--jobs", "1:4", "--idle", "0.4", "--timeout", "60"], procs, 1)
        counts = [len(workers_of(sub.pid))]
        for s in "ABCDEFGH":
            pub.publish(s, 1.0)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            counts.append(len(workers_of(sub.pid)))
            if len(rows(log)) == 8 and counts[-1] == 1:
                break
            time.sleep(0.02)
        sub.p.send_signal(signal.SIGTERM)
        code, _, err = sub.finish(timeout=30)
    assert code == 143, err
    assert counts[0] == 1 and max(counts) == 4, counts
    assert min(counts) >= 1 and counts[-1] == 1, "it shrank back to MIN, never below"
    peak = counts.index(4)
    assert 1 in counts[peak:], "it shrank after the load"
    assert len(rows(log)) == 8


# -- kill -9 and --state -----------------------------------------------------------------------------------
@linux_only
def test_kill_9_and_restart_with_state_never_acts_twice_but_on_the_change_in_flight(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    log, state = tmp_path / "log", tmp_path / "st.json"
    rng = random.Random(7)
    symbols = ["A", "B", "C"]
    published = 0
    recorded_at_kill: List[Dict[str, int]] = []
    gaps: List[Tuple[int, int]] = []
    leftovers: Set[int] = set()

    def subscriber(run: int) -> Proc:
        cmd = f'echo "{run} $PRICEFEED_SYMBOL $PRICEFEED_SEQ" >> {log}; sleep 0.01'
        return start(["subscribe", feed, "--exec", cmd, "--jobs", "3", "--state", state], procs, 3)

    def note_gaps(err: str) -> None:
        for line in err.splitlines():
            if line.startswith("# gap "):
                fields = dict(kv.split("=") for kv in line.split()[2:])
                gaps.append((int(fields["first_seq"]), int(fields["last_seq"])))

    try:
        with Publisher.create(feed) as pub:
            for run in range(50):
                sub = subscriber(run)
                workers = workers_of(sub.pid)
                leftovers |= workers
                for _ in range(3):
                    for s in symbols:
                        published += 1
                        pub.publish(s, float(published))
                    time.sleep(0.004)
                time.sleep(rng.uniform(0.0, 0.06))
                os.kill(sub.pid, signal.SIGKILL)
                sub.p.wait(timeout=10)
                # Its workers die with it (PR_SET_PDEATHSIG), killing the actions in flight.
                wait_until(lambda ws=workers: not any(alive(w) for w in ws), 10, "workers to die with the subscriber")
                note_gaps(sub.finish(timeout=10)[2])
                recorded = state_of(state)["symbols"] if state.exists() else {}
                recorded_at_kill.append(dict(recorded))  # type: ignore[arg-type]
            pub.end()
        final = subscriber(50)
        code, _, err = final.finish(timeout=60)
        assert code == 0, err
        note_gaps(err)
    finally:
        kill_leftovers(leftovers)

    entries = [(int(run), symbol, int(seq)) for run, symbol, seq in rows(log)]
    seen: Dict[Tuple[str, int], List[int]] = {}
    in_flight: Set[Tuple[int, str, int]] = set()
    for run, symbol, seq in entries:
        seen.setdefault((symbol, seq), []).append(run)
        if run < 50 and seq > recorded_at_kill[run].get(symbol, 0):
            in_flight.add((run, symbol, seq))
    for run in range(50):
        for s in symbols:
            flying = [seq for r, sym, seq in in_flight if r == run and sym == s]
            assert len(flying) <= 1, f"run {run} had {flying} of {s} in flight: more than one per symbol"
    repeated = {key: runs for key, runs in seen.items() if len(runs) > 1}
    for (symbol, seq), runs in repeated.items():
        for run in runs[:-1]:
            # Each crash may catch the same change in flight again: every run but the last
            # must have been killed while it was in flight there.
            assert (run, symbol, seq) in in_flight, f"{symbol} {seq} acted on in runs {runs}, not in flight in {run}"
    acted = {seq for _, seq in seen}
    covered = {seq for first, last in gaps for seq in range(first, last + 1)}
    missing = set(range(1, published + 1)) - acted - covered
    assert not missing, f"changes never acted on nor reported in a gap: {sorted(missing)[:20]}"
    assert len(repeated) <= 50 * len(symbols)
    assert repeated, "some kill caught an action in flight (else the test proved nothing)"


# -- failures ------------------------------------------------------------------------------------------------
@linux_only
def test_a_worker_killed_mid_action_is_reported_replaced_and_counted(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    log, pidfile = tmp_path / "log", tmp_path / "pid"
    cmd = f'if [ "$PRICEFEED_SYMBOL" = A ]; then echo $$ > {pidfile}; sleep 30; fi; {LINE.format(log=log)}'
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, "--on-error", "skip", "--count", "2", "--timeout", "60"], procs)
        (first,) = workers_of(sub.pid)
        pub.publish("A", 1.0)
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the action to start")
        action = int(pidfile.read_text())
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: workers_of(sub.pid) - {first}, 30, "a replacement worker")
        pub.publish("B", 2.0)
        code, _, err = sub.finish(timeout=60)
    assert code == 0, err
    assert (
        f"pricefeed: action for A seq 1 lost its worker (pid {first} was killed by signal 9 (SIGKILL)); given up" in err
    )
    assert rows(log) == [["B", "2", "2.0", "1"]]
    wait_until(lambda: not group_alive(action), 10, "the orphaned action's group to be killed")


@linux_only
def test_a_worker_killed_while_idle_is_replaced_and_no_change_fails(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    log = tmp_path / "log"
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", LINE.format(log=log), "--jobs", "2", "--count", "4",
                     "--timeout", "60"], procs, 2)  # fmt: skip
        victims = workers_of(sub.pid)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(workers_of(sub.pid) - victims) == 2, 30, "two new workers")
        for i in range(1, 5):
            pub.publish("AB"[i % 2], float(i))
        code, _, err = sub.finish(timeout=60)
    assert code == 0, err
    assert "lost its worker" not in err
    assert sorted(int(r[1]) for r in rows(log)) == [1, 2, 3, 4]


@linux_only
def test_an_action_that_hangs_is_killed_with_its_group(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    log, pidfile = tmp_path / "log", tmp_path / "pid"
    cmd = f'if [ "$PRICEFEED_SEQ" = 1 ]; then echo $$ > {pidfile}; echo hanging; sleep 30 & wait; fi; {LINE.format(log=log)}'
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, "--timeout-action", "0.5", "--on-error", "skip",
                     "--count", "2", "--timeout", "60"], procs)  # fmt: skip
        pub.publish("A", 1.0)
        pub.publish("A", 2.0)
        begun = time.monotonic()
        code, _out, err = sub.finish(timeout=60)
    assert code == 0, err
    assert time.monotonic() - begun < 20
    assert (
        "pricefeed: action for A seq 1 timed out after 0.5 s (killed); given up; its output ended with:\n    hanging"
        in err
    )
    assert rows(log) == [["A", "2", "2.0", "1"]]
    assert not group_alive(int(pidfile.read_text())), "the whole group (the shell and its sleep) was killed"


FAIL_ON_2 = 'if [ "$PRICEFEED_SEQ" = 2 ]; then echo boom; echo bad >&2; exit 3; fi'


def reported_with_tail(err: str, report: str) -> bool:
    """``report`` is on stderr, followed by the tail of both of the action's outputs (stdout's
    and stderr's lines, each copied as it came, in either order)."""
    tails = [f"{report}; its output ended with:\n    {a}\n    {b}" for a, b in (("boom", "bad"), ("bad", "boom"))]
    return any(tail in err for tail in tails)


def test_on_error_stop_exits_15_and_the_state_keeps_what_completed(feed: str, tmp_path: Path) -> None:
    log, state = tmp_path / "log", tmp_path / "st.json"
    with Publisher.create(feed) as pub:
        for i in range(1, 5):
            pub.publish("AB"[i % 2], float(i))
    with Subscriber(feed) as sub:
        incarnation = sub.status().incarnation
    state.write_text(json.dumps({"format": "pricefeed-actions", "version": 1, "feed": feed,
                                 "incarnation": incarnation, "resume": 0, "symbols": {}}))  # fmt: skip
    cmd = f"{FAIL_ON_2}; {LINE.format(log=log)}"
    p = Proc(cli("subscribe", feed, "--exec", cmd, "--on-error", "stop", "--state", state, "--timeout", "30"))
    try:
        code, _out, err = p.finish(timeout=60)
    finally:
        p.kill()
    assert code == 15, err
    assert reported_with_tail(err, "pricefeed: action for A seq 2 exited 3"), err
    assert err.rstrip().endswith("pricefeed: action for A seq 2 exited 3; stopped (on error: stop)")
    assert "Traceback" not in err
    assert rows(log) == [["B", "1", "1.0", "1"]]
    saved = state_of(state)
    assert saved["symbols"] == {"B": 1} and saved["resume"] == 1


@pytest.mark.parametrize("policy", ["skip", "retry:2:0.01"])
def test_on_error_skip_and_retry(feed: str, procs: List[Proc], tmp_path: Path, policy: str) -> None:
    log = tmp_path / "log"
    cmd = f"{LINE.format(log=log)}; {FAIL_ON_2}"
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, "--on-error", policy, "--count", "3", "--timeout", "60"], procs)
        for i in range(1, 4):
            pub.publish("A", float(i))
        code, _, err = sub.finish(timeout=60)
    assert code == 0, err
    attempts = [r[3] for r in rows(log) if r[1] == "2"]
    if policy == "skip":
        assert attempts == ["1"]
        assert reported_with_tail(err, "pricefeed: action for A seq 2 exited 3; given up"), err
    else:
        assert attempts == ["1", "2", "3"]
        assert "action for A seq 2 exited 3 (attempt 1 of 3); retrying in 0.01 s" in err
        assert "action for A seq 2 exited 3 (attempt 2 of 3); retrying in 0.02 s" in err
        assert "action for A seq 2 exited 3 (attempt 3 of 3); given up" in err
    assert [r[1] for r in rows(log) if r[1] != "2"] == ["1", "3"]


# -- graceful stop -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_lets_the_running_action_finish_and_writes_the_state(
    feed: str, procs: List[Proc], tmp_path: Path, sig: int, code: int
) -> None:
    log, state = tmp_path / "log", tmp_path / "st.json"
    cmd = f'echo "start $PRICEFEED_SEQ" >> {log}; sleep 0.5; echo "end $PRICEFEED_SEQ" >> {log}'
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, "--state", state], procs)
        pub.publish("A", 1.0)
        wait_until(lambda: ["start", "1"] in rows(log), 30, "the action to start")
        pub.publish("A", 2.0)  # taken or not, it does not start after the signal
        sub.p.send_signal(sig)
        got, _, err = sub.finish(timeout=30)
    assert got == code, err
    assert rows(log) == [["start", "1"], ["end", "1"]]
    saved = state_of(state)
    assert saved["symbols"] == {"A": 1} and saved["resume"] == 1


def test_a_grace_shorter_than_the_action_kills_it_and_does_not_mark_it_done(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    log, state = tmp_path / "log", tmp_path / "st.json"
    cmd = f'echo "start $PRICEFEED_SEQ" >> {log}; sleep 5; echo "end $PRICEFEED_SEQ" >> {log}'
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        sub = start(["subscribe", feed, "--exec", cmd, "--state", state, "--grace", "0.2"], procs)
        pub.publish("A", 2.0)
        wait_until(lambda: ["start", "2"] in rows(log), 30, "the action to start")
        begun = time.monotonic()
        sub.p.send_signal(signal.SIGTERM)
        got, _, err = sub.finish(timeout=30)
    assert got == 143, err
    assert time.monotonic() - begun < 4
    assert rows(log) == [["start", "2"]]
    assert "pricefeed: action for A seq 2 was killed by signal 9 (SIGKILL) at the stop: not done" in err
    saved = state_of(state)
    assert saved["symbols"] == {} and saved["resume"] == 1


def test_changes_queued_at_a_stop_are_reported_and_kept_for_the_next_run(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    """Changes taken into a busy symbol's queue and never started are named at the stop, not
    dropped silently; the state file's resume point stays below them."""
    log, state = tmp_path / "log", tmp_path / "st.json"
    cmd = f'echo "start $PRICEFEED_SYMBOL $PRICEFEED_SEQ" >> {log}; sleep 5'
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, "--jobs", "2", "--state", state, "--grace", "0.2"], procs, 2)
        pub.publish("A", 1.0)
        wait_until(lambda: ["start", "A", "1"] in rows(log), 30, "the action to start")
        pub.publish("A", 2.0)
        pub.publish("A", 3.0)
        time.sleep(0.5)  # the second worker is free, so the pool takes them into A's queue
        sub.p.send_signal(signal.SIGTERM)
        got, _, err = sub.finish(timeout=30)
    assert got == 143, err
    assert "stopped with 2 changes queued and not run (seqs 2 to 3; A); the state file keeps them" in err, err
    assert rows(log) == [["start", "A", "1"]]
    assert state_of(state)["resume"] == 0


# -- the library twin ---------------------------------------------------------------------------------------
def _resume_from_start(feed: str, path: Path) -> str:
    """A state file that resumes from the feed's first change: the changes published before
    act() is called are then acted on, with no race against its start."""
    with Subscriber(feed) as sub:
        incarnation = sub.status().incarnation
    path.write_text(json.dumps({"format": "pricefeed-actions", "version": 1, "feed": feed,
                                "incarnation": incarnation, "resume": 0, "symbols": {}}))  # fmt: skip
    return str(path)


def test_act_with_a_sync_handler_keeps_order_per_symbol_in_parallel_threads(feed: str, tmp_path: Path) -> None:
    with Publisher.create(feed) as pub:
        for i in range(300):
            pub.publish("ABC"[i % 3], float(i))
    seen: List[Tuple[str, int, int]] = []
    lock = threading.Lock()

    def handler(q: Quote) -> None:
        time.sleep(random.uniform(0, 0.003))
        with lock:
            seen.append((q.symbol, q.seq, threading.get_ident()))

    with Subscriber(feed) as sub:
        result = act(sub, handler, jobs=3, count=300, state=_resume_from_start(feed, tmp_path / "st.json"))
    assert (result.done, result.failed, result.stopped) == (300, 0, "count")
    assert sorted(seq for _, seq, _ in seen) == list(range(1, 301))
    for s in "ABC":
        seqs = [seq for sym, seq, _ in seen if sym == s]
        assert seqs == sorted(seqs)
    assert len({t for _, _, t in seen}) == 3


def test_aact_with_an_async_handler_conflates_and_retries(feed: str, tmp_path: Path) -> None:
    with Publisher.create(feed) as pub:
        for i in range(1, 101):
            pub.publish("A", float(i))
            pub.publish("B", float(i))
        pub.end()
    seen: List[Tuple[str, float]] = []
    tries: Dict[int, int] = {}

    async def handler(q: Quote) -> None:
        await asyncio.sleep(0.01)
        tries[q.seq] = tries.get(q.seq, 0) + 1
        if q.symbol == "B" and tries[q.seq] < 3:
            raise RuntimeError("flaky")
        seen.append((q.symbol, q.price))

    reports: List[str] = []
    with Subscriber(feed) as sub:
        state = _resume_from_start(feed, tmp_path / "st.json")
        result = asyncio.run(aact(sub, handler, conflate=True, on_error="retry:2:0.01", state=state,
                                  report=reports.append))  # fmt: skip
    assert result.stopped == "ended" and result.failed == 0 and result.retried >= 2
    for s in "AB":
        values = [v for sym, v in seen if sym == s]
        assert values == sorted(set(values)) and values[-1] == 100.0
    assert any("raised RuntimeError: flaky (attempt 1 of 3); retrying" in r for r in reports), reports


def test_act_resumes_from_its_state_without_acting_twice(feed: str, tmp_path: Path) -> None:
    with Publisher.create(feed) as pub:
        for i in range(1, 21):
            pub.publish("AB"[i % 2], float(i))
    seen: List[int] = []
    with Subscriber(feed) as sub:
        state = _resume_from_start(feed, tmp_path / "st.json")
        first = act(sub, lambda q: seen.append(q.seq), jobs=2, count=8, state=state)
    with Subscriber(feed) as sub:
        second = act(sub, lambda q: seen.append(q.seq), jobs=2, count=12, state=state)
    assert first.done + second.done == 20 - second.skipped
    assert sorted(seen) == list(range(1, 21)), seen
    saved = state_of(Path(state))
    assert saved["symbols"] == {"A": 20, "B": 19} and saved["resume"] == 20


def test_cancelling_the_aact_task_is_a_graceful_stop(feed: str, tmp_path: Path) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
    done: List[int] = []

    async def main(state: str) -> float:
        begun = asyncio.Event()

        async def handler(q: Quote) -> None:
            begun.set()
            await asyncio.sleep(0.3)
            done.append(q.seq)

        with Subscriber(feed) as sub:
            task = asyncio.ensure_future(aact(sub, handler, state=state))
            await asyncio.wait_for(begun.wait(), 30)
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
            return time.monotonic() - t0

    state = _resume_from_start(feed, tmp_path / "st.json")
    waited = asyncio.run(main(state))
    assert done == [1], "the running handler finished within the grace period"
    assert 0.1 < waited < 5
    assert state_of(Path(state))["symbols"] == {"A": 1}


def test_a_sync_handler_with_a_timeout_is_refused_and_an_async_one_is_cancelled(feed: str, tmp_path: Path) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        pub.publish("A", 2.0)
    with Subscriber(feed) as sub, pytest.raises(InvalidInput, match="Python cannot kill a thread"):
        act(sub, lambda q: None, timeout=1)

    async def slow(q: Quote) -> None:
        await asyncio.sleep(0 if q.seq == 2 else 30)

    reports: List[str] = []
    with Subscriber(feed) as sub:
        state = _resume_from_start(feed, tmp_path / "st.json")
        result = act(sub, slow, timeout=0.2, on_error="skip", count=2, state=state, report=reports.append)
    assert (result.done, result.failed) == (1, 1)
    assert reports == ["action for A seq 1 timed out after 0.2 s (killed); given up"]
    with Subscriber(feed) as sub, pytest.raises(ActionFailed) as caught:
        act(sub, slow, timeout=0.2, state=_resume_from_start(feed, tmp_path / "other.json"), count=1)
    assert caught.value.exit_code == 15 and caught.value.result is not None


# -- found in review ---------------------------------------------------------------------------------------
def test_an_action_failing_during_the_grace_with_retries_left_is_not_recorded_as_done(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    # The policy had not given up on it (retries were left): the stop cut it short, so it is
    # unfinished, like one whose retry waits at the stop, and the next run tries it again.
    log, state = tmp_path / "log", tmp_path / "st.json"
    cmd = f'echo "start $PRICEFEED_SEQ" >> {log}; sleep 0.6; exit 3'
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, "--state", state, "--on-error", "retry:3:0.1"], procs)
        pub.publish("A", 1.0)
        wait_until(lambda: ["start", "1"] in rows(log), 30, "the action to start")
        sub.p.send_signal(signal.SIGTERM)
        got, _, err = sub.finish(timeout=30)
    assert got == 143, err
    assert rows(log) == [["start", "1"]]
    assert "given up" not in err, err
    assert "pricefeed: action for A seq 1 exited 3 (attempt 1 of 4) at the stop: not done" in err, err
    saved = state_of(state)
    assert saved["symbols"] == {} and saved["resume"] == 0


def test_under_conflate_a_retry_is_dropped_for_a_newer_value_that_came_during_its_backoff(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    log = tmp_path / "log"
    cmd = f'{LINE.format(log=log)}; if [ "$PRICEFEED_SEQ" = 1 ]; then exit 3; fi'
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, "--conflate", "--on-error", "retry:2:1.5", "--count", "2",
                     "--timeout", "60"], procs)  # fmt: skip
        pub.publish("A", 1.0)
        wait_until(lambda: len(rows(log)) == 1, 30, "the first attempt")
        wait_until(lambda: "retrying in 1.5 s" in sub.stderr, 30, "its failure to be reported")
        pub.publish("A", 2.0)  # during the backoff: the stale value must not run again
        code, _, err = sub.finish(timeout=60)
    assert code == 0, err
    assert rows(log) == [["A", "1", "1.0", "1"], ["A", "2", "2.0", "1"]], err
    assert "pricefeed: action for A seq 1 not retried: a newer value of A came during the backoff" in err


@linux_only
def test_a_timed_out_action_whose_worker_does_not_answer_the_kill_is_killed_and_the_worker_replaced(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    log, pidfile = tmp_path / "log", tmp_path / "pid"
    cmd = f'if [ "$PRICEFEED_SEQ" = 1 ]; then echo $$ > {pidfile}; sleep 30; fi; {LINE.format(log=log)}'
    stopped: Set[int] = set()
    try:
        with Publisher.create(feed) as pub:
            sub = start(["subscribe", feed, "--exec", cmd, "--timeout-action", "0.5", "--on-error", "skip",
                         "--count", "2", "--timeout", "60"], procs)  # fmt: skip
            (worker,) = workers_of(sub.pid)
            pub.publish("A", 1.0)
            wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the action to start")
            action = int(pidfile.read_text())
            os.kill(worker, signal.SIGSTOP)  # a worker that cannot answer: the pool must not wait on it
            stopped.add(worker)
            wait_until(lambda: not group_alive(action), 15, "the timed-out action's group to be killed")
            pub.publish("B", 2.0)
            code, _, err = sub.finish(timeout=30)
        assert code == 0, err
        assert "action for A seq 1 timed out after 0.5 s and did not end when killed" in err, err
        assert rows(log) == [["B", "2", "2.0", "1"]], err
        wait_until(lambda: not alive(worker), 10, "the stuck worker to be killed")
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass


def test_a_sync_handler_still_running_after_the_stop_is_reported_and_counted_unfinished(
    feed: str, tmp_path: Path
) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        pub.publish("B", 2.0)
    release = threading.Event()
    started = threading.Event()

    def handler(q: Quote) -> None:
        if q.symbol == "A":
            started.set()
            release.wait(30)  # a thread cannot be killed: it outlasts the grace and the kill
        else:
            started.wait(30)
            raise RuntimeError("boom")

    reports: List[str] = []
    try:
        with Subscriber(feed) as sub, pytest.raises(ActionFailed) as caught:
            act(sub, handler, jobs=2, grace=0.2, count=2, report=reports.append,
                state=_resume_from_start(feed, tmp_path / "st.json"))  # fmt: skip
    finally:
        release.set()
    result = caught.value.result
    assert result is not None and (result.done, result.failed, result.unfinished) == (0, 1, 1), result
    expected = "action for A seq 1 did not end when killed at the stop: not done"
    assert any(r.startswith(expected) for r in reports), reports
    assert state_of(tmp_path / "st.json")["symbols"] == {}


@pytest.mark.parametrize("end", ["--count", "publish --end"])
def test_a_signal_while_the_last_actions_run_is_still_a_stop_with_its_exit_code(
    feed: str, procs: List[Proc], tmp_path: Path, end: str
) -> None:
    # --count or the end of the feed drains what was taken; a SIGTERM meanwhile is a stop all
    # the same: exit 143, not 0 (nor the end of the feed announced).
    log = tmp_path / "log"
    cmd = f'echo "start $PRICEFEED_SEQ" >> {log}; sleep 1; echo "end $PRICEFEED_SEQ" >> {log}'
    args = ["--jobs", "2", *(["--count", "1"] if end == "--count" else [])]  # room to read the end
    with Publisher.create(feed) as pub:
        sub = start(["subscribe", feed, "--exec", cmd, *args, "--timeout", "60"], procs)
        pub.publish("A", 1.0)
        if end != "--count":
            pub.end()
        wait_until(lambda: ["start", "1"] in rows(log), 30, "the action to start")
        sub.p.send_signal(signal.SIGTERM)
        code, _, err = sub.finish(timeout=30)
    assert code == 143, err
    assert rows(log) == [["start", "1"], ["end", "1"]]
    assert "# ended" not in err
