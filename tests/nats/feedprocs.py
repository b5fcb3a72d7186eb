"""Programs the NATS tests run as real processes (``python feedprocs.py NAME ARGS...``), and the
check of what a follower of a mirrored feed saw.

The publisher counts: round r sets every symbol's record to n=r, bid=r+0.25, ask=r+0.5, so a
follower at the far end can tell a change it saw twice (n not growing), one out of order (n
falling), a torn record (bid or ask not matching n) and a final value short of the last round.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Dict, List

FIELDS = "n:i64,bid:f64,ask:f64"


def symbols(count: int) -> List[str]:
    """Symbol names with the characters a key must encode: dots, '=', '/', '~', '*', '>'."""
    shapes = ["S{}", "BRK.{}", "a=b/{}~", "x*{}>", "{}.."]
    return [shapes[k % len(shapes)].format(k) for k in range(count)]


def count_publish(feed: str, count: str, rounds: str, pause_ms: str = "0", end: str = "1") -> None:
    """Create ``feed``, say ready, wait for a line on stdin, then publish ``rounds`` rounds over
    ``count`` symbols, one publish per symbol, pausing ``pause_ms`` after each round; end the
    feed for good unless ``end`` is 0."""
    from pricefeed import Publisher

    names = symbols(int(count))
    with Publisher.create(feed, fields=FIELDS) as pub:
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()
        for r in range(1, int(rounds) + 1):
            for s in names:
                pub.publish(s, n=r, bid=r + 0.25, ask=r + 0.5)
            if float(pause_ms):
                time.sleep(float(pause_ms) / 1000)
        if end == "1":
            pub.end()
        print(json.dumps({"done": int(rounds)}), flush=True)


def follow(feed: str, out_path: str, timeout: str = "120") -> None:
    """Follow ``feed`` (waiting for it to appear) from its current values to its end; write
    every event as a row: ["q", symbol, n, bid, ask, seq], ["g", missed], ["e", name]."""
    from pricefeed import Gap, Quote, Subscriber

    rows: List[list] = []
    with Subscriber(feed, wait=float(timeout)) as sub:
        print(json.dumps({"ready": True}), flush=True)
        for ev in sub.updates(snapshot=True, timeout=float(timeout)):
            if isinstance(ev, Quote):
                rows.append(["q", ev.symbol, ev.n, ev.bid, ev.ask, ev.seq])
            elif isinstance(ev, Gap):
                rows.append(["g", ev.missed])
            else:
                rows.append(["e", type(ev).__name__])
    with open(out_path, "w") as f:
        json.dump(rows, f)
    print(json.dumps({"rows": len(rows)}), flush=True)


def check_mirrored(rows: List[list], names: List[str], rounds: int) -> Dict[str, int]:
    """What a follower of the mirror must have seen: each symbol's n only growing (never a
    change twice, never out of order), each record whole, local sequence numbers growing, and
    every symbol's last record the last round's."""
    last: Dict[str, int] = {}
    seqs = [r[5] for r in rows if r[0] == "q"]
    assert seqs == sorted(set(seqs)), "the mirror's feed delivered a sequence number twice or out of order"
    for kind, *rest in rows:
        if kind != "q":
            assert kind == "g", f"unexpected event {rest}"
            continue
        symbol, n, bid, ask, _ = rest
        assert (bid, ask) == (n + 0.25, n + 0.5), f"torn record of {symbol}: n={n} bid={bid} ask={ask}"
        assert n > last.get(symbol, 0), f"{symbol}: n={n} after n={last.get(symbol)}: a change twice or out of order"
        last[symbol] = n
    assert last == {s: rounds for s in names}, f"final values differ: {sorted(last.items())[:5]}..."
    return {"records": len(seqs), "gaps": sum(1 for r in rows if r[0] == "g")}


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
