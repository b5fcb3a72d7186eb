"""Records of several fields, in real processes on real shared memory: a change is whole (no
reader ever sees fields of two changes, by the seqlock or by the ring), and ``on=`` delivers
each change of the chosen fields exactly once, in order, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest
from _workers import BOOK, WIDE
from conftest import Proc, worker

from pricefeed import Gap, InvalidField, InvalidPrice, Publisher, Subscriber

pytestmark = pytest.mark.usefixtures("impl")


def _race(feed: str, procs: List[Proc], reader: str, reads: int, ring_size: int, count: int, *extra: object) -> list:
    """Two reader processes of kind ``reader``, attached first, then a publisher writing
    ``count`` changes of the 16-field schema as fast as it can; the readers' reports."""
    Publisher.create(feed, capacity=4, ring_size=ring_size, fields=WIDE).close()
    readers = [Proc(worker(reader, feed, reads, *extra)) for _ in range(2)]
    procs.extend(readers)
    for r in readers:
        assert r.readline() == "ready"
    pub = Proc(worker("wide_publish", feed, count))
    procs.append(pub)
    assert pub.readline() == "ready"
    results = [r.json_line(timeout=240) for r in readers]
    pub.json_line(timeout=240)
    return results


def test_no_get_ever_mixes_two_changes(feed: str, procs: List[Proc]) -> None:
    """The seqlock path: two processes get() two symbols at least a million times in all
    while a publisher rewrites their 16 fields (three cache lines) 300,000 times as fast as
    it can: every quote holds one change's values in every field, and none goes back."""
    for res in _race(feed, procs, "wide_read", 500_000, 1024, 300_000):
        assert res["reads"] >= 500_000
        assert res["torn"] == 0 and res["backwards"] == 0, res
        assert res["distinct"] > 1000, f"the readers did not race the writer: {res}"


def test_no_ring_record_ever_mixes_two_changes(feed: str, procs: List[Proc]) -> None:
    """The ring path: records read at the head of a 4-record ring that the publisher rewrites
    as fast as it can: each read is one change whole, or is reported lapped."""
    for res in _race(feed, procs, "wide_records", 300_000, 4, 300_000):
        assert res["torn"] == 0, res
        assert res["got"] > 1000 and res["lapped"] > 100, f"the readers did not race the writer: {res}"


def test_followers_never_see_a_mixed_change_even_when_lapped(feed: str, procs: List[Proc]) -> None:
    """updates() over a ring of 64: one follower keeps up (records from the ring), one pauses
    and is lapped (its catch-ups come from the slot table): no quote mixes two changes."""
    Publisher.create(feed, capacity=4, ring_size=64, fields=WIDE).close()
    fast, slow = Proc(worker("wide_follow", feed, 0)), Proc(worker("wide_follow", feed, 2000))
    procs.extend([fast, slow])
    for r in (fast, slow):
        assert r.readline() == "ready"
    pub = Proc(worker("wide_publish", feed, 100_000))
    procs.append(pub)
    assert pub.readline() == "ready"
    pub.json_line(timeout=240)
    results = [fast.json_line(timeout=240), slow.json_line(timeout=240)]
    for res in results:
        assert res["torn"] == 0 and res["disorder"] == 0, res
    assert results[1]["gaps"] >= 1, f"the slow follower was never lapped: {results[1]}"


def _rows(path: Path) -> list:
    return json.loads(path.read_text())


def test_on_delivers_each_change_of_its_fields_exactly_once(feed: str, procs: List[Proc], tmp_path: Path) -> None:
    """20,000 changes of random subsets of a top of book's fields, most not touching bid.
    A follower with on=bid gets exactly the changes that changed bid, in order, each with the
    values and the mask published; one with on=bid,ask_size exactly those that changed
    either; one with no on= every change."""
    total = 20_000
    Publisher.create(feed, capacity=32, ring_size=32768, fields=BOOK).close()
    ons = ["bid", "bid,ask_size", ""]
    outs = [tmp_path / f"sub{i}.json" for i in range(len(ons))]
    subs = [Proc(worker("fields_follow", feed, out, on)) for out, on in zip(outs, ons)]
    procs.extend(subs)
    for s in subs:
        assert s.readline() == "ready"
    log_path = tmp_path / "log.json"
    pub = Proc(worker("fields_publish", feed, total, 5, log_path))
    procs.append(pub)
    assert pub.readline() == "ready"
    assert pub.json_line(timeout=120)["changes"] == total
    log = json.loads(log_path.read_text())["log"]
    names = [n.split(":")[0] for n in BOOK.split(",")]
    for s, out, on in zip(subs, outs, ons):
        s.json_line(timeout=180)
        mask = sum(1 << names.index(n) for n in on.split(",")) if on else -1
        want = [["c", seq, sym, changed, values] for seq, sym, changed, values in log if changed & mask]
        got = _rows(out)
        assert got == want, f"on={on!r}: {len(got)} rows, {len(want)} expected"
    bid_changes = sum(1 for e in log if e[2] & 1)
    assert 0 < bid_changes < total // 4, f"most changes must touch other fields: {bid_changes} of {total}"


def test_on_with_conflation_and_laps_never_repeats_and_ends_on_the_final_book(
    feed: str, procs: List[Proc], tmp_path: Path
) -> None:
    """A slow follower with on=bid over a small ring (lapped: gaps, catch-ups) and a conflating
    one: no change twice, sequences only grow, every quote delivered from the ring changed bid,
    and each ends holding the publisher's final bid of every symbol that has one."""
    total = 30_000
    Publisher.create(feed, capacity=32, ring_size=256, fields=BOOK).close()
    outs = [tmp_path / "lapped.json", tmp_path / "conflated.json"]
    subs = [
        Proc(worker("fields_follow", feed, outs[0], "bid", "0", 300)),
        Proc(worker("fields_follow", feed, outs[1], "bid", "1", 300)),
    ]
    procs.extend(subs)
    for s in subs:
        assert s.readline() == "ready"
    log_path = tmp_path / "log.json"
    pub = Proc(worker("fields_publish", feed, total, 9, log_path))
    procs.append(pub)
    assert pub.readline() == "ready"
    pub.json_line(timeout=120)
    published = json.loads(log_path.read_text())
    by_seq = {seq: (sym, changed, values) for seq, sym, changed, values in published["log"]}
    final_bid = {sym: v["bid"] for sym, v in published["final"].items()}
    for s, out, conflated in zip(subs, outs, (False, True)):
        s.json_line(timeout=180)
        rows = _rows(out)
        seqs = [r[1] for r in rows if r[0] == "c"]
        assert seqs == sorted(set(seqs)), "a change twice, or out of order"
        after_gap = False
        bids = {}
        for row in rows:
            if row[0] == "g":
                after_gap = True
                continue
            _, seq, sym, changed, values = row
            assert by_seq[seq][0] == sym and by_seq[seq][2] == values, f"change {seq} delivered with other values"
            if not conflated and not after_gap:
                assert changed == by_seq[seq][1] and changed & 1, f"change {seq} did not change bid: {changed}"
            bids[sym] = values[0]
        # Each symbol's last bid change is delivered, in the ring or by a catch-up.
        assert {s: b for s, b in bids.items()} == {s: b for s, b in final_bid.items() if s in bids}
        assert set(bids) == {s for s, v in published["final"].items() if v["bid"] != 0.0 or s in bids}
    assert any(r[0] == "g" for r in _rows(outs[0])), "the slow follower was never lapped"


def test_on_refuses_a_field_the_feed_does_not_have(feed: str) -> None:
    with Publisher.create(feed, fields=BOOK), Subscriber(feed) as sub:
        with pytest.raises(InvalidField, match=r"has no field 'price'; its fields are bid, ask, bid_size, ask_size"):
            sub.updates(on=["price"])
        with pytest.raises(InvalidField, match="names no field"):
            sub.updates(on=[])
        assert not isinstance(sub.updates(on="bid"), Gap)


# -- the library's records, in one process ---------------------------------------------------------
def test_a_publish_sets_some_fields_and_keeps_the_others(feed: str) -> None:
    with Publisher.create(feed, fields=BOOK) as pub, Subscriber(feed) as sub:
        assert pub.fields == sub.fields == (("bid", 1), ("ask", 1), ("bid_size", 2), ("ask_size", 2))
        it = sub.updates(timeout=5)
        assert pub.publish("ES", bid=5201.25, ask=5201.5) is True
        assert pub.publish("ES", bid_size=12) is True
        assert pub.publish("ES", bid=5201.25, bid_size=12) is False, "the same values: no change"
        assert pub.publish("ES", bid=-0.0 + 5201.25, ask=5201.5, bid_size=12, ask_size=0) is False
        assert pub.publish("ES", ask=5201.75, ask_size=3) is True
        assert pub.publish("ES", bid=1, ask_size=2**63 - 1) is True, "an int for a float field is a float"
        got = [next(it) for _ in range(4)]
        assert [(q.seq, q.changed) for q in got] == [
            (1, ("bid", "ask", "bid_size", "ask_size")),  # a first value changes every field
            (2, ("bid_size",)),
            (3, ("ask", "ask_size")),
            (4, ("bid", "ask_size")),
        ]
        last = got[-1]
        assert last.fields == {"bid": 1.0, "ask": 5201.75, "bid_size": 12, "ask_size": 2**63 - 1}
        assert type(last.bid) is float and type(last.bid_size) is int
        assert sub["ES"] == last and sub["ES"].changed_mask == 0b1001
        assert sub.snapshot() == {"ES": last}
        assert pub.head == 4


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: p.publish("ES", bidd=1.0), InvalidField, "feed '.*' has no field 'bidd'; its fields are bid, ask"),
        (lambda p: p.publish("ES", bid_size=1.5), InvalidField, r"bid_size for symbol 'ES' must be a whole number"),
        (lambda p: p.publish("ES", bid_size=True), InvalidField, r"bid_size for symbol 'ES' must be a whole number"),
        (lambda p: p.publish("ES", bid_size="3"), InvalidField, "must be a whole number"),
        (lambda p: p.publish("ES", bid_size=2**63), InvalidField, r"must be from -9223372036854775808 to 9223"),
        (lambda p: p.publish("ES", bid_size=-(2**63) - 1), InvalidField, r"must be from -9223372036854775808"),
        (lambda p: p.publish("ES", ask=float("nan")), InvalidPrice, r"ask for symbol 'ES' must be a finite number"),
        (lambda p: p.publish("ES", ask=float("-inf"), bid=1.0), InvalidPrice, "must be a finite number"),
        (lambda p: p.publish("ES", ask="5"), InvalidPrice, "ask for symbol 'ES' must be a real number"),
        (lambda p: p.publish("ES", 5.0), InvalidField, "has fields bid, ask, bid_size, ask_size: name the ones"),
        (lambda p: p.publish("ES"), InvalidField, "publish of 'ES' sets no field"),
        (lambda p: p.publish("NEW", bid=1.0, x=2), InvalidField, "has no field 'x'"),
        (lambda p: p.publish_many([("ES", {"bid": 2.0}), ("ES", {"size": 1})]), InvalidField, "no field 'size'"),
        (lambda p: p.publish_many({"ES": {"bid": 2.0}, "NQ": 3.0}), InvalidField, "name the ones to set"),
        (lambda p: p.publish_many({"ES": {"ask_size": 0.5}}), InvalidField, "must be a whole number"),
    ],
)
def test_bad_records_are_refused_naming_the_field_and_nothing_is_written(
    feed: str, call: object, error: type, message: str
) -> None:
    with Publisher.create(feed, fields=BOOK) as pub, Subscriber(feed) as sub:
        pub.publish("ES", bid=1.0, ask=2.0, bid_size=3, ask_size=4)
        before = (pub.head, sub.snapshot(), sub.symbols())
        with pytest.raises(error, match=message):
            call(pub)  # type: ignore[operator]
        assert (pub.head, sub.snapshot(), sub.symbols()) == before
        assert pub.publish("ES", bid=1.5) is True, "the publisher goes on after a refusal"


def test_a_field_may_be_named_value_or_price_on_any_feed(feed: str) -> None:
    with Publisher.create(feed, fields="value:i64,price") as pub, Subscriber(feed) as sub:
        assert pub.publish("X", value=3, price=1.5)
        assert (sub["X"].value, sub["X"].price) == (3, 1.5)


def test_conflated_quotes_name_every_field_changed_since_the_last_one_taken(feed: str) -> None:
    with Publisher.create(feed, fields=BOOK) as pub, Subscriber(feed) as sub:
        pub.publish("ES", bid=1.0, ask=2.0)
        it = sub.updates(timeout=1, conflate=True)
        pub.publish("ES", bid=1.5)
        pub.publish("ES", ask_size=7)
        pub.publish("NQ", bid=3.0)
        pub.publish("ES", bid=1.25)
        nq, es = next(it), next(it)  # in the order of their newest changes
        assert (es.symbol, es.seq, es.changed) == ("ES", 5, ("bid", "ask_size"))
        assert (es.bid, es.ask, es.ask_size) == (1.25, 2.0, 7)
        assert (nq.symbol, nq.changed) == ("NQ", ("bid", "ask", "bid_size", "ask_size"))


def test_quotes_of_a_schema_pickle_and_compare(feed: str) -> None:
    import pickle

    from pricefeed import Quote

    with Publisher.create(feed, fields=BOOK) as pub, Subscriber(feed) as sub:
        pub.publish("ES", bid=1.0, ask=2.0, bid_size=3, ask_size=4)
        q = sub["ES"]
        assert isinstance(q, Quote) and pickle.loads(pickle.dumps(q)) == q
        assert repr(q).startswith("Quote(symbol='ES', bid=1.0, ask=2.0, bid_size=3, ask_size=4, time_ns=")
        assert q._asdict()["changed"] == ["bid", "ask", "bid_size", "ask_size"]
    one = Quote("A", 1.5, 7, 1)
    assert (one.symbol, one.price, one.time_ns, one.seq, one.changed) == ("A", 1.5, 7, 1, ("price",))
