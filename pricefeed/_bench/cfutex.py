"""The C futex baseline: futex_pingpong.c compiled at run time, driven over a pipe.

It is the physical limit of a blocking wake-up between processes: a C waker, C waiters blocked
in FUTEX_WAIT on a shared mapping, no interpreter on either side. The program's own comment
gives its protocol; this module compiles it with the system compiler into a temporary
directory and turns its answers into lists of ns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Tuple

from . import procs

__all__ = ["compile_program", "CFutex"]

SOURCE = Path(__file__).resolve().parent / "futex_pingpong.c"
TIMEOUT = 120.0


def compile_program(directory: str) -> Tuple[Optional[str], str]:
    """(path of the program, note) or (None, why not) when there is no working C compiler."""
    compiler = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)
    if compiler is None:
        return None, "no C compiler (cc, gcc or clang) on PATH: the C futex baseline is skipped"
    binary = os.path.join(directory, "futex_pingpong")
    command = [compiler, "-O2", "-std=gnu11", "-o", binary, str(SOURCE)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None, f"{compiler} could not build the C futex baseline: {done.stderr.strip()[:300]}"
    return binary, f"C futex baseline built with {compiler} -O2"


class CFutex:
    """One futex_pingpong process with ``waiters`` waiting processes of its own."""

    name = "C futex"

    def __init__(self, binary: str, waiters: int = 1) -> None:
        self.waiters = waiters
        self.proc = procs.spawn([binary, str(waiters)])
        assert self.proc.stdout is not None
        self._reader = procs.LineReader(self.proc.stdout.fileno(), f"{self.name} ({waiters} waiters)")
        self._expect_ready()

    def _expect_ready(self) -> None:
        line = self._reader.line(procs_timeout(self.waiters))
        if line != b"ready":
            raise procs.ChildFailed(f"{self.name}: expected 'ready', got {line!r}")

    def run(self, n: int, low_ns: int, high_ns: int, seed: int) -> Tuple[List[int], List[int]]:
        """n wake-ups paced low..high ns apart: (time until the last waiter woke, cost of the
        waker's store-and-wake), each a list of n ns."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {n} {low_ns} {high_ns} {seed & 0x7FFFFFFF}\n".encode())
        self.proc.stdin.flush()
        line = self._reader.line(TIMEOUT + n * high_ns / 1e9 * 4)
        if line is None or not line.startswith(b"ok"):
            raise procs.ChildFailed(f"{self.name}: unexpected answer {line!r}")
        values = [int(v) for v in line.split()[1:]]
        return values[0::2], values[1::2]

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        procs.forget(self.proc)

    def __enter__(self) -> CFutex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def procs_timeout(waiters: int) -> float:
    """How long forking ``waiters`` processes may take on a busy machine."""
    return 10.0 + waiters * 0.1
