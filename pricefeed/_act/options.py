"""The action pool's settings and the rules of their values, shared by the CLI and the library.

Each ``parse_*`` takes what a user wrote (CLI text, or a Python value from ``act()``) and
returns the checked value, or raises InvalidInput stating the rule and the value; the CLI turns
that into a usage error (exit 2), the library lets it through (exit 7 style). The defaults are
here once, and docs/actions.md quotes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from .._errors import InvalidInput
from .._values import short_repr

__all__ = [
    "OnError",
    "Settings",
    "DEFAULT_QUEUE",
    "DEFAULT_GRACE",
    "DEFAULT_IDLE",
    "DEFAULT_BACKOFF",
    "MAX_JOBS",
    "MAX_QUEUE",
    "MAX_RETRIES",
    "parse_jobs",
    "parse_on_error",
    "parse_queue",
    "parse_seconds",
]

#: Changes that may wait per symbol while its action runs (without --conflate).
DEFAULT_QUEUE = 1024
#: Seconds running actions get to finish after a stop is asked for (SIGTERM, Ctrl-C, a failure).
DEFAULT_GRACE = 5.0
#: Seconds a worker above the minimum may stay idle before it is retired.
DEFAULT_IDLE = 5.0
#: Seconds before the first retry (each further one waits twice as long as the one before).
DEFAULT_BACKOFF = 0.5
#: The longest a retry ever waits, however many came before.
MAX_BACKOFF = 60.0
MAX_JOBS = 256
MAX_QUEUE = 1_000_000
MAX_RETRIES = 100


@dataclass(frozen=True)
class OnError:
    """What to do when an action fails: ``stop``, ``skip``, or ``retry`` (``retries`` more
    attempts, the first after ``backoff`` seconds, each next one after twice as long). After
    the last retry fails the change is given up on, reported, as ``skip`` does."""

    policy: str = "stop"
    retries: int = 0
    backoff: float = DEFAULT_BACKOFF

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``, after attempt ``attempt`` failed."""
        return min(self.backoff * 2.0 ** (attempt - 1), MAX_BACKOFF)

    def __str__(self) -> str:
        return f"retry:{self.retries}:{self.backoff:g}" if self.policy == "retry" else self.policy


@dataclass(frozen=True)
class Settings:
    """Everything the engine needs to know besides what runs the actions."""

    jobs_min: int = 1
    jobs_max: int = 1
    queue: int = DEFAULT_QUEUE
    conflate: bool = False
    on_error: OnError = OnError()
    timeout: Optional[float] = None
    grace: float = DEFAULT_GRACE
    idle: float = DEFAULT_IDLE
    #: Stop taking changes after this many (the rest of those taken still run); None: no limit.
    count: Optional[int] = None


def _whole(text: str, what: str, value: object) -> int:
    text = text.strip()
    if not text or not (text.isdigit() or (text[0] in "+-" and text[1:].isdigit())) or not text.isascii():
        raise InvalidInput(f"{what}: got {short_repr(value)}")
    return int(text)


def parse_jobs(value: Union[str, int, Tuple[int, int]]) -> Tuple[int, int]:
    """``N`` (that many workers, always) or ``MIN:MAX`` (an elastic pool): (MIN, MAX), with
    1 <= MAX <= MAX_JOBS and 0 <= MIN <= MAX."""
    rule = f"jobs must be N (1 to {MAX_JOBS}) or MIN:MAX (0 <= MIN <= MAX, 1 <= MAX <= {MAX_JOBS})"
    if isinstance(value, bool):
        raise InvalidInput(f"{rule}: got {value!r}")
    if isinstance(value, int):
        low, high = value, value
    elif isinstance(value, tuple) and len(value) == 2 and all(type(v) is int for v in value):
        low, high = value
    elif isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 1:
            low = high = _whole(parts[0], rule, value)
        elif len(parts) == 2:
            low, high = _whole(parts[0], rule, value), _whole(parts[1], rule, value)
        else:
            raise InvalidInput(f"{rule}: got {short_repr(value)}")
    else:
        raise InvalidInput(f"{rule}: got {short_repr(value)}")
    if low == high and not 1 <= high <= MAX_JOBS:
        raise InvalidInput(f"{rule}: got {short_repr(value)}")
    if not (0 <= low <= high and 1 <= high <= MAX_JOBS):
        raise InvalidInput(f"{rule}: got {short_repr(value)}")
    return low, high


def parse_queue(value: Union[str, int]) -> int:
    rule = f"queue must be a whole number of changes from 1 to {MAX_QUEUE}"
    if isinstance(value, bool):
        raise InvalidInput(f"{rule}: got {value!r}")
    n = value if isinstance(value, int) else _whole(value, rule, value) if isinstance(value, str) else None
    if n is None or not 1 <= n <= MAX_QUEUE:
        raise InvalidInput(f"{rule}: got {short_repr(value)}")
    return n


def parse_seconds(value: Union[str, float, int], what: str, allow_zero: bool = True) -> float:
    """A finite number of seconds, >= 0 (or > 0 with ``allow_zero=False``)."""
    rule = f"{what} must be a number of seconds {'>= 0' if allow_zero else '> 0'}"
    if isinstance(value, bool):
        raise InvalidInput(f"{rule}: got {value!r}")
    try:
        seconds = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{rule}: got {short_repr(value)}") from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidInput(f"{rule}: got {short_repr(value)}")
    return seconds


def parse_on_error(value: Union[str, OnError]) -> OnError:
    """``stop``, ``skip``, ``retry:N`` or ``retry:N:BACKOFF`` (1 <= N <= MAX_RETRIES,
    BACKOFF seconds >= 0, DEFAULT_BACKOFF if left out)."""
    if isinstance(value, OnError):
        return value
    rule = (
        f"on_error must be stop, skip, retry:N or retry:N:BACKOFF (N from 1 to {MAX_RETRIES}, "
        "BACKOFF seconds >= 0 before the first retry, doubling after)"
    )
    if not isinstance(value, str):
        raise InvalidInput(f"{rule}: got {short_repr(value)}")
    parts = value.strip().split(":")
    if parts == ["stop"] or parts == ["skip"]:
        return OnError(parts[0])
    if parts[0] != "retry" or len(parts) not in (2, 3):
        raise InvalidInput(f"{rule}: got {short_repr(value)}")
    retries = _whole(parts[1], rule, value)
    if not 1 <= retries <= MAX_RETRIES:
        raise InvalidInput(f"{rule}: got {short_repr(value)}")
    try:
        backoff = parse_seconds(parts[2], "BACKOFF") if len(parts) == 3 else DEFAULT_BACKOFF
    except InvalidInput:
        raise InvalidInput(f"{rule}: got {short_repr(value)}") from None
    return OnError("retry", retries, backoff)
