"""The action pool's pure parts: the scheduler's rules (pricefeed/_act/schedule.py), the
option values (options.py) and the state file (state.py), corrupt and hostile ones included."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

import pytest

from pricefeed import InvalidInput, Quote
from pricefeed._act import state as S
from pricefeed._act.options import (
    DEFAULT_BACKOFF,
    MAX_BACKOFF,
    OnError,
    parse_jobs,
    parse_on_error,
    parse_queue,
    parse_seconds,
)
from pricefeed._act.schedule import Schedule


def q(symbol: str, seq: int, price: float = 1.0, changed: int = 1) -> Quote:
    return Quote(symbol, price, 0, seq)._with_changed(changed)


def drain(s: Schedule) -> List[int]:
    """Pop and finish everything, one at a time: the order of the sequences run."""
    order = []
    while True:
        item = s.pop()
        if item is None:
            return order
        order.append(item.seq)
        s.finish(item)


# -- the scheduler -----------------------------------------------------------------------------------
def test_one_worker_runs_in_feed_order_across_symbols() -> None:
    s = Schedule(10, False)
    for seq, sym in enumerate("ABACBA", 1):
        s.offer(q(sym, seq))
    assert drain(s) == [1, 2, 3, 4, 5, 6]


def test_a_symbol_runs_one_at_a_time_and_the_lowest_ready_seq_goes_first() -> None:
    s = Schedule(10, False)
    for seq, sym in [(1, "A"), (2, "A"), (3, "B"), (4, "C")]:
        s.offer(q(sym, seq))
    assert s.ready_count() == 3
    a1 = s.pop()
    assert a1 is not None and a1.seq == 1
    assert s.ready_count() == 2  # A runs; its 2 is not ready
    b = s.pop()  # A is running: its 2 waits; B's 3 is the lowest ready
    c = s.pop()
    assert (b and b.seq, c and c.seq) == (3, 4)
    assert s.pop() is None and s.running == 3 and s.ready_count() == 0
    s.finish(a1)
    assert s.ready_count() == 1
    a2 = s.pop()
    assert a2 is not None and a2.seq == 2


def test_overflow_drops_the_oldest_and_reports_count_and_range_per_symbol() -> None:
    s = Schedule(2, False)
    s.offer(q("A", 1))
    running = s.pop()
    assert running is not None
    for seq in range(2, 8):
        s.offer(q("A", seq))
        s.offer(q("B", seq + 100))
    assert s.dropped == 8 and s.queued == 4
    drops = {d.symbol: (d.count, d.first, d.last) for d in s.take_drops()}
    assert drops == {"A": (4, 2, 5), "B": (4, 102, 105)}
    assert s.take_drops() == []
    s.finish(running)
    assert drain(s) == [6, 7, 106, 107]


def test_conflation_keeps_only_the_newest_and_merges_the_changed_fields() -> None:
    s = Schedule(100, True)
    s.offer(q("A", 1))
    running = s.pop()
    assert running is not None
    s.offer(q("A", 2, 2.0, changed=0b01))
    s.offer(q("A", 3, 3.0, changed=0b10))
    s.offer(q("A", 4, 4.0, changed=0b10))
    assert (s.superseded, s.dropped, s.queued) == (2, 0, 1)
    s.finish(running)
    item = s.pop()
    assert item is not None and (item.seq, item.quote.price, item.quote.changed_mask) == (4, 4.0, 0b11)


def test_low_water_is_below_every_open_change() -> None:
    s = Schedule(10, False)
    s.note(10)
    assert s.low_water() == 10
    for seq, sym in [(11, "A"), (12, "B"), (13, "A")]:
        s.offer(q(sym, seq))
    assert s.low_water() == 10
    a = s.pop()
    b = s.pop()
    assert a is not None and b is not None
    s.finish(b)
    assert s.low_water() == 10  # 11 still runs
    s.finish(a)
    assert s.low_water() == 12  # 13 waits
    assert drain(s) == [13]
    assert s.low_water() == 13


def test_an_unfinished_change_holds_the_low_water_mark() -> None:
    s = Schedule(10, False)
    s.offer(q("A", 5))
    s.offer(q("B", 6))
    a = s.pop()
    assert a is not None
    s.finish(a, done=False)  # killed at a stop, or failed under stop
    assert drain(s) == [6]
    assert s.low_water() == 4


def test_superseded_and_dropped_changes_do_not_hold_the_low_water_mark() -> None:
    s = Schedule(1, False)
    s.offer(q("A", 1))
    a = s.pop()
    assert a is not None
    s.offer(q("A", 2))
    s.offer(q("A", 3))  # drops 2
    s.finish(a)
    assert drain(s) == [3] and s.low_water() == 3


def test_a_new_generation_keeps_old_changes_running_but_out_of_the_resume_point() -> None:
    s = Schedule(10, False)
    s.offer(q("A", 50))
    old = s.pop()
    assert old is not None
    s.new_generation()
    s.offer(q("A", 1))
    assert s.pop() is None  # A still runs its old change
    assert s.low_water() == 0
    s.finish(old)
    assert drain(s) == [1] and s.low_water() == 1


# -- the options -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "jobs"), [("1", (1, 1)), ("4", (4, 4)), ("2:8", (2, 8)), ("0:3", (0, 3)), (5, (5, 5))]
)
def test_jobs(text: object, jobs: object) -> None:
    assert parse_jobs(text) == jobs  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["0", "3:2", "x", "", "1:2:3", "-1", "0:0", "257", "1.5", True, None, "٣"])
def test_bad_jobs(text: object) -> None:
    with pytest.raises(InvalidInput, match="jobs must be N"):
        parse_jobs(text)  # type: ignore[arg-type]


def test_on_error() -> None:
    assert parse_on_error("stop") == OnError("stop")
    assert parse_on_error("skip") == OnError("skip")
    assert parse_on_error("retry:2") == OnError("retry", 2, DEFAULT_BACKOFF)
    policy = parse_on_error("retry:3:0.25")
    assert policy == OnError("retry", 3, 0.25)
    assert [policy.delay(k) for k in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert OnError("retry", 100, 10).delay(50) == MAX_BACKOFF


@pytest.mark.parametrize(
    "text", ["retry:-1", "retry:0", "retry", "retry:x", "retry:1:-1", "retry:1:nan", "abort", "", 3]
)
def test_bad_on_error(text: object) -> None:
    with pytest.raises(InvalidInput, match="on_error must be stop, skip"):
        parse_on_error(text)  # type: ignore[arg-type]


def test_queue_and_seconds() -> None:
    assert parse_queue("1") == 1 and parse_queue(64) == 64
    for bad in ("0", "-3", "x", 0, 10**7):
        with pytest.raises(InvalidInput, match="queue must be"):
            parse_queue(bad)
    assert parse_seconds("0", "grace") == 0.0
    for bad in ("-1", "inf", "nan", "x", True):
        with pytest.raises(InvalidInput, match="grace must be a number of seconds >= 0"):
            parse_seconds(bad, "grace")
    with pytest.raises(InvalidInput, match="> 0"):
        parse_seconds("0", "timeout", allow_zero=False)


# -- the state file ----------------------------------------------------------------------------------
def test_state_round_trip_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = str(tmp_path / "st.json")
    assert S.load(path) is None
    state = S.State("prices", 77, 40, {"AAPL": 41, "MSFT": 39})
    S.save(path, state)
    S.save(path, state)
    assert S.load(path) == state
    assert os.listdir(tmp_path) == ["st.json"]


GOOD = {"format": "pricefeed-actions", "version": 1, "feed": "f", "incarnation": 1, "resume": 0, "symbols": {}}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
        (b"[]", "must be a JSON object, not list"),
        (json.dumps({**GOOD, "format": "x"}).encode(), "format must be 'pricefeed-actions' version 1"),
        (json.dumps({**GOOD, "version": 2}).encode(), "format must be"),
        (json.dumps({**GOOD, "extra": 1}).encode(), "unknown keys ['extra']"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "resume"}).encode(), "missing keys ['resume']"),
        (json.dumps({**GOOD, "feed": 3}).encode(), "feed must be a feed name"),
        (json.dumps({**GOOD, "resume": -1}).encode(), "resume must be a whole number >= 0: got -1"),
        (json.dumps({**GOOD, "resume": 1.5}).encode(), "resume must be a whole number"),
        (json.dumps({**GOOD, "incarnation": True}).encode(), "incarnation must be a whole number"),
        (json.dumps({**GOOD, "symbols": []}).encode(), "symbols must be an object"),
        (json.dumps({**GOOD, "symbols": {"A B": 1}}).encode(), "a key that is no symbol: 'A B'"),
        (json.dumps({**GOOD, "symbols": {"A": "1"}}).encode(), "the seq of symbol 'A' must be a whole number"),
    ],
)
def test_a_corrupt_state_file_is_refused_naming_the_file_and_the_fault(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "st.json"
    path.write_bytes(content)
    with pytest.raises(InvalidInput) as caught:
        S.load(str(path))
    message = str(caught.value)
    assert f"state file {str(path)!r} is not a pricefeed action state" in message
    assert why in message, message


def test_a_state_path_must_be_in_a_directory_that_exists(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        S.check_path(str(tmp_path / "missing" / "st.json"))
    with pytest.raises(InvalidInput, match="is a directory"):
        S.check_path(str(tmp_path))
    assert S.check_path(str(tmp_path / "st.json")) == str(tmp_path / "st.json")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX things")
def test_a_state_path_that_is_no_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO planted at the path (whose open would block) and a device (/dev/zero, endless)
    are refused, never read."""
    fifo = tmp_path / "st.json"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        with pytest.raises(InvalidInput, match="not a regular file"):
            S.load(path)


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name != "posix", reason="symlinks as another user plants them")
def test_a_symlink_at_the_temporary_name_is_not_written_through(tmp_path: Path) -> None:
    """Something already at the temporary name (a symlink another user planted, or a leftover)
    is replaced, never written through."""
    target = tmp_path / "victim"
    target.write_text("untouched")
    path = tmp_path / "st.json"
    os.symlink(target, tmp_path / f".st.json.{os.getpid()}.tmp")
    state = S.State("prices", 1, 0, {"A": 1})
    S.save(str(path), state)
    assert target.read_text() == "untouched"
    assert S.load(str(path)) == state
    assert sorted(os.listdir(tmp_path)) == ["st.json", "victim"]
