"""Names for everything the benchmark puts in shared memory, and its removal.

Feeds are called ``bench-<pid>-<tag><n>`` (pricefeed stores one as /dev/shm/pf-bench-...). The
baselines' own segments and semaphores are called ``/bench-<pid>-<tag><n>``, without
pricefeed's ``pf-`` prefix, so that ``pricefeed ls`` never lists them as feeds.

Rule: a name is unlinked as soon as every process that needs it has it open. The baselines'
segments are mapped, then unlinked at once, before any worker is forked (workers inherit the
mapping); a feed is unlinked once its subscribers have attached. From then on nothing is left
in /dev/shm even if bench.py is killed with -9. ``cleanup()`` removes whatever is still named
when the benchmark ends, however it ends.
"""

from __future__ import annotations

import itertools
import mmap
import os
from typing import List, Set

import posix_ipc

import pricefeed

__all__ = ["PID", "feed_name", "shared_memory", "semaphore", "temp_path", "cleanup", "leftovers"]

PID = os.getpid()
SHM_DIR = "/dev/shm"
_numbers = itertools.count(1)
_feeds: Set[str] = set()
_paths: Set[str] = set()


def _unique(tag: str) -> str:
    return f"bench-{PID}-{tag}{next(_numbers)}"


def feed_name(tag: str) -> str:
    """A feed name no other run uses, remembered for cleanup()."""
    name = _unique(tag)
    _feeds.add(name)
    return name


def shared_memory(tag: str, size: int) -> mmap.mmap:
    """A new shared mapping of ``size`` bytes in /dev/shm, whose name is already gone."""
    name = "/" + _unique(tag)
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
    try:
        return mmap.mmap(shm.fd, size)
    finally:
        shm.close_fd()
        shm.unlink()


def semaphore(tag: str) -> posix_ipc.Semaphore:
    """A new POSIX semaphore at 0, whose name is already gone (workers inherit it by fork)."""
    name = "/" + _unique(tag)
    sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
    sem.unlink()
    return sem


def temp_path(tag: str, directory: str = "/tmp") -> str:
    """A path for a socket file or the like, remembered for cleanup()."""
    path = os.path.join(directory, _unique(tag))
    _paths.add(path)
    return path


def forget_feed(name: str) -> None:
    """Remove a feed now if it is still named; safe to call twice."""
    try:
        pricefeed.remove(name, force=True)
    except pricefeed.FeedNotFound:
        pass
    _feeds.discard(name)


# iceoryx2 keeps a management segment per process group in /dev/shm ("iox2_..."); the ones
# this run made (not there when it started) are removed with the rest.
_IOX2_BEFORE = None


def note_iceoryx2() -> None:
    """Call before the first iceoryx2 node: what iceoryx2 already had in /dev/shm."""
    global _IOX2_BEFORE
    if _IOX2_BEFORE is None:
        _IOX2_BEFORE = {e for e in _shm_entries() if e.startswith("iox2_")}


def _shm_entries() -> List[str]:
    try:
        return os.listdir(SHM_DIR)
    except OSError:
        return []


def cleanup() -> List[str]:
    """Remove every feed, file and segment of this run that is still there; returns their names."""
    removed = []
    if _IOX2_BEFORE is not None:
        for entry in sorted(e for e in _shm_entries() if e.startswith("iox2_") and e not in _IOX2_BEFORE):
            try:
                os.unlink(os.path.join(SHM_DIR, entry))
                removed.append(entry)
            except OSError:
                pass
    for name in sorted(_feeds):
        if name in pricefeed.feed_names():
            removed.append(name)
        forget_feed(name)
    for path in sorted(_paths):
        if os.path.exists(path):
            os.unlink(path)
            removed.append(path)
    _paths.clear()
    for entry in leftovers():  # a last sweep: nothing of ours may stay
        try:
            os.unlink(os.path.join(SHM_DIR, entry))
            removed.append(entry)
        except FileNotFoundError:
            pass
    return removed


def leftovers() -> List[str]:
    """Entries of /dev/shm that belong to this run."""
    mark = f"bench-{PID}-"
    try:
        return sorted(e for e in os.listdir(SHM_DIR) if mark in e)
    except OSError:
        return []
