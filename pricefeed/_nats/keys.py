"""Names on the NATS side: the bucket of a feed, the key of a symbol (reversible), the bridge's key.

A JetStream Key-Value key is made of the characters ``A-Z a-z 0-9 - _ = / .``, where a dot
separates the levels of the subject the key becomes. A symbol may hold any printable ASCII
character, so it is encoded: ``A-Z a-z 0-9 - _`` stay as they are and every other byte becomes
``=`` and its two upper-case hex digits (a dot ``=2E``, a space ``=20``, ``=`` itself ``=3D``).
The encoding is canonical (a key that encodes a byte it could have kept, or uses lower-case hex,
is not a symbol's key), so a symbol has exactly one key and a key at most one symbol.
Standard library only: docs/distributed.md specifies the same rules for other languages.
"""

from __future__ import annotations

import re
from typing import Optional

from .._errors import InvalidName

#: The key of every symbol is this prefix and the encoded symbol: "s.AAPL", "s.BRK=2EB".
SYMBOL_PREFIX = "s."
#: The bridge's key: the feed's schema and identity, and the heartbeat (docs/distributed.md).
BRIDGE_KEY = "bridge"

_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_ENCODED = re.compile(r"(?:[A-Za-z0-9_-]|=[0-9A-F]{2})+")
_BUCKET = re.compile(r"[A-Za-z0-9_-]{1,64}")


def encode_symbol(symbol: str) -> str:
    """The key of ``symbol``: SYMBOL_PREFIX and the symbol's bytes, encoded."""
    raw = symbol.encode("utf-8")
    return SYMBOL_PREFIX + "".join(chr(b) if b in _KEEP else f"={b:02X}" for b in raw)


def decode_key(key: str) -> Optional[str]:
    """The symbol whose key is ``key``, or None when ``key`` is not a symbol's key in the
    canonical encoding (the bridge's key, another program's key, a malformed one)."""
    if not key.startswith(SYMBOL_PREFIX):
        return None
    body = key[len(SYMBOL_PREFIX) :]
    if not _ENCODED.fullmatch(body):
        return None
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i] == "=":
            b = int(body[i + 1 : i + 3], 16)
            if b in _KEEP:
                return None  # not canonical: this byte is written as itself
            out.append(b)
            i += 3
        else:
            out.append(ord(body[i]))
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def bucket_for(feed: str) -> str:
    """The default bucket of a feed: its name with each character a bucket name cannot hold
    (bucket names allow ``A-Z a-z 0-9 _ -``) replaced by ``_``, so "prices.eu" is "prices_eu".
    Two feeds that map to one bucket are told apart by the bridge's key, which names its feed."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", feed)


def check_bucket(name: str) -> str:
    """``name`` if JetStream accepts it as a bucket name, else InvalidName saying the rule."""
    if not isinstance(name, str) or not _BUCKET.fullmatch(name):
        raise InvalidName(f"a bucket name is 1 to 64 characters of A-Z a-z 0-9 _ -: got {name!r}")
    return name
