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
"""

from __future__ import annotations

import math
import re
import sys
from typing import BinaryIO, Iterator, NamedTuple, Optional, Tuple

from .._errors import InvalidGeometry, InvalidInput, InvalidName, InvalidPrice, InvalidSymbol
from .._protocol import layout as L
from .._segment import NAME_MAX, check_name
from .._segment.common import resolve_owner
from .._values import check_symbol

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
def parse_price(text: str, symbol: str) -> float:
    """The float that ``text`` writes, or InvalidPrice naming the rule and the value."""
    where = f"price for symbol {symbol!r}"
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


def parse_pair(symbol: str, price: str) -> Tuple[str, float]:
    return parse_symbol(symbol), parse_price(price, symbol)


def parse_assignment(text: str) -> Tuple[str, float]:
    """``SYMBOL=PRICE``, split at the last ``=``."""
    symbol, sep, price = text.rpartition("=")
    if not sep:
        raise InvalidInput(f"expected SYMBOL=PRICE, such as AAPL=187.5: got {quote(text)}")
    return parse_pair(symbol, price)


def parse_line(text: str) -> Optional[Tuple[str, float]]:
    """A stream line: ``SYMBOL PRICE`` or ``SYMBOL=PRICE``, fields separated by spaces or tabs;
    None for a blank line or a comment (``#`` first)."""
    body = text.strip(" \t")
    if not body or body.startswith("#"):
        return None
    fields = _FIELD_SEPARATOR.split(body)
    if len(fields) == 2:
        return parse_pair(fields[0], fields[1])
    if len(fields) == 1 and "=" in body:
        return parse_assignment(body)
    raise InvalidInput(f"expected 'SYMBOL PRICE' or 'SYMBOL=PRICE', such as 'AAPL 187.5': got {quote(body)}")


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
