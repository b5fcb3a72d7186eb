"""Which process an entry names: its start time, so that a reused pid is not taken for it.

A pid alone does not name a process for long: once it exits, the system gives the number to
the next process. An entry keeps the pid and the process's start time together; the entry's
process is alive only while a process with that pid exists and started at that time.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

_LINUX = sys.platform.startswith("linux")

#: What ``alive`` says of a process it cannot look at (another user's, with /proc mounted
#: hidepid): it may be alive, so its entry is kept.
UNKNOWN = None


def start_time(pid: int) -> Optional[int]:
    """The start time of process ``pid`` in clock ticks since boot (Linux: /proc/PID/stat field
    22), None if there is no such process or the system does not say."""
    if not _LINUX:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the
    # last ")". Field 22 is then the 20th after it.
    try:
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def alive(pid: int, start: int) -> Optional[bool]:
    """Whether the process an entry names (``pid`` that started at ``start``) still runs:
    True, False, or None when this process cannot tell (it then counts as alive)."""
    if not 0 < pid < 1 << 31:  # not a pid any system gives (read from an entry: anything goes)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return UNKNOWN
    now = start_time(pid)
    if now is None:
        return UNKNOWN  # it exists, but its start time is hidden (or the platform has none)
    return now == start
