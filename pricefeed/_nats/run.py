"""Running a bridge or a mirror as a command: on an event loop of its own, with SIGINT and SIGTERM
asking it to stop gracefully (it says which stopped it), and each report a line on stderr."""

from __future__ import annotations

import asyncio
import signal
from typing import Any, List, Optional, Tuple


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

    stats = asyncio.run(main())
    return stats, (reason[0] if reason else None)
