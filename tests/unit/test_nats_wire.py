"""The NATS bucket's names and values on their own (pricefeed._nats.keys and .wire): no server,
no nats-py. These are the rules other languages implement (the symbol key encoding, the record
and the bridge key), so each is checked as the specification states it, and every refusal must
say what was wrong."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricefeed._errors import InvalidInput, InvalidName
from pricefeed._nats import keys, wire
from pricefeed._protocol import layout as L
from pricefeed._segment.common import NAME_MAX
from pricefeed._values import check_symbol

#: What JetStream accepts as a Key-Value key.
KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
F64, I64 = L.TYPE_F64, L.TYPE_I64
FIELDS = (("bid", F64), ("ask", F64), ("size", I64))

#: Every valid symbol: 1 to SYMBOL_MAX printable ASCII characters, no space.
symbols = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=L.SYMBOL_MAX)


# -- keys ----------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(symbols)
def test_every_valid_symbol_has_a_valid_kv_key_that_decodes_back(symbol: str) -> None:
    check_symbol(symbol)  # the strategy makes only valid symbols
    key = keys.encode_symbol(symbol)
    assert KV_KEY.match(key), key
    assert not key.startswith(".") and not key.endswith("."), key
    assert key.startswith(keys.SYMBOL_PREFIX)
    body = key[len(keys.SYMBOL_PREFIX) :]
    assert body and "." not in body, f"{symbol!r}: the encoded part {body!r} holds a level separator"
    assert keys.decode_key(key) == symbol


@settings(max_examples=300, deadline=None)
@given(symbols)
def test_the_encoding_keeps_exactly_the_keepable_characters(symbol: str) -> None:
    keep = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    expected = "".join(c if c in keep else f"={ord(c):02X}" for c in symbol)
    assert keys.encode_symbol(symbol) == "s." + expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40))
def test_arbitrary_text_round_trips_through_encode_and_decode(text: str) -> None:
    """Spaces, control characters, any Unicode: the encoding is of UTF-8 bytes, so every text
    has a key and comes back from it (whether a feed can hold it is another question)."""
    key = keys.encode_symbol(text)
    assert KV_KEY.match(key) and "." not in key[2:], key
    assert keys.decode_key(key) == text


@pytest.mark.parametrize(
    ("symbol", "key"),
    [
        ("AAPL", "s.AAPL"),
        ("BRK.B", "s.BRK=2EB"),
        ("a=b", "s.a=3Db"),
        ("x/y", "s.x=2Fy"),
        ("E~1", "s.E=7E1"),
        ("-_", "s.-_"),
        ("a b", "s.a=20b"),
        ("é", "s.=C3=A9"),
        (">*", "s.=3E=2A"),
    ],
)
def test_known_keys(symbol: str, key: str) -> None:
    assert keys.encode_symbol(symbol) == key
    assert keys.decode_key(key) == symbol


@pytest.mark.parametrize(
    "key",
    [
        "s.=41",  # "A" is kept as itself, never encoded
        "s.=2e",  # lower-case hex
        "s.=2E=7a",
        "s.",  # no symbol
        "s.=4",  # a truncated escape
        "s.=",
        "s.=G1",
        "s.a.b",  # a dot is =2E
        "s.a b",
        "s.=C3",  # half a UTF-8 character
        "s.=FF",
        "x.AAPL",  # another prefix
        "S.AAPL",
        "sAAPL",
        "bridge",  # the bridge's key
        "",
    ],
)
def test_keys_that_are_not_a_symbols_canonical_key_decode_to_none(key: str) -> None:
    assert keys.decode_key(key) is None


def test_bucket_for_replaces_what_a_bucket_name_cannot_hold() -> None:
    assert keys.bucket_for("prices.eu") == "prices_eu"
    assert keys.bucket_for("fx-spot_1") == "fx-spot_1"
    assert keys.bucket_for("a.b.c") == "a_b_c"
    assert keys.check_bucket("prices_eu") == "prices_eu"
    assert keys.check_bucket("x" * 64) == "x" * 64


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]*", fullmatch=True).filter(lambda s: len(s) <= NAME_MAX))
def test_the_default_bucket_of_every_valid_feed_name_is_a_valid_bucket(feed: str) -> None:
    bucket = keys.bucket_for(feed)
    assert keys.check_bucket(bucket) == bucket
    assert len(bucket) == len(feed)


@pytest.mark.parametrize("name", ["", "x" * 65, "a.b", "a b", "a/b", "a>", "a*", "é", None, 5])
def test_check_bucket_refuses_names_jetstream_refuses_and_states_the_rule(name: Any) -> None:
    with pytest.raises(InvalidName) as info:
        keys.check_bucket(name)
    assert isinstance(info.value, InvalidInput)
    assert "a bucket name is 1 to 64 characters of A-Z a-z 0-9 _ -" in str(info.value)
    assert repr(name) in str(info.value)


# -- records -------------------------------------------------------------------------------------

F64_VALUES = [0.0, -0.0, 1e-300, -1e-300, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308, 0.1, 1 / 3,
              187.25, 1e16, 2.0**53 + 2, -123456.789]  # fmt: skip
I64_VALUES = [0, 1, -1, -(2**63), 2**63 - 1, 2**53 + 1, -(2**53) - 1]


def _same(a: float, b: float) -> bool:
    """Equal, bit for bit (-0.0 is not 0.0 here)."""
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


@pytest.mark.parametrize("f", F64_VALUES, ids=repr)
@pytest.mark.parametrize("i", I64_VALUES, ids=repr)
def test_a_record_decodes_to_the_values_it_was_encoded_from(f: float, i: int) -> None:
    enc = wire.RecordEncoder(FIELDS, incarnation=12345)
    data = enc.encode("BRK.B", (f, -f, i), 0b101, 42, 1_700_000_000_123_456_789)
    assert len(data) <= wire.MAX_VALUE
    rec = wire.decode_record(data, "BRK.B", FIELDS)
    assert rec.symbol == "BRK.B"
    assert _same(rec.values[0], f) and _same(rec.values[1], -f), (rec.values, f)
    assert type(rec.values[0]) is float and type(rec.values[1]) is float
    assert rec.values[2] == i and type(rec.values[2]) is int
    assert rec.changed == ("bid", "size")
    assert (rec.seq, rec.time_ns, rec.incarnation) == (42, 1_700_000_000_123_456_789, 12345)
    # And it is the JSON object the specification describes, for readers in any language.
    obj = json.loads(data)
    assert set(obj) == {"symbol", "seq", "time_ns", "incarnation", "fields", "changed"}
    assert obj["fields"] == {"bid": f, "ask": -f, "size": i} and obj["changed"] == ["bid", "size"]


@settings(max_examples=300, deadline=None)
@given(
    symbols,
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=0, max_value=7),
    st.integers(min_value=1, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**63 - 1),
)
def test_any_record_round_trips(symbol: str, f: float, i: int, changed: int, seq: int, incarnation: int) -> None:
    enc = wire.RecordEncoder(FIELDS, incarnation)
    rec = wire.decode_record(enc.encode(symbol, (f, f, i), changed, seq, 7), symbol, FIELDS)
    assert _same(rec.values[0], f) and rec.values[2] == i
    assert rec.changed == tuple(name for k, (name, _) in enumerate(FIELDS) if changed >> k & 1)
    assert (rec.seq, rec.incarnation) == (seq, incarnation)


def test_the_encoder_reuses_its_symbol_part_without_mixing_symbols() -> None:
    enc = wire.RecordEncoder(FIELDS, 1)
    a1 = wire.decode_record(enc.encode("A", (1.0, 2.0, 3), 1, 1, 1), "A", FIELDS)
    b1 = wire.decode_record(enc.encode('q"\\', (4.0, 5.0, 6), 2, 2, 2), 'q"\\', FIELDS)
    a2 = wire.decode_record(enc.encode("A", (7.0, 8.0, 9), 4, 3, 3), "A", FIELDS)
    assert (a1.values, b1.values, a2.values) == ((1.0, 2.0, 3), (4.0, 5.0, 6), (7.0, 8.0, 9))
    assert (a1.changed, b1.changed, a2.changed) == (("bid",), ("ask",), ("size",))


def _record(**changes: Any) -> Dict[str, Any]:
    obj: Dict[str, Any] = {
        "symbol": "AAPL",
        "seq": 5,
        "time_ns": 1000,
        "incarnation": 9,
        "fields": {"bid": 1.5, "ask": 2.5, "size": 100},
        "changed": ["bid"],
    }
    for name, value in changes.items():
        if value is _DROP:
            del obj[name]
        else:
            obj[name] = value
    return obj


_DROP = object()


def _fields(**changes: Any) -> Dict[str, Any]:
    values: Dict[str, Any] = {"bid": 1.5, "ask": 2.5, "size": 100}
    for name, value in changes.items():
        if value is _DROP:
            del values[name]
        else:
            values[name] = value
    return values


def _bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _raw(bid: str, ask: str) -> bytes:
    """A record whose f64 fields are written as given: NaN and the infinities, which json.dumps
    writes too and a JSON reader in Python reads."""
    head = '{"symbol":"AAPL","seq":5,"time_ns":1,"incarnation":9,"fields":'
    return f'{head}{{"bid":{bid},"ask":{ask},"size":1}},"changed":[]}}'.encode()


def test_a_well_formed_record_is_accepted() -> None:
    rec = wire.decode_record(_bytes(_record()), "AAPL", FIELDS)
    assert rec == wire.Record("AAPL", (1.5, 2.5, 100), ("bid",), 5, 1000, 9)
    # An f64 written as a JSON integer (another language's writer) is a float.
    rec = wire.decode_record(_bytes(_record(fields=_fields(bid=3))), "AAPL", FIELDS)
    assert rec.values[0] == 3.0 and type(rec.values[0]) is float


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "value is not JSON"),
        (b"", "value is not JSON"),
        (b"\xff\xfe{}", "value is not UTF-8"),
        (b"[" * 10000 + b"]" * 10000, None),  # deeper than the parser goes, or too long
        (b'{"symbol": "AAPL"', "value is not JSON"),
        (b"[1, 2]", "value must be a JSON object: got list"),
        (b'"AAPL"', "value must be a JSON object: got str"),
        (b"null", "value must be a JSON object: got NoneType"),
        (b"42", "value must be a JSON object: got int"),
        (b" " * (wire.MAX_VALUE + 1), f"value is {wire.MAX_VALUE + 1} bytes; at most {wire.MAX_VALUE} expected"),
        (
            _bytes(_record(pad="x" * wire.MAX_VALUE)),
            f"bytes; at most {wire.MAX_VALUE} expected",
        ),
        (_bytes(_record(symbol="MSFT")), "record names symbol 'MSFT' under the key of 'AAPL'"),
        (_bytes(_record(symbol=_DROP)), "record names symbol None under the key of 'AAPL'"),
        (_bytes(_record(fields=[1.5, 2.5, 100])), "member 'fields' must be an object"),
        (_bytes(_record(fields=_DROP)), "member 'fields' must be an object: got None"),
        (
            _bytes(_record(fields=_fields(size=_DROP))),
            "record has fields ['ask', 'bid']; the schema's are bid, ask, size",
        ),
        (
            _bytes(_record(fields=_fields(extra=1.0))),
            "record has fields ['ask', 'bid', 'extra', 'size']; the schema's are bid, ask, size",
        ),
        (_bytes(_record(fields=_fields(bid="1.5"))), "field 'bid' is f64: a finite number expected, got '1.5'"),
        (_bytes(_record(fields=_fields(bid=True))), "field 'bid' is f64: a finite number expected, got True"),
        (_bytes(_record(fields=_fields(bid=None))), "field 'bid' is f64: a finite number expected, got None"),
        (_raw("NaN", "1.0"), "field 'bid' is f64: a finite number expected, got nan"),
        (_raw("1.0", "-Infinity"), "field 'ask' is f64: a finite number expected, got -inf"),
        (_raw("1e999", "1.0"), "field 'bid' is f64: a finite number expected, got inf"),
        (_bytes(_record(fields=_fields(bid=2**60))), "field 'bid' is f64: a finite number expected, got 1152921504"),
        (_bytes(_record(fields=_fields(size=100.0))), "field 'size' is i64: an integer in the i64 range expected"),
        (
            _bytes(_record(fields=_fields(size=1.5))),
            "field 'size' is i64: an integer in the i64 range expected, got 1.5",
        ),
        (_bytes(_record(fields=_fields(size=2**63))), "got 9223372036854775808"),
        (_bytes(_record(fields=_fields(size=-(2**63) - 1))), "got -9223372036854775809"),
        (_bytes(_record(fields=_fields(size=False))), "field 'size' is i64: an integer in the i64 range expected"),
        (_bytes(_record(fields=_fields(size="100"))), "field 'size' is i64: an integer in the i64 range expected"),
        (_bytes(_record(changed="bid")), "member 'changed' must list field names: got 'bid'"),
        (_bytes(_record(changed=["bid", "volume"])), "member 'changed' must list field names: got ['bid', 'volume']"),
        (_bytes(_record(changed=[1])), "member 'changed' must list field names: got [1]"),
        (_bytes(_record(changed=None)), "member 'changed' must list field names: got None"),
        (_bytes(_record(seq=0)), "member 'seq' must be an integer from 1 to 9223372036854775807: got 0"),
        (_bytes(_record(seq=-3)), "member 'seq' must be an integer from 1 to 9223372036854775807: got -3"),
        (_bytes(_record(seq=_DROP)), "member 'seq' must be an integer from 1"),
        (_bytes(_record(seq=1.0)), "member 'seq' must be an integer from 1"),
        (_bytes(_record(seq=True)), "member 'seq' must be an integer from 1"),
        (_bytes(_record(seq=2**63)), "member 'seq' must be an integer from 1"),
        (_bytes(_record(time_ns=-1)), "member 'time_ns' must be an integer from 0"),
        (_bytes(_record(time_ns="now")), "member 'time_ns' must be an integer from 0"),
        (_bytes(_record(incarnation=_DROP)), "member 'incarnation' must be an integer from 0"),
        (_bytes(_record(incarnation=-1)), "member 'incarnation' must be an integer from 0"),
    ],
)
def test_decode_record_refuses_malformed_values_saying_what_is_wrong(data: bytes, message: Any) -> None:
    with pytest.raises(wire.Malformed) as info:
        wire.decode_record(data, "AAPL", FIELDS)
    text = str(info.value)
    assert isinstance(info.value, ValueError)
    if message is not None:
        assert message in text, text
    else:
        assert text.startswith(("value is not JSON", "value is ")), text
    assert len(text) < 400, "a message quotes at most a short piece of the value"


def test_a_long_bad_value_is_quoted_short() -> None:
    text = "x" * 5000
    with pytest.raises(wire.Malformed) as info:
        wire.decode_record(_bytes(_record(fields=_fields(bid=text))), "AAPL", FIELDS)
    assert "field 'bid' is f64" in str(info.value) and "..." in str(info.value)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_record_that_is_not_utf8_is_refused(encoding: str) -> None:
    data = json.dumps(_record()).encode(encoding)
    with pytest.raises(wire.Malformed, match=r"JSON|UTF-8"):
        wire.decode_record(data, "AAPL", FIELDS)


# -- the bridge key ------------------------------------------------------------------------------


def _meta(**changes: Any) -> wire.Meta:
    base = wire.Meta(
        feed="prices.eu", incarnation=77, fields=FIELDS, capacity=1024, state="live", publisher="alive", head=10,
        acked=9, interval_ms=1000, time_ns=1_700_000_000_000_000_000, bridge_id="0123456789abcdef", host="h1",
        pid=4321, sent=9, conflated=1,
    )  # fmt: skip
    return base._replace(**changes)


def test_the_bridge_key_round_trips_and_is_the_documented_object() -> None:
    for state in wire.STATES:
        for publisher in ("alive", "gone"):
            meta = _meta(state=state, publisher=publisher)
            assert wire.decode_meta(wire.encode_meta(meta)) == meta
    obj = json.loads(wire.encode_meta(_meta()))
    assert obj == {
        "format": 1, "feed": "prices.eu", "incarnation": 77,
        "fields": [["bid", "f64"], ["ask", "f64"], ["size", "i64"]], "capacity": 1024, "state": "live",
        "publisher": "alive", "head": 10, "acked": 9, "interval_ms": 1000, "time_ns": 1_700_000_000_000_000_000,
        "bridge_id": "0123456789abcdef", "host": "h1", "pid": 4321, "sent": 9, "conflated": 1,
    }  # fmt: skip
    assert len(wire.encode_meta(_meta(fields=tuple((f"field{k}", F64) for k in range(16))))) < wire.MAX_VALUE


def _meta_obj(**changes: Any) -> Dict[str, Any]:
    obj = json.loads(wire.encode_meta(_meta()))
    for name, value in changes.items():
        if value is _DROP:
            del obj[name]
        else:
            obj[name] = value
    return obj


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (_meta_obj(format=2), "bridge key has format 2; this pricefeed reads format 1"),
        (_meta_obj(format=_DROP), "bridge key has format None; this pricefeed reads format 1"),
        (_meta_obj(format="1"), "bridge key has format '1'; this pricefeed reads format 1"),
        (_meta_obj(fields=[]), "member 'fields' must list 1 to 16 [name, type] pairs: got []"),
        (_meta_obj(fields=_DROP), "member 'fields' must list 1 to 16 [name, type] pairs: got None"),
        (_meta_obj(fields={"bid": "f64"}), "member 'fields' must list 1 to 16 [name, type] pairs"),
        (_meta_obj(fields=[["f" + str(k), "f64"] for k in range(17)]), "member 'fields' must list 1 to 16"),
        (_meta_obj(fields=[["bid", "f32"]]), "a field must be [name, 'f64' or 'i64']: got ['bid', 'f32']"),
        (_meta_obj(fields=[["bid"]]), "a field must be [name, 'f64' or 'i64']: got ['bid']"),
        (_meta_obj(fields=["bid"]), "a field must be [name, 'f64' or 'i64']: got 'bid'"),
        (_meta_obj(fields=[[1, "f64"]]), "a field must be [name, 'f64' or 'i64']: got [1, 'f64']"),
        (_meta_obj(fields=[["bid", "f64"], ["BID", "f64"]]), "bad schema: fields 'bid' and 'BID' have the same name"),
        (_meta_obj(fields=[["1bid", "f64"]]), "bad schema:"),
        (_meta_obj(state="running"), "member 'state' must be one of live, stopped, ended: got 'running'"),
        (_meta_obj(state=_DROP), "member 'state' must be one of live, stopped, ended: got None"),
        (_meta_obj(publisher="dead"), "member 'publisher' must be 'alive' or 'gone': got 'dead'"),
        (_meta_obj(feed=5), "member 'feed' must be a string of at most 256 characters: got 5"),
        (_meta_obj(capacity=0), "member 'capacity' must be an integer from 1 to 1048576: got 0"),
        (_meta_obj(interval_ms=0), "member 'interval_ms' must be an integer from 1 to 3600000: got 0"),
        (_meta_obj(bridge_id="x" * 65), "member 'bridge_id' must be a string of at most 64 characters"),
        (_meta_obj(head=-1), "member 'head' must be an integer from 0"),
        (_meta_obj(pid="4321"), "member 'pid' must be an integer from 0"),
    ],
)
def test_decode_meta_refuses_a_bad_bridge_key_saying_what_is_wrong(obj: Dict[str, Any], message: str) -> None:
    with pytest.raises(wire.Malformed) as info:
        wire.decode_meta(_bytes(obj))
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize(("data", "message"), [(b"{", "value is not JSON"), (b"[]", "must be a JSON object")])
def test_decode_meta_refuses_what_is_not_a_json_object(data: bytes, message: str) -> None:
    with pytest.raises(wire.Malformed, match=re.escape(message)):
        wire.decode_meta(data)


@pytest.mark.parametrize("fmt", [True, 1.0])
def test_decode_meta_refuses_a_format_that_is_not_the_integer_1(fmt: Any) -> None:
    with pytest.raises(wire.Malformed, match="format"):
        wire.decode_meta(_bytes(_meta_obj(format=fmt)))


@pytest.mark.parametrize("symbol", ["AAPL", "BRK.B", "~", "x" * L.SYMBOL_MAX])
def test_symbol_ok_accepts_what_a_feed_holds(symbol: str) -> None:
    assert wire.symbol_ok(symbol)


@pytest.mark.parametrize("symbol", ["a b", "é", "x" * (L.SYMBOL_MAX + 1), "\t"])
def test_symbol_ok_refuses_what_a_key_may_encode_but_a_feed_cannot_hold(symbol: str) -> None:
    assert keys.decode_key(keys.encode_symbol(symbol)) == symbol
    assert not wire.symbol_ok(symbol)
