"""pricefeed: shared-memory price feeds with change notification.

A Publisher writes the latest price of many symbols into a named POSIX shared-memory segment;
any number of Subscribers, in any processes, block in the kernel until a price changes and
then see each change exactly once, in order, never torn. See docs/ for the layout, the
protocol and its guarantees.
"""

from typing import TYPE_CHECKING, Any

from ._errors import (
    ActionFailed,
    BadSegment,
    FeedBusy,
    FeedEnded,
    FeedExists,
    FeedFull,
    FeedNotFound,
    FeedNotTrusted,
    FeedPermissionError,
    FeedReset,
    InvalidField,
    InvalidGeometry,
    InvalidInput,
    InvalidName,
    InvalidPrice,
    InvalidSymbol,
    LayoutVersionMismatch,
    PricefeedError,
    RemoteError,
    SymbolNotFound,
    Timeout,
    UnsupportedPlatform,
)
from ._protocol import implementation as _implementation
from ._protocol.layout import LAYOUT_VERSION
from ._registry.types import ReaderInfo, Readers
from ._roles.admin import feed_names, remove
from ._roles.publisher import Publisher
from ._roles.subscriber import Event, FeedStatus, Subscriber
from ._values import Gap, PublisherGone, PublisherRestarted, Quote, Reset

if TYPE_CHECKING:
    from ._act import ActResult, aact, act
    from ._nats import Bridge, BridgeStats, Mirror, MirrorStats
    from ._nats import Options as NatsOptions

__version__ = "0.1.0"

#: True when this process runs the protocol's C implementation (the accelerator).
ACCELERATED = _implementation().name == "c"

__all__ = [
    "Publisher",
    "Subscriber",
    "Quote",
    "Gap",
    "PublisherGone",
    "PublisherRestarted",
    "Reset",
    "Event",
    "FeedStatus",
    "Readers",
    "ReaderInfo",
    "act",
    "aact",
    "ActResult",
    "Bridge",
    "Mirror",
    "NatsOptions",
    "BridgeStats",
    "MirrorStats",
    "feed_names",
    "remove",
    "LAYOUT_VERSION",
    "ACCELERATED",
    "PricefeedError",
    "ActionFailed",
    "RemoteError",
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
    "UnsupportedPlatform",
]


_NATS = {"Bridge": "Bridge", "Mirror": "Mirror", "NatsOptions": "Options", "BridgeStats": "BridgeStats",
         "MirrorStats": "MirrorStats"}  # fmt: skip


def __getattr__(name: str) -> Any:
    # act, aact and ActResult load the action pool (and asyncio) on first use only; the bridge
    # and the mirror likewise (nats-py itself loads only when they connect).
    if name in ("act", "aact", "ActResult"):
        from . import _act

        return getattr(_act, name)
    if name in _NATS:
        from . import _nats

        return getattr(_nats, _NATS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
