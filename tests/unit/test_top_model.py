"""`pricefeed top` without a terminal: the rates counted from a real feed's ring (exactly, and
estimated past the budget or the ring), the operator's keys, the orders, the formats, and the
layout at every size from 0x0 up, with hostile labels: never a line wider than the width,
never more lines than the height, never a character that is not printable ASCII."""

from __future__ import annotations

import string
from typing import List

import pytest
from conftest import unlink_feed

from pricefeed import Publisher
from pricefeed._observe import top as T
from pricefeed._observe.rates import Rates
from pricefeed._registry.types import ReaderInfo, Readers
from pricefeed._roles.subscriber import Subscriber

BOOK = "bid:f64,ask:f64,bid_size:i64,ask_size:i64"


# -- rates -----------------------------------------------------------------------------------------
def test_rates_count_each_symbol_exactly_within_the_budget(feed: str) -> None:
    with Publisher.create(feed, ring_size=64) as pub, Subscriber(feed, register=False) as sub:
        pub.publish_many({"A": 1.0, "B": 1.0})  # slots 0 and 1
        rates = Rates(64, budget=100, window=2.0)
        rates.look(sub.head, 10.0, sub._reader().read_record)
        assert not rates.ready and rates.total() == 0
        for k in range(10):
            pub.publish("A", 2.0 + k)
        for k in range(5):
            pub.publish("B", 2.0 + k)
        rates.look(sub.head, 11.0, sub._reader().read_record)
        assert rates.ready and not rates.estimated
        assert (rates.of(0), rates.of(1), rates.total()) == (10.0, 5.0, 15.0)
        assert rates.last_read == 15
        # Nothing more: the look that counted them leaves the window, and the rates fall to 0.
        rates.look(sub.head, 12.5, sub._reader().read_record)
        assert rates.of(0) == pytest.approx(10 / 2.5)
        rates.look(sub.head, 13.5, sub._reader().read_record)
        assert (rates.of(0), rates.of(1), rates.total(), rates.slots()) == (0.0, 0.0, 0.0, {})


def test_rates_past_the_budget_are_scaled_from_the_newest_changes_and_marked(feed: str) -> None:
    with Publisher.create(feed, ring_size=64) as pub, Subscriber(feed, register=False) as sub:
        pub.publish_many({"A": 1.0, "B": 1.0})
        rates = Rates(64, budget=4, window=2.0)
        rates.look(sub.head, 0.0, sub._reader().read_record)
        for k in range(8):
            pub.publish("A", 2.0 + k)
        for k in range(4):
            pub.publish("B", 2.0 + k)
        rates.look(sub.head, 1.0, sub._reader().read_record)
        # Only the newest 4 were read, all of B: they stand for the 12 changes made.
        assert rates.estimated and rates.last_read == 4
        assert (rates.of(0), rates.of(1)) == (0.0, 12.0)
        assert rates.total() == 12.0  # the feed's rate is exact, from the head


def test_rates_of_a_lapped_ring_are_estimated_from_what_it_still_holds(feed: str) -> None:
    with Publisher.create(feed, ring_size=8) as pub, Subscriber(feed, register=False) as sub:
        pub.publish("A", 1.0)
        rates = Rates(8, budget=1000)
        rates.look(sub.head, 0.0, sub._reader().read_record)
        for k in range(40):
            pub.publish("A" if k % 2 else "B", 2.0 + k)
        rates.look(sub.head, 1.0, sub._reader().read_record)
        assert rates.estimated and rates.last_read == 8
        assert rates.total() == 40.0
        assert (rates.of(0), rates.of(1)) == (20.0, 20.0)


def test_rates_start_afresh_when_the_head_goes_back() -> None:
    rates = Rates(16)
    rates.look(100, 0.0, lambda seq: None)
    rates.look(120, 1.0, lambda seq: None)
    assert rates.ready and rates.total() == 20.0 and rates.estimated  # nothing readable
    rates.look(5, 2.0, lambda seq: None)  # a new segment under the name
    assert not rates.ready and rates.total() == 0.0 and not rates.estimated
    rates.look(5, 2.0, lambda seq: None)  # no time passed: nothing to count yet
    assert not rates.ready


# -- formats ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-1, "0ms"), (float("nan"), "0ms"), (0.0004, "0ms"), (0.12, "120ms"), (4.27, "4.2s"), (37.9, "37s"),
     (302, "5m02s"), (11220, "3h07m"), (12 * 86400 + 4 * 3600, "12d04h")],
)  # fmt: skip
def test_ages_fit_six_columns(seconds: float, text: str) -> None:
    assert T.fmt_age(seconds) == text


@pytest.mark.parametrize(
    ("rate", "estimated", "text"),
    [(0, False, "0"), (0.44, False, "0.4"), (12.4, False, "12"), (3456, True, "~3.5k"), (1.25e6, False, "1.2M")],
)
def test_rates_read_short(rate: float, estimated: bool, text: str) -> None:
    assert T.fmt_rate(rate, estimated) == text


def test_values_and_lags_read_as_written() -> None:
    assert [T.fmt_value(v) for v in (187.25, 0.30000000000000004, 2**63 - 1, -5)] == [
        "187.25",
        "0.3",
        "9223372036854775807",
        "-5",
    ]
    assert [T.fmt_lag_time(s, low) for s, low in ((None, False), (0.0, False), (85e-6, False), (0.012, True))] == [
        "-",
        "0",
        "85us",
        ">12ms",
    ]


def test_untrusted_text_never_reaches_the_terminal_as_it_is() -> None:
    assert T.clean("ok\x1b[2J\r\n\x07é\u202e") == "ok?[2J?????"
    assert T.cut("abcdefgh", 5) == "abc.." and T.cut("ab", 5) == "ab" and T.cut("abcdef", 1) == "a"


# -- keys and orders -------------------------------------------------------------------------------
def rows() -> List[T.SymbolRow]:
    # (symbol, rate, time_ns, seq): each order differs from the others.
    spec = [("MSFT", 19.0, 300, 30), ("AAPL", 97.0, 100, 40), ("ES", 5.0, 400, 20), ("NQ", 5.0, 200, 10)]
    return [T.SymbolRow(s, (1.0,), 1, seq, t, rate) for s, rate, t, seq in spec]


def order(view: T.View) -> List[str]:
    return [r.symbol for r in T.arrange(rows(), view)]


def test_each_sort_key_orders_by_its_column_and_again_reverses() -> None:
    view = T.View()
    assert order(view) == ["AAPL", "ES", "MSFT", "NQ"]
    view.press("r")
    assert order(view) == ["AAPL", "MSFT", "ES", "NQ"]  # busiest first; ES and NQ tie: by name
    assert view.order_words() == "rate, highest first"
    view.press("r")
    assert order(view) == ["ES", "NQ", "MSFT", "AAPL"] and view.reverse
    view.press("a")
    assert order(view) == ["ES", "MSFT", "NQ", "AAPL"] and not view.reverse  # newest change first
    view.press("s")
    assert order(view) == ["AAPL", "MSFT", "ES", "NQ"]
    view.press("R")
    assert order(view) == ["NQ", "ES", "MSFT", "AAPL"]
    view.press("n")
    assert order(view) == ["AAPL", "ES", "MSFT", "NQ"]
    view.press("R")
    assert order(view) == ["NQ", "MSFT", "ES", "AAPL"]


def test_keys_scroll_filter_pause_help_and_quit() -> None:
    view = T.View()
    view.page = 10
    for key, scroll in (("down", 1), ("j", 2), ("k", 1), ("up", 0), ("up", 0), ("pgdn", 10), (" ", 20), ("b", 10)):
        view.press(key)
        assert view.scroll == scroll, key
    view.press("home")
    assert view.scroll == 0
    view.press("G")
    assert view.scroll > 10**9  # render() brings it back to the last page
    view.press("/")
    for key in ("M", "q", "\x1b", "backspace", "S", " "):  # q types; a control character or a space does not
        assert not view.press(key)
    assert view.filter == "MS" and view.editing and view.scroll == 0
    assert [r.symbol for r in T.arrange(rows(), view)] == ["MSFT"]
    view.press("enter")
    assert not view.editing and view.filter == "MS"
    view.press("esc")
    assert view.filter == ""
    view.press("p")
    assert view.paused
    view.press("?")
    assert view.help
    view.press("x")  # any key leaves the help
    assert not view.help
    assert view.press("q") and view.press("Q")


# -- layout ------------------------------------------------------------------------------------------
def hostile_readers(n: int) -> Readers:
    labels = [None, "\x1b[2J\x1b[31mred", "x" * 64, "tab\there", "é-label", "ok"]
    entries = [
        ReaderInfo(i, 1000 + i, labels[i % len(labels)], 0, "\x1bwaiting" if i == 1 else "working", 10, 10**12, i,
                   i * 1000, 1, 1, i % 2 == 0, i % 3 == 0, i % 4 == 0, None if i == 3 else i * 7,
                   None if i == 3 else i * 0.01, i == 2)
        for i in range(n)
    ]  # fmt: skip
    return Readers(True, None, entries, 64, 1, 2)


def frames(feed: str) -> List[T.Frame]:
    """Real frames of a real feed of four fields: long symbols, long values, subscribers with
    hostile labels, none, and a registry that is unavailable for an odd reason."""
    with Publisher.create(feed, fields=BOOK) as pub:
        pub.publish_many(
            [("X" * 31, {"bid": 1e300, "ask": -0.30000000000000004, "bid_size": -(2**63), "ask_size": 2**63 - 1})]
            + [(f"SYM{k}", {"bid": k + 0.25, "ask_size": k}) for k in range(40)]
        )
        with T.Observer(feed) as obs:
            obs.look()
            pub.publish("SYM3", bid=99.5)
            first = obs.look()
    return [
        first._replace(readers=hostile_readers(9)),
        first._replace(readers=hostile_readers(1), note="the feed was created anew: following the new one"),
        first._replace(readers=Readers(False, "bad\x1b]0;title\x07", [], 0, 0, 0), rows=[], state="removed"),
    ]


def screen_ok(screen: T.Screen, width: int, height: int) -> None:
    assert len(screen.lines) <= height
    for line in screen.lines:
        text = "".join(t for t, _ in line)
        assert len(text) <= width, (width, height, text)
        assert all(c in string.printable and c not in "\t\n\r\x0b\x0c" for c in text), repr(text)


def test_every_size_from_nothing_up_stays_inside_the_screen(feed: str) -> None:
    views = [T.View(), T.View("rate", True, "SYM")]
    views[1].paused = True
    views[1].scroll = 10**9
    helping, editing = T.View(), T.View()
    helping.help, editing.editing = True, True
    for frame in frames(feed):
        for view in [*views, helping, editing]:
            for height in (0, 1, 2, 3, 4, 5, 7, 10, 12, 17, 30, 60):
                for width in range(0, 131, 3 if height > 12 else 1):
                    screen_ok(T.render(frame, view, width, height), width, height)


def test_a_full_screen_shows_everything_a_narrow_one_the_essentials(feed: str) -> None:
    frame = frames(feed)[0]
    wide = [T.plain(line) for line in T.render(frame, T.View(), 200, 60).lines]
    assert wide[0].startswith(f"{feed} live  publisher ")
    heading = next(line for line in wide if line.startswith("SYMBOL"))
    assert heading.split() == ["SYMBOL^", "BID", "ASK", "BID_SIZE", "ASK_SIZE", "SEQ", "RATE/s", "AGE"]
    assert len([line for line in wide if line.startswith(("SYM", "XXX"))]) == 42  # the heading and 41 rows
    scrolled = [T.plain(line) for line in T.render(frame, T.View(), 200, 30).lines]
    assert next(line for line in scrolled if line.startswith("SYMBOL")).endswith(" 1-18/41")
    assert any(line.startswith("SYM3 ") and "99.5*" in line for line in wide)  # the field the change set
    readers = next(i for i, line in enumerate(wide) if line.lstrip().startswith("PID"))
    assert wide[readers].split() == ["PID", "LABEL", "STATE", "FOR", "LAG", "LAG-T", "DELIVERED", "GAPS", "MISSED",
                                     "MODE", "USER"]  # fmt: skip
    assert wide[readers + 1].split()[:2] == ["1008", "xxxxxxxxxxxxxxxxxx.."]  # the worst first; a long label cut
    assert any("?[2J?[31mred" in line for line in wide) and "\x1b" not in "".join(wide)
    assert wide[-1].startswith("q quit")
    # 40 columns and a symbol of 31 characters on the screen: the symbol and the first field
    # only; the column sorted on stays before them.
    narrow = [T.plain(line) for line in T.render(frame, T.View("name", True), 40, 12).lines]
    heading = next(line for line in narrow if line.startswith("SYMBOL"))
    assert heading.split() == ["SYMBOLv", "BID"] and len(narrow) == 12
    assert narrow[narrow.index(heading) + 1] == "X" * 31 + " 1e+300*"
    narrow = [T.plain(line) for line in T.render(frame, T.View("seq"), 40, 12).lines]
    heading = next(line for line in narrow if line.startswith("SYMBOL"))
    assert heading.split() == ["SYMBOL", "BID", "ASK", "SEQv", "RATE/s", "AGE"]
    narrow = [T.plain(line) for line in T.render(frame, T.View("rate", filter_text="xx"), 40, 12).lines]
    heading = next(line for line in narrow if line.startswith("SYMBOL"))
    assert heading.split() == ["SYMBOL", "RATE/sv"]  # the column sorted on before the first field
    tiny = [T.plain(line) for line in T.render(frame, T.View(), 20, 5).lines]
    assert tiny[0] == f"{feed} live"[:20] and tiny[1].startswith("SYMBOL^") and tiny[-1] == "q quit  n/r/a/s sort"


def test_without_a_height_every_row_of_every_table_is_there(feed: str) -> None:
    frame = frames(feed)[0]
    lines = [T.plain(line) for line in T.render(frame, T.View(), None, None, live=False).lines]
    assert sum(1 for line in lines if line.startswith("SYM")) == 41  # the heading and 40 rows
    assert sum(1 for line in lines if line.split()[:1] and line.split()[0].isdigit()) == 9
    assert not lines[-1].startswith("q quit")


# -- the observer on a real feed -------------------------------------------------------------------
def test_the_observer_follows_the_feed_through_its_states(feed: str) -> None:
    pub = Publisher.create(feed)
    pub.publish("A", 1.0)
    with T.Observer(feed) as obs:
        frame = obs.look()
        assert (frame.state, frame.rate, [r.symbol for r in frame.rows]) == ("live", None, ["A"])
        pub.publish("A", 2.0)
        frame = obs.look()
        assert frame.rate is not None and frame.rate > 0 and frame.rows[0].values == (2.0,)
        pub.close()
        frame = obs.look()
        assert frame.state == "publisher gone" and frame.status.publisher_clean is True
        with Publisher.open(feed) as again:
            again.end()
        assert obs.look().state == "ended"
        unlink_feed(feed)
        frame = obs.look()
        assert frame.state == "removed" and frame.note is not None and "removed" in frame.note
        assert [r.symbol for r in frame.rows] == ["A"]  # as last seen
        with Publisher.create(feed) as new:
            new.publish("B", 3.0)
            frame = obs.look()
        assert frame.state == "live" and [r.symbol for r in frame.rows] == ["B"]
        assert obs.resets == 1 and frame.note is not None and "created anew" in frame.note
        assert frame.rate is None  # the rates start afresh on the new feed
