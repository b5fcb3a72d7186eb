"""What a reader makes of the publisher words (Rule 6): pure functions, no I/O.

A publisher that takes the feed stores ``publisher_state`` (its new epoch, "holds", the count of
clean handovers) before ``publisher_epoch``; one that closes cleanly stores ``publisher_state``
("closed") after its last change. A reader loads ``publisher_epoch`` before
``publisher_state`` (``FeedReader.publisher_view``), and these functions decide what a change of
them means: a restart worth reporting, a clean handover, or nothing yet.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

from . import layout as L

_EPOCH_MASK = (1 << L.STATE_EPOCH_BITS) - 1
_HANDOVERS_MASK = (1 << L.HANDOVERS_BITS) - 1


class Seen(NamedTuple):
    """What a reader last took in of the publishers: the epoch, and the clean handovers."""

    epoch: int
    handovers: int


def takeover_news(seen: Seen, epoch: int, state: L.PublisherState, final: bool) -> Optional[Tuple[int, Seen]]:
    """None when nothing changed since ``seen`` (or nothing can be said yet); else how many of
    the takeovers since then followed a publisher that did not close cleanly (each of those
    may have repaired what it found), and what the reader has seen now.

    A state one takeover ahead of the epoch belongs to a takeover still being recorded: with
    ``final`` False the answer waits for it; with ``final`` True (no process holds the lock,
    so that publisher died between its two stores) the handover it may have counted is not
    believed, so the answer errs towards reporting a restart, never towards hiding one.
    Takeovers by writers that do not keep the word are never counted clean: reported, as
    readers that do not know the word report every takeover."""
    if epoch == seen.epoch:
        return None
    ahead = state.epoch == (epoch + 1) & _EPOCH_MASK
    if ahead and not final:
        return None
    takeovers = (epoch - seen.epoch) & _EPOCH_MASK
    if seen.epoch == 0:
        takeovers -= 1  # the feed's first publisher took nothing over
    clean = (state.handovers - seen.handovers) & _HANDOVERS_MASK
    if ahead:
        clean = max(0, clean - 1)
    return max(0, takeovers - clean), Seen(epoch, state.handovers)


def closed_cleanly(epoch: int, state: L.PublisherState) -> bool:
    """Whether the publisher of ``epoch`` (no process holds the lock now) closed cleanly."""
    return epoch != 0 and state.epoch == epoch and state.state == L.PUBLISHER_CLOSED
