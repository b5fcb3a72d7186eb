"""The feed beyond one machine, over NATS JetStream Key-Value (the ``nats`` extra).

``Bridge`` carries a local feed into a bucket; ``Mirror`` publishes a bucket into a local feed
on another host; both are asyncio-native (``await Bridge(...).run()``), built on the async
subscriber and the publisher. The bucket's keys and values are specified in
docs/distributed.md (``keys`` and ``wire`` here), for readers in any language.
"""

from __future__ import annotations

from .bridge import Bridge, BridgeStats
from .connect import Options
from .mirror import Mirror, MirrorStats

__all__ = ["Bridge", "BridgeStats", "Mirror", "MirrorStats", "Options"]
