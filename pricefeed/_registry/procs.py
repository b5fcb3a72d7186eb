"""Which process an entry names: its pid and its start time.

A pid alone does not name a process for long: once it exits, the system gives the number to
the next one. An entry records both, so that a tool can tell the process it names from a later
one with the same pid. Whether the entry's subscriber lives is not decided from them (a pid
means nothing in another pid namespace, and stays with a zombie or across an exec): its entry
lock decides (``registry``).
"""

from __future__ import annotations

import sys
from typing import Optional

_LINUX = sys.platform.startswith("linux")


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
