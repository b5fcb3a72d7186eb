"""The values in the bucket: a symbol's record, and the bridge's key. JSON, UTF-8, one object each.

Both are specified in docs/distributed.md for readers in any language; this module writes them
(the bridge) and reads them back as untrusted input (the mirror): a value that is too long,
is not JSON, lacks a member, or holds a value its field's type cannot, is refused with the reason,
never half applied. Standard library only.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, NamedTuple, Tuple

from .._protocol import layout as L
from .._values import check_symbol

#: The format of every value here; a reader refuses a value or bridge key of another format.
FORMAT = 1
#: No record or bridge key is longer (16 fields of long names and numbers fit in under 2 KiB).
MAX_VALUE = 16384
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
_TYPE = {"f64": L.TYPE_F64, "i64": L.TYPE_I64}
Fields = Tuple[Tuple[str, int], ...]


class Malformed(ValueError):
    """A value in the bucket that this format does not allow; the message says what is wrong."""


class Record(NamedTuple):
    """One symbol's record as the bridge put it: every field's value in schema order."""

    symbol: str
    values: Tuple[Any, ...]
    changed: Tuple[str, ...]
    seq: int
    time_ns: int
    incarnation: int


class Meta(NamedTuple):
    """The bridge's key: which feed the bucket holds, and the bridge's heartbeat."""

    feed: str
    incarnation: int
    fields: Fields
    capacity: int
    state: str  # "live", "stopped" (the bridge was stopped), "ended" (the feed was ended for good)
    publisher: str  # "alive" or "gone": the local feed's publisher, as the bridge last saw it
    head: int  # the newest change the bridge has taken from the feed
    acked: int  # every change up to this one is in the bucket (or superseded there by a newer one)
    interval_ms: int  # the bridge rewrites its key at least this often while it is live
    time_ns: int  # the bridge's clock when it wrote this
    bridge_id: str  # one per run of a bridge: a new value is a restarted bridge
    host: str
    pid: int
    sent: int
    conflated: int


STATES = ("live", "stopped", "ended")


class RecordEncoder:
    """Writes the records of one schema; the symbol's part of each is made once."""

    def __init__(self, fields: Fields, incarnation: int) -> None:
        self._names = [json.dumps(name) for name, _ in fields]
        self._plain = [name for name, _ in fields]
        self._incarnation = incarnation
        self._heads: Dict[str, str] = {}

    def encode(self, symbol: str, values: Tuple[Any, ...], changed: int, seq: int, time_ns: int) -> bytes:
        head = self._heads.get(symbol)
        if head is None:
            head = self._heads[symbol] = '{"symbol":' + json.dumps(symbol) + ',"seq":'
        # repr() of a finite float is its shortest exact decimal, which JSON reads back exactly;
        # the feed holds no NaN or infinity.
        body = ",".join(f"{n}:{v!r}" for n, v in zip(self._names, values))
        names = ",".join(n for i, n in enumerate(self._names) if changed >> i & 1)
        return (
            f'{head}{seq},"time_ns":{time_ns},"incarnation":{self._incarnation},'
            f'"fields":{{{body}}},"changed":[{names}]}}'
        ).encode()


def _int(obj: Dict[str, Any], name: str, low: int = 0, high: int = I64_MAX) -> int:
    v = obj.get(name)
    if type(v) is not int or not low <= v <= high:
        raise Malformed(f"member {name!r} must be an integer from {low} to {high}: got {_short(v)}")
    return v


def _str(obj: Dict[str, Any], name: str, limit: int = 256) -> str:
    v = obj.get(name)
    if not isinstance(v, str) or len(v) > limit:
        raise Malformed(f"member {name!r} must be a string of at most {limit} characters: got {_short(v)}")
    return v


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(data: bytes) -> Dict[str, Any]:
    if len(data) > MAX_VALUE:
        raise Malformed(f"value is {len(data)} bytes; at most {MAX_VALUE} expected")
    try:
        text = data.decode("utf-8")  # json.loads(bytes) would also take UTF-16 and UTF-32
    except UnicodeDecodeError as exc:
        raise Malformed(f"value is not UTF-8: {exc}") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"value is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Malformed(f"value must be a JSON object: got {type(obj).__name__}")
    return obj


def decode_record(data: bytes, symbol: str, fields: Fields) -> Record:
    """The record in ``data``, the value of ``symbol``'s key, checked against ``fields`` (the
    schema in the bridge's key): Malformed if anything is not as docs/distributed.md says."""
    obj = _object(data)
    if obj.get("symbol") != symbol:
        raise Malformed(f"record names symbol {_short(obj.get('symbol'))} under the key of {symbol!r}")
    values = obj.get("fields")
    if not isinstance(values, dict):
        raise Malformed(f"member 'fields' must be an object: got {_short(values)}")
    if set(values) != {name for name, _ in fields}:
        expected = ", ".join(name for name, _ in fields)
        raise Malformed(f"record has fields {sorted(values)}; the schema's are {expected}")
    out: List[Any] = []
    for name, kind in fields:
        v = values[name]
        if kind == L.TYPE_F64:
            if type(v) is int and abs(v) <= 2**53:
                v = float(v)
            if type(v) is not float or not math.isfinite(v):
                raise Malformed(f"field {name!r} is f64: a finite number expected, got {_short(v)}")
        elif type(v) is not int or not I64_MIN <= v <= I64_MAX:
            raise Malformed(f"field {name!r} is i64: an integer in the i64 range expected, got {_short(v)}")
        out.append(v)
    changed = obj.get("changed", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) and c in values for c in changed):
        raise Malformed(f"member 'changed' must list field names: got {_short(changed)}")
    return Record(
        symbol, tuple(out), tuple(changed), _int(obj, "seq", 1), _int(obj, "time_ns"), _int(obj, "incarnation")
    )


def encode_meta(meta: Meta) -> bytes:
    obj = meta._asdict()
    obj["fields"] = [[name, L.TYPE_NAMES[kind]] for name, kind in meta.fields]
    return json.dumps({"format": FORMAT, **obj}, separators=(",", ":")).encode()


def decode_meta(data: bytes) -> Meta:
    """The bridge's key, checked: Malformed saying what is wrong (another format included)."""
    obj = _object(data)
    if type(obj.get("format")) is not int or obj.get("format") != FORMAT:
        raise Malformed(f"bridge key has format {_short(obj.get('format'))}; this pricefeed reads format {FORMAT}")
    raw = obj.get("fields")
    if not isinstance(raw, list) or not 1 <= len(raw) <= L.MAX_FIELDS:
        raise Malformed(f"member 'fields' must list 1 to {L.MAX_FIELDS} [name, type] pairs: got {_short(raw)}")
    fields = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and item[1] in _TYPE):
            raise Malformed(f"a field must be [name, 'f64' or 'i64']: got {_short(item)}")
        fields.append((item[0], _TYPE[item[1]]))
    try:
        schema = L.check_fields(fields)
    except ValueError as exc:
        raise Malformed(f"bad schema: {exc}") from None
    state = obj.get("state")
    if state not in STATES:
        raise Malformed(f"member 'state' must be one of {', '.join(STATES)}: got {_short(state)}")
    publisher = obj.get("publisher")
    if publisher not in ("alive", "gone"):
        raise Malformed(f"member 'publisher' must be 'alive' or 'gone': got {_short(publisher)}")
    return Meta(
        _str(obj, "feed"), _int(obj, "incarnation"), schema, _int(obj, "capacity", 1, L.MAX_CAPACITY),
        state, publisher, _int(obj, "head"), _int(obj, "acked"), _int(obj, "interval_ms", 1, 3_600_000),
        _int(obj, "time_ns"), _str(obj, "bridge_id", 64), _str(obj, "host"), _int(obj, "pid"),
        _int(obj, "sent"), _int(obj, "conflated"),
    )  # fmt: skip


def symbol_ok(symbol: str) -> bool:
    """Whether the feed can hold ``symbol`` (a key may decode to one it cannot: a space)."""
    try:
        check_symbol(symbol)
    except ValueError:
        return False
    return True
