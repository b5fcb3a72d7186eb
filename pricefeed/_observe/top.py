"""`pricefeed top`: a live view of one feed, its subscribers and its symbols.

Three layers, so that all but the last are tested without a terminal:

- ``Observer`` reads the feed: its status, every symbol's record, the registry, and the change
  rates (``rates.Rates``), into a ``Frame``. It reads through a subscriber that does not
  register (top is not a subscriber, and must not show up as one), and it follows the feed's
  name as a subscriber does: a feed removed stays on the screen as last seen, marked
  "removed"; a feed created anew under the name (by the same owner) is followed.
- ``View`` is what the operator chose: sort, direction, scroll, filter, pause, help; ``press()``
  applies a key. ``render()`` lays a frame out for a width and a height as lines of plain
  ASCII, whatever the size: columns are dropped by rank, then cut, and nothing is ever wider
  than the width or taller than the height (``--once`` renders with no height at all).
- ``run_terminal()`` puts those lines on a curses screen and reads keys; ``once()`` prints one
  frame as text. Curses is imported by these two only.

Everything shown that comes from shared memory (symbols, subscriber labels, states, and the
registry's reason) goes through ``clean()``: another user may have written it, and a control
character reaching the terminal could move the cursor or worse. Once clean, every character is
one column wide, which the layout relies on.
"""

from __future__ import annotations

import math
import os
import signal
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .._errors import FeedNotFound, PricefeedError
from .._registry.types import ReaderInfo, Readers
from .._roles.subscriber import FeedStatus, Subscriber
from .._segment.common import Owner
from .rates import DEFAULT_BUDGET, DEFAULT_WINDOW, Rates

#: The refresh interval, seconds: its default and the range ``--interval`` accepts.
DEFAULT_INTERVAL = 0.25
MIN_INTERVAL = 0.05
MAX_INTERVAL = 60.0
#: A refresh may take at most this share of the time (reading a feed of a million symbols is
#: not free): past it the interval is stretched, and the header says so.
MAX_BUSY = 0.2
#: How long a note (the feed was re-created, ...) stays in the header, seconds.
NOTE_SECONDS = 10.0
#: Widest cell of these columns; longer text is cut and ends with CUT.
SYMBOL_CAP = 31
LABEL_CAP = 20
CUT = ".."
#: The longest filter text (a symbol's length: a longer one could match nothing).
FILTER_MAX = 31

#: The sorts of the symbols table, their keys, and what their natural order puts first.
SORTS = ("name", "rate", "age", "seq")
SORT_KEYS = {"n": "name", "r": "rate", "a": "age", "s": "seq"}
_ORDER_WORDS = {
    "name": ("A-Z", "Z-A"),
    "rate": ("highest first", "lowest first"),
    "age": ("newest first", "oldest first"),
    "seq": ("newest first", "oldest first"),
}

#: Styles of the text a layout gives; the terminal maps them to attributes (bold, reverse),
#: never to colours, so that any terminal shows them.
PLAIN, BOLD, HEADING, ALERT = "", "bold", "heading", "alert"

Segment = Tuple[str, str]  # (text, style)
Line = List[Segment]


# -- text ----------------------------------------------------------------------------------------
def clean(text: object) -> str:
    """``text`` with anything but printable ASCII replaced by ``?``: what may reach the screen."""
    return "".join(c if " " <= c <= "~" else "?" for c in str(text))


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns, ending with CUT when it was longer."""
    if len(text) <= width:
        return text
    if width <= len(CUT):
        return text[: max(0, width)]
    return text[: width - len(CUT)] + CUT


def fmt_age(seconds: float) -> str:
    """A duration in at most 6 columns: 120ms, 4.2s, 37s, 5m02s, 3h07m, 12d04h."""
    if not seconds > 0:  # also NaN: a clock that went back says nothing
        return "0ms"
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 10:
        return f"{math.floor(seconds * 10) / 10:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_lag_time(seconds: Optional[float], lower_bound: bool) -> str:
    """A subscriber's lag in time, finer than an age below a millisecond: 0, 85us, 12ms, 1.5s;
    ``>`` before it when it is a lower bound (its oldest change left the ring)."""
    if seconds is None:
        return "-"
    if seconds <= 0:
        text = "0"
    elif seconds < 1e-3:
        text = f"{max(1, int(seconds * 1e6))}us"
    else:
        text = fmt_age(seconds)
    return (">" if lower_bound else "") + text


def fmt_rate(rate: float, estimated: bool = False) -> str:
    """Changes per second in at most 7 columns: 0, 0.4, 12, 3.5k, 1.2M; ``~`` first when estimated."""
    if not rate > 0:
        text = "0"
    elif rate < 10:
        text = f"{rate:.1f}"
    elif rate < 1000:
        text = f"{rate:.0f}"
    elif rate < 1e6:
        text = f"{rate / 1e3:.1f}k"
    else:
        text = f"{rate / 1e6:.1f}M"
    return ("~" if estimated else "") + text


def fmt_value(value: Any) -> str:
    """A field's value: an integer in full, a float as repr writes it (it reads back as the same
    number) unless that is long, then to 9 significant digits."""
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 14 else f"{value:.9g}"
    return str(value)


# -- what a look at the feed gives -------------------------------------------------------------
class SymbolRow(NamedTuple):
    symbol: str  # clean
    values: Tuple[Any, ...]
    #: Bit i set: the last change set field i.
    changed: int
    seq: int
    time_ns: int
    #: Changes per second over the rate window.
    rate: float


class Frame(NamedTuple):
    """One look at the feed: everything a screen shows, read at ``now_ns`` (wall clock)."""

    feed: str
    status: FeedStatus
    #: "live", "ended", "publisher gone" (as ``pricefeed status`` says), or "removed": the
    #: name leads nowhere now; what is shown is the feed as last seen.
    state: str
    fields: Tuple[str, ...]  # clean
    #: Every symbol, in the order they first appeared.
    rows: List[SymbolRow]
    #: The feed's changes per second (exact), None before there are two looks to compare.
    rate: Optional[float]
    #: Whether the symbols' rates are estimates (see ``rates``).
    estimated: bool
    readers: Readers
    now_ns: int
    #: Something that happened lately (the feed re-created), for the header; None if nothing.
    note: Optional[str]


def state_of(status: FeedStatus, removed: bool) -> str:
    if removed:
        return "removed"
    if status.ended:
        return "ended"
    return "live" if status.publisher_alive else "publisher gone"


class Observer:
    """Reads one feed, a look at a time (``look()``), through a subscriber that does not
    register. Close it when done."""

    def __init__(
        self,
        feed: str,
        owner: Owner = None,
        allow_world_writable: bool = False,
        budget: int = DEFAULT_BUDGET,
        window: float = DEFAULT_WINDOW,
    ) -> None:
        """Open ``feed`` (FeedNotFound, FeedNotTrusted, ... as any subscriber); ``budget`` and
        ``window`` are the rates' (see ``rates.Rates``)."""
        self.feed = feed
        self._allow = allow_world_writable
        self._budget, self._window = budget, window
        self._sub = Subscriber(feed, owner=owner, allow_world_writable=allow_world_writable, register=False)
        # A feed created anew under the name is followed only if the owner is the same: anyone
        # may create a name that is free (as Subscriber.updates() re-attaches; guarantees.md).
        self._owner: Owner = owner if owner is not None else self._sub._seg.uid
        self._rates = Rates(self._sub.geometry.ring_size, budget, window)
        self._removed = False
        self._note: Optional[str] = None
        self._note_until = 0.0
        #: How many times the feed was found created anew, and followed.
        self.resets = 0

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _say(self, note: str) -> None:
        self._note, self._note_until = note, time.monotonic() + NOTE_SECONDS

    def _follow_name(self) -> None:
        """Whether the name still leads to our segment; if it leads to a new one, open that."""
        if self._sub.still_linked():
            self._removed = False
            return
        try:
            new = Subscriber(self.feed, owner=self._owner, allow_world_writable=self._allow, register=False)
        except FeedNotFound:
            if not self._removed:
                self._say("the feed was removed: shown as last seen")
            self._removed = True
            return
        except PricefeedError as exc:
            # Another owner's feed under the name, a damaged one: not followed, and said.
            if not self._removed or self._note is None:
                self._say(f"a new feed under the name is not followed: {exc}")
            self._removed = True
            return
        self._sub.close()
        self._sub = new
        self._rates = Rates(new.geometry.ring_size, self._budget, self._window)
        self._removed = False
        self.resets += 1
        self._say("the feed was created anew: following the new one")

    def look(self) -> Frame:
        """Read the feed now. A damaged segment raises BadSegment, as any reader does."""
        self._follow_name()
        sub = self._sub
        status = sub.status()
        quotes = sub.snapshot()
        readers = self._readers()
        rates = self._rates
        rates.look(status.head_seq, time.monotonic(), sub._reader().read_record)
        by_slot = rates.slots()
        rows = [
            SymbolRow(clean(q.symbol), tuple(q[1:-3]), q.changed_mask, q.seq, q.time_ns, by_slot.get(slot, 0.0))
            for slot, q in enumerate(quotes.values())
        ]
        note = self._note if time.monotonic() < self._note_until else None
        return Frame(
            self.feed,
            status,
            state_of(status, self._removed),
            tuple(clean(name) for name, _ in status.fields),
            rows,
            rates.total() if rates.ready else None,
            rates.estimated,
            readers,
            time.time_ns(),
            note,
        )

    def _readers(self) -> Readers:
        try:
            return self._sub.readers()
        except PricefeedError as exc:  # a damaged registry is said, and the feed still shown
            return Readers(False, str(exc), [], 0, 0, 0)


# -- what the operator chose -------------------------------------------------------------------
class View:
    """The operator's choices, changed by ``press()`` and read by ``render()``."""

    def __init__(self, sort: str = "name", reverse: bool = False, filter_text: str = "") -> None:
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}: got {sort!r}")
        self.sort = sort
        self.reverse = reverse
        self.filter = filter_text
        #: First row of the symbols table shown, and how many rows the last screen showed.
        self.scroll = 0
        self.page = 10
        self.editing = False
        self.paused = False
        self.help = False
        #: The refresh interval in effect, and whether it was stretched (see MAX_BUSY).
        self.interval = DEFAULT_INTERVAL
        self.slowed = False

    def press(self, key: str) -> bool:
        """Apply ``key`` (a character, or up, down, pgup, pgdn, home, end, enter, esc,
        backspace); True means quit."""
        if self.editing:
            if key == "enter":
                self.editing = False
            elif key == "esc":
                self.editing, self.filter = False, ""
            elif key == "backspace":
                self.filter = self.filter[:-1]
            elif len(key) == 1 and "!" <= key <= "~" and len(self.filter) < FILTER_MAX:
                self.filter += key
            self.scroll = 0
            return False
        if key in ("q", "Q"):
            return True
        if self.help:
            self.help = False  # any other key leaves the help
            return False
        if key in SORT_KEYS:
            sort = SORT_KEYS[key]
            # The same key again turns the order round, as the column headings of most tools do.
            self.reverse = not self.reverse if sort == self.sort else False
            self.sort, self.scroll = sort, 0
        elif key == "R":
            self.reverse, self.scroll = not self.reverse, 0
        elif key in ("down", "j"):
            self.scroll += 1
        elif key in ("up", "k"):
            self.scroll = max(0, self.scroll - 1)
        elif key in ("pgdn", " ", "f"):
            self.scroll += max(1, self.page)
        elif key in ("pgup", "b"):
            self.scroll = max(0, self.scroll - max(1, self.page))
        elif key in ("home", "g"):
            self.scroll = 0
        elif key in ("end", "G"):
            self.scroll = 1 << 62  # render() brings it back to the last page
        elif key == "/":
            self.editing, self.scroll = True, 0
        elif key == "esc":
            self.filter, self.scroll = "", 0
        elif key == "p":
            self.paused = not self.paused
        elif key in ("?", "h"):
            self.help = True
        return False

    def order_words(self) -> str:
        return f"{self.sort}, {_ORDER_WORDS[self.sort][self.reverse]}"


def arrange(rows: Sequence[SymbolRow], view: View) -> List[SymbolRow]:
    """The rows the symbols table shows, filtered and in the view's order (ties by name)."""
    if view.filter:
        needle = view.filter.lower()
        rows = [r for r in rows if needle in r.symbol.lower()]
    by_name = sorted(rows, key=lambda r: r.symbol)
    if view.sort == "name":
        return by_name[::-1] if view.reverse else by_name
    # Each sort's natural order puts first what an operator looks for: the busiest symbol, the
    # newest change (the smallest age), the highest sequence. sorted() is stable, reverse=True
    # included, so the names stay in order among equal keys.
    key: Callable[[SymbolRow], Any] = {
        "rate": lambda r: r.rate,
        "age": lambda r: r.time_ns,
        "seq": lambda r: r.seq,
    }[view.sort]
    return sorted(by_name, key=key, reverse=not view.reverse)


# -- layout ----------------------------------------------------------------------------------------
class Column(NamedTuple):
    title: str
    right: bool
    #: Lower ranks are kept longer when the width is short.
    rank: float
    #: Widest a cell may be (longer ones are cut), 0 for no limit.
    cap: int = 0


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: Optional[int]) -> List[Tuple[int, int]]:
    """(column index, width) of the columns that fit in ``width`` with one space between them,
    kept by rank, shown in their own order. The first one kept is cut to the width if it alone
    is wider."""
    widths = []
    for i, col in enumerate(columns):
        w = max([len(col.title), *(len(row[i]) for row in rows)])
        widths.append(min(w, col.cap) if col.cap else w)
    chosen: List[int] = []
    used = -1
    for i in sorted(range(len(columns)), key=lambda i: (columns[i].rank, i)):
        if width is None or used + 1 + widths[i] <= width:
            chosen.append(i)
            used += 1 + widths[i]
        elif not chosen:
            chosen.append(i)
            widths[i] = max(0, width)
            break
    return [(i, widths[i]) for i in sorted(chosen)]


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: Optional[int]) -> List[str]:
    """The heading line, then one line per row: the columns that fit (see ``fit``)."""
    shown = fit(columns, rows, width)

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, w in shown:
            text = cut(cells[i], w)
            parts.append(text.rjust(w) if columns[i].right else text.ljust(w))
        text = " ".join(parts).rstrip()
        return text if width is None else text[:width]

    return [line([c.title for c in columns])] + [line(row) for row in rows]


def symbol_columns(fields: Sequence[str], sort: str, reverse: bool = False) -> List[Column]:
    """SYMBOL, each field, SEQ, RATE/s, AGE: by rank, the symbol, the first field, the rate,
    the age, the sequence, then the other fields; the column sorted on right after the symbol,
    so that what the order means stays on the screen."""
    sort_column = {"name": 0, "rate": len(fields) + 2, "age": len(fields) + 3, "seq": len(fields) + 1}[sort]
    cols = [Column("SYMBOL", False, 0, SYMBOL_CAP)]
    cols += [Column(name.upper(), True, 1 if k == 0 else 10 + k) for k, name in enumerate(fields)]
    cols += [Column("SEQ", True, 5), Column("RATE/s", True, 2), Column("AGE", True, 3)]
    # Its heading ends with ^ when its values grow down the table, v when they shrink (a * is
    # taken: it marks the fields a change set).
    growing = {"name": True, "rate": False, "age": True, "seq": False}[sort] != reverse
    sorted_on = cols[sort_column]
    cols[sort_column] = sorted_on._replace(title=sorted_on.title + ("^" if growing else "v"), rank=0.5)
    return cols


def symbol_cells(row: SymbolRow, fields: int, now_ns: int, estimated: bool) -> List[str]:
    marks = fields > 1  # on a feed of several fields, * marks those the last change set
    values = [fmt_value(v) + ("*" if marks and row.changed >> k & 1 else "") for k, v in enumerate(row.values)]
    age = fmt_age((now_ns - row.time_ns) / 1e9) if row.seq else "-"
    return [row.symbol, *values, str(row.seq), fmt_rate(row.rate, estimated), age]


READER_COLUMNS = [
    Column("PID", True, 0),
    Column("LABEL", False, 1, LABEL_CAP),
    Column("STATE", False, 3),
    Column("FOR", True, 6),
    Column("LAG", True, 2),
    Column("LAG-T", True, 4),
    Column("DELIVERED", True, 5),
    Column("GAPS", True, 7),
    Column("MISSED", True, 8),
    Column("MODE", False, 9),
    Column("USER", False, 10),
]


def reader_order(entries: Sequence[ReaderInfo]) -> List[ReaderInfo]:
    """The worst first: the most changes behind, then by pid; idle ones (no lag) last."""
    return sorted(entries, key=lambda e: (e.lag is None, -(e.lag or 0), e.pid))


_users: Dict[int, str] = {}


def user_text(uid: int) -> str:
    name = _users.get(uid)
    if name is None:
        try:
            import pwd

            name = clean(pwd.getpwuid(uid).pw_name)
        except (ImportError, KeyError, OverflowError):
            name = str(uid)
        _users[uid] = name
    return name


def reader_cells(e: ReaderInfo, now_ns: int) -> List[str]:
    mode = ["some" if e.filtered else "all"] + (["conflate"] if e.conflate else []) + (["async"] if e.is_async else [])
    return [
        str(e.pid),
        clean(e.label) if e.label else "-",
        clean(e.state),
        fmt_age((now_ns - e.state_ns) / 1e9) if e.state_ns else "-",
        "-" if e.lag is None else str(e.lag),
        fmt_lag_time(e.lag_seconds, e.lag_lower_bound),
        str(e.delivered),
        str(e.gaps),
        str(e.missed),
        ",".join(mode),
        user_text(e.uid),
    ]


def header_items(frame: Frame, view: View, live: bool = True) -> List[Line]:
    """The header's items, most important first; ``pack`` puts as many as fit. ``live``: the
    refresh interval; else what the rates were measured over."""
    s = frame.status
    items: List[Line] = [[(frame.feed, BOLD), (" ", PLAIN), (frame.state, BOLD if frame.state == "live" else ALERT)]]
    if view.paused:
        items.append([("PAUSED (p resumes)", ALERT)])
    if frame.note:
        items.append([(clean(frame.note), ALERT)])
    if s.publisher_alive:
        items.append([(f"publisher {s.publisher_pid} alive", PLAIN)])
    elif s.publisher_pid:
        how = "" if s.publisher_clean is None else ", exited cleanly" if s.publisher_clean else ", died"
        items.append([(f"publisher {s.publisher_pid} gone{how}", PLAIN)])
    else:
        items.append([("no publisher yet", PLAIN)])
    items.append([(f"head {s.head_seq}", PLAIN)])
    items.append([(f"rate {'-' if frame.rate is None else fmt_rate(frame.rate)}/s", PLAIN)])
    items.append([(f"symbols {s.symbols}/{s.capacity}", PLAIN)])
    if s.last_change_ns is None:
        items.append([("no change yet", PLAIN)])
    else:
        items.append([(f"last change {fmt_age((frame.now_ns - s.last_change_ns) / 1e9)} ago", PLAIN)])
    r = frame.readers
    if r.available:
        extra = "".join(f", {n} {what}" for n, what in ((r.dead, "dead"), (r.invalid, "invalid")) if n)
        items.append([(f"subscribers {len(r.entries)}/{r.capacity}{extra}", PLAIN)])
    else:
        items.append([(f"registry: {clean(r.reason or 'unavailable')}", PLAIN)])
    items.append([(f"sort {view.order_words()}", PLAIN)])
    if view.filter:
        items.append([(f"filter '{view.filter}'", PLAIN)])
    if frame.estimated:
        items.append([("~ rates estimated", PLAIN)])
    if live:
        items.append([(f"every {view.interval:g}s{' (slowed)' if view.slowed else ''}", PLAIN)])
    else:
        items.append([(f"rates over {view.interval:g}s", PLAIN)])
    items.append([(time.strftime("%H:%M:%S", time.localtime(frame.now_ns / 1e9)), PLAIN)])
    return items


def _length(line: Line) -> int:
    return sum(len(text) for text, _ in line)


def pack(items: Sequence[Line], width: int, most: int) -> List[Line]:
    """Items on at most ``most`` lines of ``width``, two spaces apart, in their order; one
    that fits nowhere is left out (the first is cut instead)."""
    lines: List[Line] = []
    for item in items:
        n = _length(item)
        if lines and _length(lines[-1]) + 2 + n <= width:
            lines[-1] = [*lines[-1], ("  ", PLAIN), *item]
        elif len(lines) < most and (n <= width or not lines):
            lines.append(clip(item, width))
    return lines


def clip(line: Line, width: int) -> Line:
    """``line`` cut to ``width`` columns."""
    out: Line = []
    left = width
    for text, style in line:
        if left <= 0:
            break
        out.append((text[:left], style))
        left -= len(text[:left])
    return out


KEYS_LINE = "q quit  n/r/a/s sort  R reverse  j/k PgUp/PgDn scroll  / filter  p pause  ? help"
HELP = [
    "Keys",
    "  q, Ctrl-C       quit",
    "  n r a s         sort symbols by name, rate, age, seq (the same key again: reverse)",
    "  R               reverse the order",
    "  Up Down, j k    scroll one row",
    "  PgUp PgDn, b f  scroll one page (also Space)",
    "  Home End, g G   first, last page",
    "  /               filter symbols by text (Enter keeps it, Esc clears it)",
    "  Esc             clear the filter",
    "  p               pause the display (reading goes on), again to resume",
    "  Ctrl-L          redraw the screen",
    "  ? h             this help; any key returns",
    "",
    "Symbols: a value with * is a field the last change set; RATE/s counts changes",
    f"per second over the last {DEFAULT_WINDOW:g} s (~: estimated from a sample of them);",
    "AGE is the time since the symbol's last change.",
    "Subscribers (worst first): LAG is changes published that it has not dealt with,",
    "LAG-T how long the oldest has waited (>: at least; it will see a gap), FOR how long",
    "it has been in its STATE.",
]


class Screen(NamedTuple):
    lines: List[Line]
    #: The symbols table's first row and its number of rows, as laid out.
    scroll: int
    page: int


def render(frame: Frame, view: View, width: Optional[int], height: Optional[int], live: bool = True) -> Screen:
    """The frame laid out in ``width`` columns and ``height`` lines (None: no limit, every row
    of every table; the header then packed in 100 columns). ``live``: for the terminal, ending
    with the keys line; else for ``--once``."""
    w = max(0, width) if width is not None else None
    pack_width = w if w is not None else 100
    if (height is not None and height <= 0) or w == 0:
        return Screen([], view.scroll, 0)
    bottom: List[Line] = []
    if live and (height is None or height >= 3):
        if view.editing:
            bottom = [clip([(f"filter: {view.filter}_  (Enter keeps, Esc clears)", BOLD)], pack_width)]
        else:
            bottom = [clip([(KEYS_LINE, PLAIN)], pack_width)]
    most = 99 if height is None else max(1, min(3, (height - 1) // 3))
    head = pack(header_items(frame, view, live), pack_width, most)
    if height is not None:
        head = head[: max(1, height - len(bottom))]
    if view.help:
        body = [clip([(text, BOLD if i == 0 else PLAIN)], pack_width) for i, text in enumerate(HELP)]
        lines = head + body
        if height is not None:
            lines = lines[: height - len(bottom)]
            lines += [[]] * (height - len(bottom) - len(lines))
        return Screen(lines + bottom, view.scroll, view.page)
    room = None if height is None else height - len(head) - len(bottom)
    lines = list(head)
    lines += _readers_section(frame, w, room)
    if room is not None:
        room = height - len(lines) - len(bottom)  # type: ignore[operator]
    symbols, scroll, page = _symbols_section(frame, view, w, room)
    lines += symbols
    if height is not None:
        lines += [[]] * (height - len(lines) - len(bottom))
    return Screen(lines + bottom, scroll, page)


def _readers_section(frame: Frame, width: Optional[int], room: Optional[int]) -> List[Line]:
    """The subscribers table, worst first: all of it with no height; else only when the symbols
    keep a heading and 3 rows, a third of the room at most, its last row saying what is left
    out. With no registry (or nobody in it) nothing: the header says which."""
    entries = reader_order(frame.readers.entries)
    if not entries:
        return []
    shown = len(entries)
    if room is not None:
        shown = min(shown, room // 3 - 1)
        if shown < 1 or room - (shown + 1) < 4:
            return []
    # With more than fit, the last row says how many are left out (the header has the count).
    listed = shown - 1 if shown < len(entries) and shown >= 2 else shown
    rows = [reader_cells(e, frame.now_ns) for e in entries[:listed]]
    text = table(READER_COLUMNS, rows, width)
    out: List[Line] = [[(text[0], HEADING)]]
    for e, line in zip(entries, text[1:]):
        out.append([(line, ALERT if e.lag_lower_bound else PLAIN)])
    if listed < shown:
        note = f"+{len(entries) - listed} more, better off than those above"
        out.append([(note if width is None else note[:width], PLAIN)])
    return out


def _symbols_section(
    frame: Frame, view: View, width: Optional[int], room: Optional[int]
) -> Tuple[List[Line], int, int]:
    if room is not None and room < 1:
        return [], view.scroll, 0
    rows = arrange(frame.rows, view)
    page = len(rows) if room is None else max(0, room - 1)
    scroll = max(0, min(view.scroll, len(rows) - page))
    visible = rows[scroll : scroll + page]
    fields = len(frame.fields)
    cells = [symbol_cells(r, fields, frame.now_ns, frame.estimated) for r in visible]
    text = table(symbol_columns(frame.fields, view.sort, view.reverse), cells, width)
    heading = text[0]
    if room is not None and len(rows) > page:
        where = f"{scroll + 1}-{scroll + len(visible)}/{len(rows)}"
        if width is not None and len(heading) + 2 + len(where) <= width:
            heading = heading + " " * (width - len(heading) - len(where)) + where
    out: List[Line] = [[(heading, HEADING)]]
    out += [[(line, PLAIN)] for line in text[1:]]
    if not rows and (room is None or room >= 2):
        empty = f"(no symbol matches '{view.filter}')" if view.filter and frame.rows else "(no symbols yet)"
        out.append([(empty if width is None else empty[:width], PLAIN)])
    return out, scroll, page


def plain(line: Line) -> str:
    return "".join(text for text, _ in line).rstrip()


# -- one frame as text ---------------------------------------------------------------------------
def once(observer: Observer, view: View, interval: float, width: Optional[int]) -> List[str]:
    """Two looks ``interval`` apart (the rates need two), the second laid out as text."""
    observer.look()
    time.sleep(interval)
    frame = observer.look()
    view.interval = interval
    return [plain(line) for line in render(frame, view, width, None, live=False).lines]


# -- the terminal --------------------------------------------------------------------------------
class Stopped(Exception):
    """SIGTERM arrived while the view ran: the terminal was restored on the way out."""


def _on_term(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def run_terminal(observer: Observer, view: View, interval: float) -> None:
    """The live view until ``q`` (returns), Ctrl-C (KeyboardInterrupt) or SIGTERM (Stopped);
    the terminal is restored in every case. A terminal curses cannot drive raises
    PricefeedError saying so."""
    import curses

    os.environ.setdefault("ESCDELAY", "25")  # Esc alone must not wait a second for a sequence
    try:
        stdscr = curses.initscr()
    except curses.error as exc:
        term = os.environ.get("TERM")
        raise PricefeedError(
            f"top cannot drive this terminal (TERM={term!r}): {exc}; --once prints one frame as text"
        ) from None
    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        curses.noecho()
        curses.cbreak()
        stdscr.keypad(True)
        try:
            curses.curs_set(0)
        except curses.error:
            pass  # a terminal that cannot hide its cursor shows it: no harm
        _loop(curses, stdscr, observer, view, interval)
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            stdscr.keypad(False)
            curses.nocbreak()
            curses.echo()
        finally:
            curses.endwin()


def _key_names(curses: Any) -> Dict[int, str]:
    names = {
        curses.KEY_UP: "up",
        curses.KEY_DOWN: "down",
        curses.KEY_PPAGE: "pgup",
        curses.KEY_NPAGE: "pgdn",
        curses.KEY_HOME: "home",
        curses.KEY_END: "end",
        curses.KEY_BACKSPACE: "backspace",
        curses.KEY_ENTER: "enter",
        127: "backspace",
        8: "backspace",
        10: "enter",
        13: "enter",
        27: "esc",
        12: "redraw",  # Ctrl-L
    }
    names.update({c: chr(c) for c in range(32, 127)})
    return names


#: Key sequences a terminal sends that its terminfo entry may not name (vt100 has no PgUp):
#: read after an Esc when curses passed them on as they came.
ESCAPES = {
    "[A": "up", "OA": "up", "[B": "down", "OB": "down",
    "[5~": "pgup", "[6~": "pgdn",
    "[H": "home", "OH": "home", "[1~": "home", "[7~": "home",
    "[F": "end", "OF": "end", "[4~": "end", "[8~": "end",
}  # fmt: skip


def _escape(stdscr: Any) -> Optional[str]:
    """What an Esc that curses did not decode began: the rest of a sequence arrives at once
    with it, a lone Esc has nothing after it. An unknown sequence is no key (None)."""
    stdscr.timeout(0)
    rest = []
    for _ in range(8):
        ch = stdscr.getch()
        if ch == -1:
            break
        rest.append(chr(ch) if 0 <= ch < 128 else "?")
    if not rest:
        return "esc"
    return ESCAPES.get("".join(rest))


def _loop(curses: Any, stdscr: Any, observer: Observer, view: View, interval: float) -> None:
    names = _key_names(curses)
    styles = {
        PLAIN: curses.A_NORMAL,
        BOLD: curses.A_BOLD,
        HEADING: curses.A_REVERSE,
        ALERT: curses.A_BOLD | curses.A_REVERSE,
    }
    view.interval = interval
    shown: Optional[Frame] = None
    next_at = 0.0
    while True:
        now = time.monotonic()
        if now >= next_at:
            frame = observer.look()
            if shown is None or not view.paused:
                shown = frame
            _draw(curses, stdscr, shown, view, styles)
            # Reading and drawing may take at most MAX_BUSY of the time: a big feed is
            # refreshed less often rather than taking a core (the header says "slowed").
            busy = time.monotonic() - now
            wait = max(interval, busy / MAX_BUSY)
            view.interval, view.slowed = round(wait, 2), wait > interval
            next_at = now + wait
            continue
        stdscr.timeout(max(1, int((next_at - now) * 1000)))
        ch = stdscr.getch()
        if ch == -1:
            continue
        if ch == curses.KEY_RESIZE:
            curses.update_lines_cols()
        else:
            key = _escape(stdscr) if ch == 27 else names.get(ch)
            if key == "redraw":
                stdscr.clear()
            elif key is None:
                continue
            elif view.press(key):
                return
        assert shown is not None  # the first pass looks
        _draw(curses, stdscr, shown, view, styles)


def _draw(curses: Any, stdscr: Any, frame: Frame, view: View, styles: Dict[str, int]) -> None:
    height, width = stdscr.getmaxyx()
    screen = render(frame, view, width, height)
    view.scroll, view.page = screen.scroll, screen.page
    stdscr.erase()
    for y, line in enumerate(screen.lines[:height]):
        # The bottom right cell cannot be written (the cursor would have to move past it):
        # the last line stops one short.
        limit = width - 1 if y == height - 1 else width
        x = 0
        for text, style in line:
            n = min(len(text), limit - x)
            if n <= 0:
                break
            try:
                stdscr.addnstr(y, x, text, n, styles.get(style, curses.A_NORMAL))
            except curses.error:
                pass  # a resize between the size and the write: the next draw is right
            x += n
    stdscr.refresh()
