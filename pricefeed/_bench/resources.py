"""Names for everything the benchmark puts in shared memory, and its removal.

Feeds are called ``bench-<pid>-<tag><n>`` (pricefeed stores one as /dev/shm/pf-bench-...). The
baselines' own segments are called ``/bench-<pid>-<tag><n>``, without pricefeed's ``pf-``
prefix, so that ``pricefeed ls`` never lists them as feeds.

Rule: a name is unlinked as soon as every process that needs it has it open. The baselines'
segments are mapped, then unlinked at once, before any worker is forked (workers inherit the
mapping); a feed is unlinked once its subscribers have attached. From then on nothing is left
in /dev/shm even if the benchmark is killed with -9. ``cleanup()`` removes whatever is still
named when the benchmark ends, however it ends; a harness that makes names of other kinds
(socket files, say) registers its own sweep with ``on_cleanup``.
"""

from __future__ import annotations

import itertools
import mmap
import os
from typing import Callable, List, Set

import posix_ipc

import pricefeed

__all__ = ["PID", "SHM_DIR", "unique", "feed_name", "shared_memory", "forget_feed", "on_cleanup", "cleanup"]

PID = os.getpid()
SHM_DIR = "/dev/shm"
_numbers = itertools.count(1)
_feeds: Set[str] = set()
_sweeps: List[Callable[[], List[str]]] = []


def unique(tag: str) -> str:
    """``bench-<pid>-<tag><n>``: a name no other run, and no other call in this one, uses."""
    return f"bench-{PID}-{tag}{next(_numbers)}"


def feed_name(tag: str) -> str:
    """A feed name no other run uses, remembered for cleanup()."""
    name = unique(tag)
    _feeds.add(name)
    return name


def shared_memory(tag: str, size: int) -> mmap.mmap:
    """A new shared mapping of ``size`` bytes in /dev/shm, whose name is already gone."""
    name = "/" + unique(tag)
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
    try:
        return mmap.mmap(shm.fd, size)
    finally:
        shm.close_fd()
        shm.unlink()


def forget_feed(name: str) -> None:
    """Remove a feed now if it is still named; safe to call twice."""
    try:
        pricefeed.remove(name, force=True)
    except pricefeed.FeedNotFound:
        pass
    _feeds.discard(name)


def on_cleanup(sweep: Callable[[], List[str]]) -> None:
    """Have cleanup() call ``sweep`` first: it removes names of its own, returning them."""
    _sweeps.append(sweep)


def cleanup() -> List[str]:
    """Remove every feed, file and segment of this run that is still there; returns their names."""
    removed = []
    for sweep in _sweeps:
        removed += sweep()
    for name in sorted(_feeds):
        if name in pricefeed.feed_names():
            removed.append(name)
        forget_feed(name)
    for entry in _leftovers():  # a last sweep: nothing of ours may stay
        try:
            os.unlink(os.path.join(SHM_DIR, entry))
            removed.append(entry)
        except FileNotFoundError:
            pass
    return removed


def _leftovers() -> List[str]:
    """Entries of /dev/shm that belong to this run (POSIX semaphores included: sem.bench-...)."""
    mark = f"bench-{PID}-"
    try:
        return sorted(e for e in os.listdir(SHM_DIR) if mark in e)
    except OSError:
        return []
