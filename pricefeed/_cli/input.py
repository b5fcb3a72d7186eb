"""What the command line reads, and how it quotes a bad value back.

The rules of the file (docs/cli.md states the same ones for users):

Rule 1. A price is decimal text that PRICE_RE matches whole: digits with an optional sign, an
optional decimal point and an optional exponent. Nothing else: no spaces around it (a stray
space in ``AAPL= 5`` is a quoting mistake, not a value), no ``_`` (is ``1_000`` a thousand, or
a 1 and a typo?), no ``inf`` or ``nan`` (a feed refuses non-finite prices), no hex, no other
scripts' digits. Python's ``float()`` accepts all of these; the command line does not.

Rule 2. A price is stored as written or refused: a literal that overflows a float, or that is
nonzero and comes out as 0.0 or as a subnormal (smaller in magnitude than
``sys.float_info.min``, where a float loses precision), is refused. ``Publisher.publish``,
which takes floats, is not concerned: this grammar is about text.

Rule 3. A stream line is at most MAX_LINE bytes, its line end not counted. A longer one is
refused without ever being held whole: it is read in chunks and discarded up to its end, and
the lines after it are read as usual. A line that is not UTF-8 is refused, never a crash.

Rule 4. A value quoted in an error is bounded: at most QUOTE_CHARS characters of it, escaped
as ``ascii`` would (so that a control character or a byte that is not UTF-8 shows, and cannot
reach the terminal, and the message is ASCII whatever the terminal's encoding), and, when it
was cut, followed by its length.

Rule 5. A value is read as its field's type says: a f64 field's as a price (Rules 1 and 2), an
i64 field's as an optional sign and decimal digits (I64_RE) within the i64 range, nothing else
(no ``_``, no point, no exponent: a size written 1e3 or 12.0 is more likely a mistake than a
size). A JSON line's numbers follow the same rules on their literal text, and an i64 field takes
a JSON integer only. An error names the field (``bid for symbol 'ES' must be ...``); for the
default field, ``price``, that is the message the command line always gave.

Rule 6. What a line or the command line sets is decided by its shape, never by the feed's
schema: ``SYMBOL PRICE`` and ``SYMBOL=PRICE`` give a value without a name (a feed of one field
only), ``SYMBOL NAME=VALUE...`` names its fields, and a line that starts with ``{`` is a JSON
object (unless it is a valid ``SYMBOL PRICE`` line whose symbol starts with ``{``, as before).
The schema then says whether the names exist and how the values read.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, BinaryIO, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

from .._errors import InvalidField, InvalidGeometry, InvalidInput, InvalidName, InvalidPrice, InvalidSymbol
from .._protocol import layout as L
from .._registry.registry import check_label
from .._segment import NAME_MAX, check_name
from .._segment.common import resolve_owner
from .._values import I64_MAX, I64_MIN, Fields, check_symbol, parse_fields

__all__ = [
    "MAX_LINE",
    "QUOTE_CHARS",
    "PRICE_RE",
    "Line",
    "quote",
    "parse_price",
    "parse_symbol",
    "parse_assignment",
    "parse_line",
    "parse_i64",
    "parse_value",
    "parse_arguments",
    "parse_fields_option",
    "Schema",
    "read_lines",
    "decode_line",
    "parse_mode",
    "parse_capacity",
    "parse_ring",
    "checked_feed",
    "checked_owner",
]

#: Rule 3: the longest stream line, in bytes, without its end (\n or \r\n).
MAX_LINE = 4096
#: Rule 4: the most characters of a value an error message shows (after escaping).
QUOTE_CHARS = 80
#: Rule 1, whole: the decimal forms of a number, and nothing else.
PRICE_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

PRICE_RULE = (
    "must be a decimal number such as 187.25, -0.5 or 1.5e3 (digits, an optional sign, point and exponent; "
    "no spaces, underscores, inf, nan or hex)"
)
#: Rule 5: the text of an i64 value, whole.
I64_RE = re.compile(r"[+-]?[0-9]+")
I64_RULE = (
    "must be a whole number (i64) such as 12 or -3 (an optional sign and decimal digits; "
    "no spaces, underscores, point or exponent)"
)
_I64_DIGITS = len(str(I64_MAX))
_FIELD_SEPARATOR = re.compile(r"[ \t]+")
_DISCARD_CHUNK = 1 << 16


# -- Rule 4: quoting -------------------------------------------------------------------------------
def quote(text: str, length: Optional[int] = None, unit: str = "characters") -> str:
    """``text`` quoted as repr would, cut to QUOTE_CHARS characters with its length after.

    ``length`` is the length of the whole value when ``text`` is only its beginning (a line too
    long to keep); ``unit`` says what it counts."""
    total = len(text) if length is None else length
    shown = []
    used = 0
    for ch in text[:QUOTE_CHARS]:
        escaped = _escape(ch)
        if used + len(escaped) > QUOTE_CHARS:
            break
        shown.append(escaped)
        used += len(escaped)
    body = "".join(shown)
    if len(shown) == total:
        return f"'{body}'"
    return f"'{body}...' ({total} {unit})"


def _escape(ch: str) -> str:
    if ch in "\\'":
        return "\\" + ch
    if ch.isprintable() and ch.isascii():
        return ch
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by the surrogateescape handler
        return f"\\x{code - 0xDC00:02x}"
    return ch.encode("unicode_escape").decode("ascii")  # \n, \t, \x1b, \u200b, ...


# -- Rules 1 and 2: prices and symbols ---------------------------------------------------------
def parse_price(text: str, symbol: str, field: str = "price") -> float:
    """The float that ``text`` writes, or InvalidPrice naming the field, the rule and the value."""
    where = f"{field} for symbol {symbol!r}"
    if not PRICE_RE.fullmatch(text):
        raise InvalidPrice(f"{where} {PRICE_RULE}: got {quote(text)}")
    value = float(text)
    if math.isinf(value):
        raise InvalidPrice(f"{where} must be at most {sys.float_info.max!r} in magnitude: got {quote(text)}")
    if abs(value) < sys.float_info.min and _nonzero(text):
        raise InvalidPrice(
            f"{where} must be 0 or at least {sys.float_info.min!r} in magnitude "
            f"(a smaller number cannot be stored as written): got {quote(text)}"
        )
    return value


def _nonzero(text: str) -> bool:
    """True when the literal's digits, before any exponent, are not all zeros."""
    mantissa = text.lower().partition("e")[0]
    return any(c in "123456789" for c in mantissa)


def parse_symbol(text: str) -> str:
    """``text`` if it is a valid symbol, else InvalidSymbol with the value quoted (Rule 4)."""
    try:
        check_symbol(text)
    except InvalidSymbol:
        raise InvalidSymbol(
            f"symbol must be 1 to {L.SYMBOL_MAX} printable ASCII characters without spaces: got {quote(text)}"
        ) from None
    return text


def parse_i64(text: str, symbol: str, field: str) -> int:
    """The integer that ``text`` writes (Rule 5), or InvalidField naming the field, the rule and
    the value."""
    where = f"{field} for symbol {symbol!r}"
    if not I64_RE.fullmatch(text):
        raise InvalidField(f"{where} {I64_RULE}: got {quote(text)}")
    # Counted before int(), which refuses (and is slow on) thousands of digits.
    if len(text.lstrip("+-").lstrip("0")) <= _I64_DIGITS and I64_MIN <= int(text) <= I64_MAX:
        return int(text)
    raise InvalidField(f"{where} must be from {I64_MIN} to {I64_MAX} (i64): got {quote(text)}")


def parse_value(text: str, symbol: str, field: str, kind: int) -> Value:
    """``text`` read as field ``field`` of type ``kind`` stores it (Rule 5)."""
    if kind == L.TYPE_I64:
        return parse_i64(text, symbol, field)
    return parse_price(text, symbol, field)


# -- Rule 6: what a line or the command line sets ------------------------------------------------
Value = Union[float, int]
#: What one line, or one record of the command line, publishes: a symbol and either the value
#: of a feed's one field or the values of the fields it names (``Publisher.publish_many``'s items).
Item = Tuple[str, Union[Value, Dict[str, Value]]]


class Schema:
    """A feed's fields, as the command line reads values for them; ``feed`` names it in errors."""

    def __init__(self, fields: Fields, feed: str) -> None:
        self.fields = fields
        self.feed = feed
        self.names = tuple(name for name, _ in fields)
        self.kinds = dict(fields)

    @property
    def single(self) -> bool:
        """A feed of one field: ``SYMBOL PRICE`` and ``SYMBOL=PRICE`` give its value."""
        return len(self.fields) == 1

    def listed(self) -> str:
        return ", ".join(self.names)

    def example(self) -> str:
        """A record that names fields, such as ``ES bid=5201.25 ask=5201.5``."""
        return "ES " + " ".join(f"{name}={_SAMPLE[kind][k]}" for k, (name, kind) in enumerate(self.fields[:2]))

    def json_example(self) -> str:
        name, kind = self.fields[0]
        return f'{{"symbol": "ES", "{name}": {_SAMPLE[kind][0]}}}'

    def kind_of(self, name: str) -> int:
        """The type of field ``name``, or InvalidField naming the fields there are."""
        kind = self.kinds.get(name)
        if kind is None:
            raise InvalidField(f"feed {self.feed!r} has no field {quote(name)}; its fields are {self.listed()}")
        return kind

    def unnamed(self, symbol: str, text: str, source: str) -> Item:
        """A value written without a name (``SYMBOL PRICE``, ``SYMBOL=PRICE``): the value of a
        feed's one field; InvalidField on a feed of several."""
        if not self.single:
            raise InvalidField(
                f"feed {self.feed!r} has fields {self.listed()}: name the ones to set, as in "
                f"{self.example()!r}; got a value without a name: {quote(source)}"
            )
        name, kind = self.fields[0]
        return symbol, parse_value(text, symbol, name, kind)

    def named(self, symbol: str, assignments: List[str], source: str) -> Item:
        """``NAME=VALUE`` texts (split at the first ``=``) for ``symbol``, a valid symbol."""
        values: Dict[str, Value] = {}
        for assignment in assignments:
            name, _, text = assignment.partition("=")
            kind = self.kind_of(name)
            if name in values:
                raise InvalidField(f"field {name!r} is given twice for symbol {symbol!r}: got {quote(source)}")
            values[name] = parse_value(text, symbol, name, kind)
        return symbol, values


#: Values for the examples errors give: the first field's, the second's.
_SAMPLE = {L.TYPE_F64: ("5201.25", "5201.5"), L.TYPE_I64: ("12", "3")}


def parse_assignment(text: str, schema: Schema) -> Item:
    """``SYMBOL=PRICE``, split at the last ``=``."""
    symbol, sep, price = text.rpartition("=")
    if not sep:
        raise InvalidInput(f"expected SYMBOL=PRICE, such as AAPL=187.5: got {quote(text)}")
    return schema.unnamed(parse_symbol(symbol), price, text)


def parse_arguments(args: List[str], schema: Schema) -> List[Item]:
    """The command line's values: ``SYMBOL=PRICE`` (an argument with ``=`` that follows no
    symbol), or ``SYMBOL NAME=VALUE...`` (an argument without ``=``, then every argument with
    one up to the next without)."""
    items: List[Item] = []
    k = 0
    while k < len(args):
        arg = args[k]
        k += 1
        if "=" in arg:
            items.append(parse_assignment(arg, schema))
            continue
        named: List[str] = []
        while k < len(args) and "=" in args[k]:
            named.append(args[k])
            k += 1
        if not named:
            if schema.single:
                raise InvalidInput(f"expected SYMBOL=PRICE, such as AAPL=187.5: got {quote(arg)}")
            raise InvalidInput(f"expected SYMBOL NAME=VALUE..., such as {schema.example()}: got {quote(arg)}")
        items.append(schema.named(parse_symbol(arg), named, " ".join([arg, *named])))
    return items


def parse_line(text: str, schema: Schema) -> Optional[Item]:
    """A stream line (Rule 6): ``SYMBOL PRICE`` or ``SYMBOL=PRICE`` (a feed of one field),
    ``SYMBOL NAME=VALUE...``, words separated by spaces or tabs, or a JSON object; None for a
    blank line or a comment (``#`` first)."""
    body = text.strip(" \t")
    if not body or body.startswith("#"):
        return None
    if body.startswith("{"):
        return _json_line(body, schema)
    try:
        return _words_line(body, schema)
    except InvalidInput as exc:
        if body[0] in '["':  # JSON that is not an object?
            value = _json_or_none(body)
            if value is not None:
                raise InvalidInput(
                    f"a JSON line must be an object such as {schema.json_example()}: "
                    f"got {_describe(value)}: {quote(body)}"
                ) from None
        raise exc from None


def _words_line(body: str, schema: Schema) -> Item:
    words = _FIELD_SEPARATOR.split(body)
    if len(words) == 1 and "=" in body:
        return parse_assignment(body, schema)
    if len(words) == 2 and "=" not in words[1]:
        return schema.unnamed(parse_symbol(words[0]), words[1], body)
    if len(words) >= 2 and all("=" in w for w in words[1:]):
        return schema.named(parse_symbol(words[0]), words[1:], body)
    if schema.single:
        raise InvalidInput(f"expected 'SYMBOL PRICE' or 'SYMBOL=PRICE', such as 'AAPL 187.5': got {quote(body)}")
    raise InvalidInput(
        f"expected 'SYMBOL NAME=VALUE...', such as {schema.example()!r}, or a JSON object such as "
        f"{schema.json_example()}: got {quote(body)}"
    )


# -- JSON lines ------------------------------------------------------------------------------------
class _Number:
    """A JSON number as its text wrote it (Rule 5 reads the text): ``integer`` for a literal
    without point or exponent, None for NaN and the infinities (which JSON does not have)."""

    __slots__ = ("integer", "text")

    def __init__(self, text: str, integer: Optional[bool]) -> None:
        self.text = text
        self.integer = integer


class _Object(List[Tuple[str, Any]]):
    """A JSON object's (key, value) pairs, in order, a key given twice included."""


#: The deepest nesting a JSON line may have: a record is one flat object, so anything deeper is
#: refused as nested too deep, the same on every Python (whose parser's own limit varies).
MAX_JSON_DEPTH = 32


def _too_deep(value: Any) -> bool:
    """The parsed value nests objects or arrays deeper than MAX_JSON_DEPTH."""
    level = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [v for item in level if isinstance(item, list) for v in _inside(item)]
        if not level:
            return False
    return any(isinstance(item, list) for item in level)


def _inside(item: List[Any]) -> List[Any]:
    """What an array (a list) or an object (an _Object of pairs) holds."""
    return [v for _, v in item] if isinstance(item, _Object) else item


def _json(body: str) -> Any:
    value = json.loads(
        body,
        parse_float=lambda t: _Number(t, False),
        parse_int=lambda t: _Number(t, True),
        parse_constant=lambda t: _Number(t, None),
        object_pairs_hook=_Object,
    )
    if _too_deep(value):  # where this Python's parser went deeper than another's would
        raise RecursionError("nested too deep")
    return value


def _json_or_none(body: str) -> Any:
    try:
        return _json(body)
    except (ValueError, RecursionError):
        return None


def _describe(value: Any) -> str:
    """A JSON value as an error names it."""
    if isinstance(value, _Number):
        return quote(value.text)
    if isinstance(value, str):
        return f"the string {quote(value)}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return "an object" if isinstance(value, _Object) else "an array"


def _json_line(body: str, schema: Schema) -> Item:
    try:
        value = _json(body)
    except (ValueError, RecursionError) as exc:
        try:
            return _words_line(body, schema)  # a symbol that starts with "{", as before
        except InvalidInput:
            pass
        detail = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "nested too deep"
        raise InvalidInput(
            f"a line that starts with {{ must be a JSON object such as {schema.json_example()} ({detail}): "
            f"got {quote(body)}"
        ) from None
    pairs: _Object = value  # it starts with {, so it is an object
    keys = set()
    for key, _ in pairs:
        if key in keys:
            raise InvalidInput(f"a JSON line may name a key once: {quote(key)} is there twice: got {quote(body)}")
        keys.add(key)
    if "symbol" not in keys:
        raise InvalidInput(f'a JSON line must have a "symbol", as in {schema.json_example()}: got {quote(body)}')
    raw = next(v for k, v in pairs if k == "symbol")
    if not isinstance(raw, str):
        raise InvalidSymbol(f'"symbol" must be a JSON string such as "ES": got {_describe(raw)}')
    symbol = parse_symbol(raw)
    values: Dict[str, Value] = {}
    for key, v in pairs:
        if key != "symbol":
            values[key] = _json_value(v, symbol, key, schema.kind_of(key))
    if not values:
        raise InvalidField(
            f"a JSON line must set at least one field of feed {schema.feed!r} ({schema.listed()}): got {quote(body)}"
        )
    return symbol, values


def _json_value(value: Any, symbol: str, field: str, kind: int) -> Value:
    where = f"{field} for symbol {symbol!r}"
    number = value if isinstance(value, _Number) else None
    if kind == L.TYPE_F64:
        if number is None:
            raise InvalidPrice(f"{where} must be a JSON number such as 187.25: got {_describe(value)}")
        if number.integer is None:
            raise InvalidPrice(f"{where} must be a finite number: got {number.text}")
        return parse_price(number.text, symbol, field)
    if number is not None and number.integer:
        return parse_i64(number.text, symbol, field)
    why = " (a float cannot hold every i64)" if number is not None and number.integer is False else ""
    raise InvalidField(f"{where} must be a JSON integer (i64) such as 12{why}: got {_describe(value)}")


# -- Rule 3: stream lines ----------------------------------------------------------------------
class Line(NamedTuple):
    """One line of a stream: its bytes without the line end, or only the first MAX_LINE + 1
    of them when it is longer (``length`` is then the whole line's)."""

    data: bytes
    length: int

    @property
    def too_long(self) -> bool:
        return self.length > MAX_LINE


def read_lines(stream: BinaryIO) -> Iterator[Line]:
    """The lines of ``stream``, each as soon as it is complete, holding at most about MAX_LINE
    bytes of any of them."""
    while True:
        chunk = stream.readline(MAX_LINE + 2)  # room for the longest line and its \r\n
        if not chunk:
            return
        if chunk.endswith(b"\n") or len(chunk) < MAX_LINE + 2:
            data = chunk[:-1] if chunk.endswith(b"\n") else chunk
            data = data[:-1] if data.endswith(b"\r") else data
            yield Line(data, len(data))
        else:
            yield Line(chunk[: MAX_LINE + 1], len(chunk) + _discard_line(stream))


def _discard_line(stream: BinaryIO) -> int:
    """Read up to the end of the current line and drop it; the bytes dropped, its end excluded."""
    dropped = 0
    while True:
        chunk = stream.readline(_DISCARD_CHUNK)
        if not chunk:
            return dropped
        if chunk.endswith(b"\n"):
            return dropped + len(chunk.rstrip(b"\r\n"))
        dropped += len(chunk)


def decode_line(line: Line) -> str:
    """The text of a line within the limit, or InvalidInput (too long, or not UTF-8)."""
    if line.too_long:
        head = line.data.decode("utf-8", "surrogateescape")
        raise InvalidInput(f"a line may be at most {MAX_LINE} bytes: got {quote(head, line.length, 'bytes')}")
    try:
        return line.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = line.data.decode("utf-8", "surrogateescape")
        raise InvalidInput(f"a line must be UTF-8 text (byte {exc.start + 1} is not): got {quote(text)}") from None


# -- the values that describe a feed -----------------------------------------------------------
_MODE_RE = re.compile(r"(?:0o)?[0-7]{1,4}")
_WHOLE_RE = re.compile(r"[0-9]{1,9}")


def parse_mode(text: str) -> int:
    """A segment's permissions, in octal, such as 0640: the owner must read and write."""
    if _MODE_RE.fullmatch(text):
        mode = int(text, 8)
        if mode <= 0o777 and mode & 0o600 == 0o600:
            return mode
    raise InvalidGeometry(
        "mode must be octal permissions from 0600 to 0777 that let the owner read and write, "
        f"such as 0600, 0640 or 0644: got {quote(text)}"
    )


def parse_capacity(text: str) -> int:
    if _WHOLE_RE.fullmatch(text) and L.MIN_CAPACITY <= int(text) <= L.MAX_CAPACITY:
        return int(text)
    raise InvalidGeometry(
        f"capacity must be a whole number from {L.MIN_CAPACITY} to {L.MAX_CAPACITY}: got {quote(text)}"
    )


def parse_ring(text: str) -> int:
    if _WHOLE_RE.fullmatch(text):
        ring = int(text)
        if L.MIN_RING <= ring <= L.MAX_RING and ring & (ring - 1) == 0:
            return ring
    raise InvalidGeometry(f"ring size must be a power of 2 from {L.MIN_RING} to {L.MAX_RING}: got {quote(text)}")


FIELDS_RULE = (
    f"fields must be 1 to {L.MAX_FIELDS} NAME:TYPE separated by commas, such as bid:f64,ask:f64,bid_size:i64, "
    "TYPE f64 or i64 (f64 if left out)"
)
_FIELD_NAME_RE = re.compile(rf"[A-Za-z][A-Za-z0-9_]{{0,{L.FIELD_NAME_MAX - 1}}}")


def parse_fields_option(text: str) -> Fields:
    """A schema as --fields writes it ("bid:f64,ask:f64,bid_size:i64"), or InvalidGeometry
    with the rule, what broke it and the value (quoted: Rule 4)."""
    for part in text.split(","):
        name, _, kind = part.partition(":")
        name, kind = name.strip(), kind.strip()
        if not _FIELD_NAME_RE.fullmatch(name):
            detail = (
                f"a NAME is 1 to {L.FIELD_NAME_MAX} characters, an ASCII letter then letters, digits or _: "
                f"not {quote(name)}"
            )
            raise InvalidGeometry(f"{FIELDS_RULE}; {detail}: got {quote(text)}")
        if kind not in ("", *L.TYPE_NAMES.values()):
            raise InvalidGeometry(f"{FIELDS_RULE}; field {name!r} has type {quote(kind)}: got {quote(text)}")
    try:
        return parse_fields(text)
    except InvalidGeometry as exc:
        detail = str(exc).replace("bad schema: ", "", 1)
        raise InvalidGeometry(f"{FIELDS_RULE}; {detail}: got {quote(text)}") from None


def checked_feed(text: str) -> str:
    """A feed name, or InvalidName with the value quoted (Rule 4)."""
    try:
        return check_name(text)
    except InvalidName:
        raise InvalidName(
            f"feed name must be 1 to {NAME_MAX} characters of A-Z a-z 0-9 . _ - not starting with . or -: "
            f"got {quote(text)}"
        ) from None


def checked_owner(text: str) -> str:
    """A user name or uid that names a user of this machine, or InvalidInput with the value
    quoted (Rule 4). The text itself is what the library is given: it resolves it again."""
    try:
        resolve_owner(text)
    except InvalidInput as exc:
        rule = str(exc).partition(": owner=")[0]
        raise InvalidInput(f"{rule}: got {quote(text)}") from None
    return text


def checked_label(text: Optional[str]) -> Optional[str]:
    """A subscriber's label for the registry, or InvalidInput with the value quoted."""
    if text is None:
        return None
    try:
        return check_label(text)
    except InvalidInput as exc:
        rule = str(exc).partition(": label=")[0]
        raise InvalidInput(f"{rule}: got {quote(text)}") from None
