"""Acting on changes: run a command (CLI ``--exec``) or a Python callable (``act``/``aact``)
once per change, in a bounded pool, with per-symbol order, back-pressure, error policies,
timeouts, a graceful stop and a resumable state file. docs/actions.md is the user's guide.

The modules, one concern each:

- ``options``:  the settings and the rules of their values, shared by the CLI and the library;
- ``state``:    the state file (load, check, atomic save);
- ``schedule``: per-symbol bounded queues, conflation, drops, dispatch order, the resume
                point; pure, no I/O;
- ``workers``:  what runs an action: a worker process (commands), a thread (sync callables),
                a task (async callables);
- ``worker``:   the worker process's program;
- ``pool``:     the asyncio engine that ties them together;
- ``api``:      ``act()`` and ``aact()``.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import ActResult, aact, act

__all__ = ["ActResult", "act", "aact"]


def __getattr__(name: str) -> Any:
    # On first use: the engine brings asyncio, which a process that never acts need not load.
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
