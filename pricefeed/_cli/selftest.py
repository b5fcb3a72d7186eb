"""``pricefeed selftest``'s check of a feed of several fields, beside the wait-backend suite.

``fields_round_trip`` runs as the suite's checks do (a function of the backend that returns a
note, raises AssertionError saying what went wrong, or Skip), and ``pricefeed selftest`` runs
it with them: a publisher here, on a feed of four fields (a top of book), and two subscriber
processes waiting with the backend, one following every change and one only the changes of
some fields (``on=``). Each must see exactly the changes a model of the feed predicts, once
each, in order, with every field's value and the names of the fields each change set.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from .._values import I64_MAX
from .._wait import select
from .._wait.conformance import WAIT_LIMIT, BackendLike, Check, Skip, _Child

FIELDS = "bid:f64,ask:f64,bid_size:i64,ask_size:i64"
NAMES = ("bid", "ask", "bid_size", "ask_size")
#: The fields the second subscriber follows.
ON = ("ask", "ask_size")


#: What the publisher does, in order: (symbol, fields) for a publish; a list of them for a batch.
Step = Tuple[str, Dict[str, Any]]
SCRIPT: List[Any] = [
    ("ES", {"bid": 5201.25, "ask": 5201.5, "bid_size": 12, "ask_size": 3}),  # a first value: every field
    ("ES", {"bid": 5201.5}),  # one field; the others keep their values
    ("ES", {"bid": 5201.5, "bid_size": 12}),  # the same values again: no change
    ("ES", {"ask": 5201.75, "ask_size": 7}),
    ("NQ", {"bid": 18000.25, "ask": 18000.5}),  # a first value: every field, the sizes 0
    ("ES", {"bid_size": I64_MAX, "ask_size": -I64_MAX - 1}),  # the ends of the i64 range, exactly
    ("ES", {"bid": 0.1 + 0.2, "ask_size": -I64_MAX - 1}),  # a float's every bit; one field unchanged
    [("ES", {"ask": 5202.0}), ("NQ", {"bid_size": 5}), ("ES", {"ask": 5202.0})],  # a batch, one repeat
    ("NQ", {"ask_size": 9, "bid": 18000.0}),
]


class _FieldsChild(_Child):
    """A subscriber process running ``child_main``."""

    _SCRIPT = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from pricefeed._cli.selftest import child_main; sys.exit(child_main(sys.argv[2:]))"
    )


def _expected() -> List[Tuple[str, Dict[str, Any], List[str]]]:
    """(symbol, fields, changed) for each change SCRIPT makes, in order, from a model of the feed."""
    current: Dict[str, Dict[str, Any]] = {}
    out = []
    for step in SCRIPT:
        for symbol, given in step if isinstance(step, list) else [step]:
            before = current.get(symbol)
            after = dict(before or dict.fromkeys(NAMES, 0))
            after.update(given)
            bid, ask = after["bid"], after["ask"]
            after["bid"], after["ask"] = float(bid), float(ask)
            changed = [n for n in NAMES if before is None or before[n] != after[n]]
            if changed:
                current[symbol] = after
                out.append((symbol, dict(after), changed))
    return out


def check_fields_round_trip(backend: BackendLike) -> str:
    """A feed of four fields (f64 and i64) from a publisher here to two subscriber processes
    waiting with this backend, one of them on some fields only: each change once, in order,
    with every value exact and the fields it set."""
    from .._roles.admin import remove
    from .._roles.publisher import Publisher

    b = select(backend) if isinstance(backend, str) else backend
    if select(b.name) is not b:
        raise Skip(f"backend object {b.name!r} is not what select({b.name!r}) gives, so no child process can use it")
    feed = f"sf-{os.getpid()}-{secrets.token_hex(3)}"
    want = _expected()
    on_want = [w for w in want if set(w[2]) & set(ON)]
    pub = Publisher.create(feed, fields=FIELDS)
    children: List[_FieldsChild] = []
    try:
        every = _FieldsChild(feed, b.name, len(want), "-")
        children.append(every)
        some = _FieldsChild(feed, b.name, len(on_want), ",".join(ON))
        children.append(some)
        for child in children:
            child.expect("ready", "start")
        if tuple(n for n, _ in pub.fields) != NAMES:
            raise AssertionError(f"the feed was created with fields {pub.fields}, not {FIELDS}")
        changes = 0
        for step in SCRIPT:
            if isinstance(step, list):
                changes += pub.publish_many(step)
            else:
                changes += pub.publish(step[0], **step[1])
        if changes != len(want):
            raise AssertionError(f"the publisher made {changes} changes; {len(want)} expected")
        for child, expected, about in ((every, want, "every change"), (some, on_want, f"on={','.join(ON)}")):
            _compare(child, expected, about)
            child.finish()
        _compare_snapshot(feed, want)
    finally:
        for child in children:
            try:
                child.close()
            except Exception:
                pass
        pub.close()
        remove(feed)
    on = ",".join(ON)
    return f"{len(want)} changes of 4 fields seen once each, in order, with the fields they set; {len(on_want)} on {on}"


def _compare(child: _FieldsChild, expected: List[Tuple[str, Dict[str, Any], List[str]]], about: str) -> None:
    seen: Set[int] = set()
    last = 0
    for k, (symbol, fields, changed) in enumerate(expected):
        line = child.readline(what=f"{about}: change {k + 1} of {len(expected)}")
        try:
            seq, got_symbol, got_fields, got_changed = json.loads(line)
        except ValueError:
            raise AssertionError(f"{about}: the subscriber said {line!r}, expected a change") from None
        if seq <= last or seq in seen:
            raise AssertionError(f"{about}: change {k + 1} has seq {seq}, after seq {last}")
        seen.add(seq)
        last = seq
        got = (got_symbol, got_fields, got_changed)
        if got != (symbol, fields, changed):
            raise AssertionError(
                f"{about}: change {k + 1} (seq {seq}) was {got!r}, expected {(symbol, fields, changed)!r}"
            )
        for name in ("bid_size", "ask_size"):
            if type(got_fields[name]) is not int:
                raise AssertionError(f"{about}: {name} of seq {seq} is {got_fields[name]!r}, not an integer")


def _compare_snapshot(feed: str, want: List[Tuple[str, Dict[str, Any], List[str]]]) -> None:
    from .._roles.subscriber import Subscriber

    final: Dict[str, Dict[str, Any]] = {}
    for symbol, fields, _ in want:
        final[symbol] = fields
    with Subscriber(feed) as sub:
        got = {symbol: q.fields for symbol, q in sub.snapshot().items()}
    if got != final:
        raise AssertionError(f"the feed's values are {got!r}, expected {final!r}")


def child_main(argv: Sequence[str]) -> int:
    """``feed backend count on``: follow ``feed`` with ``backend``, print "ready", then each
    change as JSON ``[seq, symbol, fields, changed]``; exit 0 after ``count`` of them. ``on``:
    field names separated by commas, or "-" for every change."""
    from .._roles.subscriber import Subscriber
    from .._values import Quote

    feed, backend_name, count, on = argv
    fields: Optional[List[str]] = None if on == "-" else on.split(",")
    with Subscriber(feed, backend=backend_name) as sub:
        events = sub.updates(timeout=WAIT_LIMIT, on=fields)  # the start is taken here: before "ready"
        print("ready", flush=True)
        got = 0
        for event in events:
            if isinstance(event, Quote):
                print(json.dumps([event.seq, event.symbol, event.fields, list(event.changed)]), flush=True)
                got += 1
                if got == int(count):
                    return 0
            else:
                print("event", type(event).__name__, flush=True)
    return 1


CHECK = Check(
    "fields_round_trip",
    check_fields_round_trip,
    "a feed of 4 fields to 2 subscriber processes (one on some fields): values and changed fields",
)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(child_main(sys.argv[1:]))
