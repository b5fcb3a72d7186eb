"""Running a bridge or a mirror as a command: on an event loop of its own, with SIGINT and SIGTERM
asking it to stop gracefully (it says which stopped it); and stopping the tasks of one."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple


def run(role: Any) -> Tuple[Any, Optional[str]]:
    """``role.run()`` to its end; returns its stats and "interrupted" (SIGINT), "terminated"
    (SIGTERM) or None (it ended by itself). Errors propagate as they are."""
    reason: List[str] = []

    def stop(name: str) -> None:
        reason.append(name)
        role.stop()

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        names = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
        installed = []
        for sig, name in names.items():
            try:
                loop.add_signal_handler(sig, stop, name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt (exit 130)
                pass
        try:
            return await role.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    factory = loop_factory()
    if factory is None:
        stats = asyncio.run(main())
    elif sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            stats = runner.run(main())
    else:  # asyncio.Runner is 3.11's: the policy does the same before it
        import uvloop

        before = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        try:
            stats = asyncio.run(main())
        finally:
            asyncio.set_event_loop_policy(before)
    return stats, (reason[0] if reason else None)


def loop_factory() -> Optional[Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop's loop where it is installed (the ``async`` extra): the commands' wake-ups and
    network handling take less time on it. ``PRICEFEED_LOOP=asyncio`` keeps asyncio's own."""
    if os.environ.get("PRICEFEED_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def cancel(tasks: Sequence[asyncio.Future[Any]], timeout: float = 2.0) -> None:
    """Cancel ``tasks`` and wait for them to end, at most ``timeout`` seconds, cancelling again
    those still running: asyncio.wait_for (which nats-py's requests use) can swallow a cancel
    that lands as its own wait completes, and a task that loops would then never end."""
    left = [t for t in tasks if not t.done()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while left and loop.time() < deadline:
        for t in left:
            t.cancel()
        await asyncio.wait(left, timeout=min(0.1, max(0.0, deadline - loop.time())))
        left = [t for t in left if not t.done()]
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved: no "exception was never retrieved" warning
