"""What the library hands out (Quote, Gap) and the rules a symbol and a price must meet."""

from __future__ import annotations

from typing import NamedTuple, Optional

from ._errors import InvalidPrice, InvalidSymbol
from ._protocol import layout as L

__all__ = ["Quote", "Gap", "PublisherGone", "PublisherRestarted", "Reset", "check_symbol", "check_price"]


class Quote(NamedTuple):
    """One symbol's price as set by the change ``seq`` at ``time_ns`` (ns since the epoch).

    A copy taken inside the seqlock: never a view into shared memory."""

    symbol: str
    price: float
    time_ns: int
    seq: int


class Gap(NamedTuple):
    """The subscriber fell more than a ring's length behind and jumped over the changes with
    sequence numbers first_seq to last_seq, both included. Right after this event come the
    latest values of the (wanted) symbols that changed in that range, once each, in feed order,
    each with its own sequence in the range; ``missed`` is every other change of the range, so
    ``missed`` + those values == last_seq - first_seq + 1. ``missed`` counts changes of the
    whole feed: for a subscriber of a few symbols it includes changes of symbols it did not
    ask for. Never reported with ``missed`` 0. A change whose details were lost gives
    Gap(1, s, s)."""

    missed: int
    first_seq: int
    last_seq: int


def check_symbol(symbol: object) -> bytes:
    """The symbol's bytes, or InvalidSymbol stating the rule and the value."""
    if isinstance(symbol, str):
        raw = symbol.encode("ascii") if symbol.isascii() else b""
        if 1 <= len(raw) <= L.SYMBOL_MAX and all(0x21 <= b <= 0x7E for b in raw):
            return raw
    raise InvalidSymbol(
        f"symbol must be 1 to {L.SYMBOL_MAX} printable ASCII characters without spaces: symbol={symbol!r}"
    )


def check_price(price: object, symbol: object = None) -> float:
    """The price as a finite float, or InvalidPrice stating the rule and the value."""
    if type(price) is float:
        p = price
    elif isinstance(price, (str, bytes, bytearray, bool)) or price is None:
        raise InvalidPrice(_price_msg(price, symbol, "a real number"))
    else:
        try:
            p = float(price)  # type: ignore[arg-type]  # int, Decimal, Fraction, numpy scalars
        except (TypeError, ValueError, OverflowError):
            raise InvalidPrice(_price_msg(price, symbol, "a real number within float range")) from None
    # For a finite p, p - p is 0.0 (falsy); for NaN or an infinity it is NaN (truthy).
    if p - p:
        raise InvalidPrice(_price_msg(price, symbol, "a finite number (not NaN or infinite)"))
    return p


def _price_msg(price: object, symbol: object, rule: str) -> str:
    where = f" for symbol {symbol!r}" if symbol is not None else ""
    return f"price{where} must be {rule}: price={price!r}"


class PublisherGone(NamedTuple):
    """The publisher that held the feed while this subscriber followed it has gone (``pid``,
    when known), and none has taken over yet. ``clean``: it closed the feed cleanly (every
    change it began is complete); False when it died, or exited without closing, or was a
    writer that does not say. Reported once per publisher, within a second, while the
    subscriber waits; never for a departure before the subscriber attached (``status()``
    says how the feed stands). Changes resume when a new publisher takes over."""

    pid: Optional[int]
    head_seq: int
    clean: bool = False


class PublisherRestarted(NamedTuple):
    """A new publisher (``pid``) has taken over a feed whose previous publisher did not close
    it cleanly (it died, most likely), so it may have repaired or republished what it found;
    ``epoch`` counts takeovers. The sequence continues from ``head_seq``: nothing is delivered
    twice. A takeover after a clean close is not reported: nothing was left to repair."""

    pid: Optional[int]
    epoch: int
    head_seq: int


class Reset(NamedTuple):
    """The feed's segment was removed and created anew under the same name (a new
    ``incarnation``); the subscriber has re-attached to it. Its sequence numbers start again,
    so they are not comparable with those before. Right after this come the current values of
    the new feed's (chosen) symbols, then its live changes."""

    incarnation: int
    head_seq: int


#: The name of each event in JSON output and in docs: {"event": NAME, ...its fields}.
EVENT_NAMES = {Gap: "gap", PublisherGone: "publisher_gone", PublisherRestarted: "publisher_restarted", Reset: "reset"}
