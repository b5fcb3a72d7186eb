"""What the peers leave outside pricefeed's names, and its removal.

A POSIX semaphore is unlinked as soon as it is made (workers inherit it by fork); its name
would be ``/dev/shm/sem.bench-<pid>-...``, which the package's last sweep removes anyway. A
ZeroMQ socket file lives in /tmp under ``bench-<pid>-...`` until the link closes. iceoryx2
keeps a management segment per process group in /dev/shm ("iox2_..."): the ones this run made
(not there when it started) are removed. ``cleanup()`` of pricefeed._bench.resources calls
``sweep()`` here first, however the run ends.
"""

from __future__ import annotations

import os
from typing import List, Optional, Set

import posix_ipc

from pricefeed._bench import resources

__all__ = ["semaphore", "temp_path", "note_iceoryx2"]

_paths: Set[str] = set()
_iox2_before: Optional[Set[str]] = None


def semaphore(tag: str) -> posix_ipc.Semaphore:
    """A new POSIX semaphore at 0, whose name is already gone (workers inherit it by fork)."""
    name = "/" + resources.unique(tag)
    sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
    sem.unlink()
    return sem


def temp_path(tag: str, directory: str = "/tmp") -> str:
    """A path for a socket file or the like, removed by the clean-up if still there."""
    path = os.path.join(directory, resources.unique(tag))
    _paths.add(path)
    return path


def note_iceoryx2() -> None:
    """Call before the first iceoryx2 node: what iceoryx2 already had in /dev/shm."""
    global _iox2_before
    if _iox2_before is None:
        _iox2_before = set(_iox2_entries())


def _iox2_entries() -> List[str]:
    try:
        return [e for e in os.listdir(resources.SHM_DIR) if e.startswith("iox2_")]
    except OSError:
        return []


def sweep() -> List[str]:
    """Remove the iceoryx2 segments and the files this run made; returns their names."""
    removed = []
    if _iox2_before is not None:
        for entry in sorted(set(_iox2_entries()) - _iox2_before):
            try:
                os.unlink(os.path.join(resources.SHM_DIR, entry))
                removed.append(entry)
            except OSError:
                pass
    for path in sorted(_paths):
        if os.path.exists(path):
            os.unlink(path)
            removed.append(path)
    _paths.clear()
    return removed


resources.on_cleanup(sweep)
