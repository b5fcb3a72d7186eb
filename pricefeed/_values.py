"""What the library hands out (Quote, Gap, ...), and the rules a symbol and a field value must meet."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple, Type, Union

from ._errors import InvalidField, InvalidGeometry, InvalidPrice, InvalidSymbol
from ._protocol import layout as L

__all__ = [
    "Quote",
    "Gap",
    "PublisherGone",
    "PublisherRestarted",
    "Reset",
    "check_symbol",
    "check_price",
    "quote_type",
    "parse_fields",
    "format_fields",
]

Fields = Tuple[Tuple[str, int], ...]


class Quote(tuple):  # type: ignore[type-arg]
    """One symbol's record as set by the change ``seq`` at ``time_ns`` (ns since the epoch).

    Every field of the feed's schema is an attribute (``q.price``; ``q.bid``, ``q.ask``), and
    ``fields`` maps each name to its value; ``changed`` names the fields that change changed
    (``changed_mask`` has bit i set for field i). For a catch-up after a Gap or a conflated
    quote it names every field changed since the subscriber last heard of the symbol.

    A copy taken inside the seqlock: never a view into shared memory. It is a tuple,
    ``(symbol, *values, time_ns, seq, changed_mask)``, with one class per schema;
    ``Quote(symbol, price, time_ns, seq)`` makes one of the default schema (a ``price``)."""

    __slots__ = ()
    if TYPE_CHECKING:  # a field is an attribute of its schema's class: q.price, q.bid

        def __getattr__(self, name: str) -> Any: ...

    #: The schema: (name, type) per field.
    schema: Fields = L.DEFAULT_FIELDS
    _names: Tuple[str, ...] = ("price",)
    _build: Callable[..., Quote]

    def __new__(cls, symbol: str, *args: Any, changed: Union[int, Iterable[str], None] = None) -> Quote:
        if cls is Quote:
            cls = _DEFAULT
        n = len(cls._names)
        if len(args) != n + 2:
            raise TypeError(f"Quote({', '.join(('symbol', *cls._names))}, time_ns, seq) takes {n + 3} values")
        return tuple.__new__(cls, (symbol, *args, cls._mask(changed)))

    @classmethod
    def _mask(cls, changed: Union[int, Iterable[str], None]) -> int:
        if changed is None:
            return (1 << len(cls._names)) - 1
        if isinstance(changed, int):
            return changed
        names = cls._names
        return sum(1 << names.index(name) for name in set(changed))

    symbol: str = property(operator.itemgetter(0))  # type: ignore[assignment]
    time_ns: int = property(operator.itemgetter(-3))  # type: ignore[assignment]
    seq: int = property(operator.itemgetter(-2))  # type: ignore[assignment]
    changed_mask: int = property(operator.itemgetter(-1))  # type: ignore[assignment]

    @property
    def fields(self) -> Dict[str, Any]:
        """Field name -> value, in schema order."""
        return dict(zip(self._names, self[1:-3]))

    @property
    def changed(self) -> Tuple[str, ...]:
        """The names of the fields this change changed, in schema order."""
        mask = self[-1]
        return tuple(name for k, name in enumerate(self._names) if mask >> k & 1)

    def _asdict(self) -> Dict[str, Any]:
        """symbol, every field, time_ns, seq and changed (a list of names): what --json prints."""
        out: Dict[str, Any] = {"symbol": self[0]}
        out.update(zip(self._names, self[1:-3]))
        out["time_ns"] = self[-3]
        out["seq"] = self[-2]
        out["changed"] = list(self.changed)
        return out

    def _with_changed(self, mask: int) -> Quote:
        """This quote with ``mask`` as its changed fields (conflation merges them)."""
        return tuple.__new__(type(self), (*self[:-1], mask))

    def __repr__(self) -> str:
        fields = "".join(f", {name}={value!r}" for name, value in zip(self._names, self[1:-3]))
        return f"Quote(symbol={self[0]!r}{fields}, time_ns={self[-3]!r}, seq={self[-2]!r}, changed={self.changed!r})"

    def __reduce__(self) -> Tuple[Any, ...]:
        return _rebuild, (self.schema, tuple(self))


_TYPES: Dict[Fields, Type[Quote]] = {}


def quote_type(fields: Fields) -> Type[Quote]:
    """The Quote class of this schema (one per schema, made once): a field's attribute is a
    C-level item getter, as a namedtuple's is."""
    found = _TYPES.get(fields)
    if found is not None:
        return found
    names = tuple(name for name, _ in fields)
    attrs: Dict[str, Any] = {"__slots__": (), "schema": fields, "_names": names, "__doc__": Quote.__doc__}
    for k, name in enumerate(names):
        attrs[name] = property(operator.itemgetter(1 + k), doc=f"Field {name} ({L.TYPE_NAMES[fields[k][1]]}).")
    cls: Any = type("Quote", (Quote,), attrs)
    cls.__module__ = Quote.__module__
    new = tuple.__new__

    def build(symbol: str, values: Tuple[Any, ...], time_ns: int, seq: int, changed: int) -> Quote:
        return new(cls, (symbol, *values, time_ns, seq, changed))  # type: ignore[no-any-return]

    cls._build = staticmethod(build)
    _TYPES[fields] = cls
    return cls  # type: ignore[no-any-return]


def _rebuild(fields: Fields, items: Tuple[Any, ...]) -> Quote:
    schema: Any = tuple(map(tuple, fields))
    return tuple.__new__(quote_type(schema), items)


_DEFAULT = quote_type(L.DEFAULT_FIELDS)


def parse_fields(spec: Union[str, Iterable[Any], None]) -> Fields:
    """A schema from "bid:f64,ask:f64,bid_size:i64", from ["bid", ("size", "i64"), ...] (a
    bare name is a f64), or None for the default; InvalidGeometry saying what is wrong."""
    if spec is None:
        return L.DEFAULT_FIELDS
    items: List[Any]
    if isinstance(spec, str):
        items = [part.strip() for part in spec.split(",")] if spec.strip() else []
    else:
        items = list(spec)
    kinds = {v: k for k, v in L.TYPE_NAMES.items()}
    out = []
    kind: Any
    for item in items:
        if isinstance(item, str):
            name, _, kind = item.partition(":")
            kind = kind.strip() or "f64"
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            name, kind = item
            kind = L.TYPE_NAMES.get(kind, kind) if isinstance(kind, int) else kind  # (name, 1) as fields gives it
        else:
            raise InvalidGeometry(f"a field is NAME or NAME:TYPE (f64 or i64): got {short_repr(item)}")
        if kind not in kinds:
            shown = short_repr(str(name).strip())
            raise InvalidGeometry(f"field {shown} has type {short_repr(kind)}; expected f64 or i64")
        out.append((str(name).strip(), kinds[kind]))
    try:
        return L.check_fields(out)
    except ValueError as exc:
        raise InvalidGeometry(f"bad schema: {exc}") from None


def short_repr(value: object) -> str:
    """repr(value), cut to 60 characters: messages quote what was given, never all of it."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_fields(fields: Fields) -> str:
    """The schema as --fields takes it: "bid:f64,ask:f64"."""
    return ",".join(f"{name}:{L.TYPE_NAMES[kind]}" for name, kind in fields)


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


def _price_msg(price: object, symbol: object, rule: str, field: str = "price") -> str:
    where = f" for symbol {symbol!r}" if symbol is not None else ""
    return f"{field}{where} must be {rule}: {field}={price!r}"


I64_MIN, I64_MAX = L.I64_RANGE.start, L.I64_RANGE.stop - 1


def check_value(kind: int, value: object, field: str, symbol: object = None) -> Any:
    """``value`` as field ``field`` of type ``kind`` stores it: a finite float for f64 (as
    check_price), an int in the i64 range for i64 (a bool or a float is refused: a float cannot
    hold every i64, and 3.0 for a size is more likely a mistake than a size). InvalidField
    (InvalidPrice for a float field) naming the field, the rule and the value."""
    if kind == L.TYPE_F64:
        if type(value) is float and not value - value:
            return value
        try:
            return check_price(value, symbol)
        except InvalidPrice as exc:
            if field == "price":
                raise
            raise InvalidPrice(str(exc).replace("price", field, 2)) from None
    if type(value) is int and I64_MIN <= value <= I64_MAX:
        return value
    where = f" for symbol {symbol!r}" if symbol is not None else ""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InvalidField(f"{field}{where} must be a whole number (i64): {field}={value!r}")
    number = operator.index(value)  # numpy integers
    if not I64_MIN <= number <= I64_MAX:
        raise InvalidField(f"{field}{where} must be from {I64_MIN} to {I64_MAX} (i64): {field}={value!r}")
    return number


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
