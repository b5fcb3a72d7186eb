"""Every error pricefeed raises, each with the exit code the CLI gives it.

The tree (each class also subclasses the nearest builtin, so ``except FileNotFoundError`` or
``except ValueError`` written for generic code still catches it)::

    PricefeedError                         exit 1   base of everything below
    ├── FeedNotFound (FileNotFoundError)   exit 3   no feed by that name
    ├── SymbolNotFound (KeyError)          exit 4   the feed has no such symbol
    ├── FeedExists (FileExistsError)       exit 5   create() on a name already taken
    ├── FeedBusy (BlockingIOError)         exit 6   another live publisher holds the feed
    ├── InvalidInput (ValueError)          exit 7   a value broke a rule; nothing was written
    │   ├── InvalidName                             feed name
    │   ├── InvalidSymbol                           symbol
    │   ├── InvalidField                            a field the schema lacks, or a value it cannot hold
    │   │   └── InvalidPrice                        a float field: NaN, infinite, not a number
    │   └── InvalidGeometry                         capacity, ring size, mode or schema
    ├── FeedFull (OverflowError)           exit 8   the slot table has no room for a new symbol
    ├── BadSegment (ValueError)            exit 9   not a pricefeed segment, or damaged
    │   └── LayoutVersionMismatch                   a pricefeed segment of another version
    ├── FeedPermissionError (PermissionError) exit 10 the OS refused access to the segment
    ├── FeedEnded (EOFError)               exit 11  the feed was ended for good
    ├── Timeout (TimeoutError)             exit 12  nothing arrived within the timeout
    ├── FeedReset                          exit 13  the segment was re-created (reattach=False)
    ├── FeedNotTrusted (PermissionError)   exit 14  another user's segment, or one every user may write
    ├── ActionFailed                       exit 15  an action failed and the error policy was to stop
    ├── RemoteError (ConnectionError)      exit 16  NATS refused, unreachable, or its bucket is not this feed's
    └── UnsupportedPlatform (OSError)      exit 1   this CPU or OS lacks what the protocol needs

``docs/cli.md`` lists the same codes; a test keeps the two in agreement. Errors that come from
a system call keep its ``errno`` (they are ``OSError`` subclasses built with it).
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "PricefeedError",
    "FeedNotFound",
    "SymbolNotFound",
    "FeedExists",
    "FeedBusy",
    "InvalidInput",
    "InvalidName",
    "InvalidSymbol",
    "InvalidPrice",
    "InvalidField",
    "InvalidGeometry",
    "FeedFull",
    "BadSegment",
    "LayoutVersionMismatch",
    "FeedPermissionError",
    "FeedEnded",
    "Timeout",
    "FeedReset",
    "FeedNotTrusted",
    "ActionFailed",
    "RemoteError",
    "UnsupportedPlatform",
]


class PricefeedError(Exception):
    """Any other failure (the base class of every pricefeed error)."""

    exit_code = 1

    def __str__(self) -> str:
        # OSError subclasses would otherwise print "[Errno 2] ..." and KeyError a repr.
        return str(self.args[0]) if self.args else self.__class__.__name__


class FeedNotFound(PricefeedError, FileNotFoundError):
    """No feed has that name on this machine."""

    exit_code = 3


class SymbolNotFound(PricefeedError, KeyError):
    """The feed has never published that symbol (`get`, `Subscriber[symbol]`)."""

    exit_code = 4


class FeedExists(PricefeedError, FileExistsError):
    """`create` was asked for a name that is already taken."""

    exit_code = 5


class FeedBusy(PricefeedError, BlockingIOError):
    """Another live publisher holds the feed; the message (and `holder_pid`) names it."""

    exit_code = 6

    def __init__(self, message: str, holder_pid: Optional[int] = None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


class InvalidInput(PricefeedError, ValueError):
    """A value broke a rule; the message states the rule and the value; nothing was written."""

    exit_code = 7


class InvalidName(InvalidInput):
    """A feed name is empty, too long, or has characters outside A-Z a-z 0-9 . _ -."""


class InvalidSymbol(InvalidInput):
    """A symbol is empty, too long, or not printable ASCII without spaces."""


class InvalidField(InvalidInput):
    """A field the feed's schema does not have, or a value its field cannot hold: a float for an
    integer field, an integer outside the i64 range, no value at all. The message names the field."""


class InvalidPrice(InvalidField):
    """A price (a f64 field's value) is NaN, infinite, not a number, or (on the command line)
    not stored as written."""


class InvalidGeometry(InvalidInput):
    """A capacity, ring size, mode or schema is out of range."""


class FeedFull(PricefeedError, OverflowError):
    """A new symbol does not fit: every slot already holds a symbol."""

    exit_code = 8


class BadSegment(PricefeedError, ValueError):
    """The segment is not a pricefeed segment, or its header or tables are damaged."""

    exit_code = 9


class LayoutVersionMismatch(BadSegment):
    """A pricefeed segment written with another layout version; the message names both."""


class FeedPermissionError(PricefeedError, PermissionError):
    """The operating system refused access to the segment."""

    exit_code = 10


class FeedEnded(PricefeedError, EOFError):
    """Publishing to, or taking over, a feed that was ended for good."""

    exit_code = 11


class Timeout(PricefeedError, TimeoutError):
    """Nothing arrived within the timeout the caller gave."""

    exit_code = 12


class FeedReset(PricefeedError):
    """The feed was removed and created anew while following it, and re-attaching was refused."""

    exit_code = 13


class FeedNotTrusted(PricefeedError, PermissionError):
    """The segment belongs to another user than the one required, or every user may write it; nothing was written."""

    exit_code = 14


class ActionFailed(PricefeedError):
    """An action (`subscribe --exec`, `act()`) failed and the error policy was to stop (`--on-error stop`).

    ``symbol`` and ``seq`` name the change whose action failed; ``act()`` sets ``result``, its
    counts when it stopped."""

    exit_code = 15

    def __init__(self, message: str, symbol: Optional[str] = None, seq: Optional[int] = None) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.seq = seq
        self.result: Optional[object] = None


class RemoteError(PricefeedError, ConnectionError):
    """The network side of a bridge or mirror failed: NATS could not be reached in time,
    refused our credentials, or holds a bucket that is not this feed's (another schema, another
    format). Also raised when the ``nats`` extra is not installed."""

    exit_code = 16


class UnsupportedPlatform(PricefeedError, OSError):
    """This CPU or operating system lacks something the protocol relies on."""

    exit_code = 1
