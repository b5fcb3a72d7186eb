"""A feed's named segment: the platform's module behind one interface.

``Segment`` opens, creates, maps, locks (one publisher) and removes a feed's memory;
``list_feeds`` names the feeds on this machine; ``segment_path`` says where a segment shows in
the file system. POSIX systems use named shared memory (``_segment_posix``), Windows a mapping
of a real file (``_segment_windows``, where docs/platforms.md says why).
"""

from __future__ import annotations

import sys

from .common import LOCK_RETRY_SECONDS, NAME_MAX, PREFIX, check_name, segment_name

if sys.platform == "win32":
    from .windows import Segment, list_feeds, segment_path
else:
    from .posix import Segment, list_feeds, segment_path


__all__ = [
    "LOCK_RETRY_SECONDS",
    "NAME_MAX",
    "PREFIX",
    "Segment",
    "check_name",
    "list_feeds",
    "segment_name",
    "segment_path",
]
