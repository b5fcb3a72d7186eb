"""The README's examples run as written: every ```python block as its own process, started in
the order shown, each while the ones before it still run (the subscriber waits for the feed
the publisher then creates), each exiting 0; and the command-line tour, in a shell. Each runs
on this test's feed: the README's name, "prices", is replaced in the text."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
from conftest import LINUX, ROOT, SETTLE_SECONDS, Proc, posix_only

README = (ROOT / "README.md").read_text(encoding="utf-8")
NAME = "prices"  # the README's feed
TIMEOUT = 60.0


def blocks(language: str) -> List[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.S | re.M)


def on_feed(code: str, feed: str) -> str:
    """The code with the README's feed name replaced by ``feed``, wherever it is a word."""
    assert re.search(rf"\b{NAME}\b", code), code
    return re.sub(rf"\b{NAME}\b", feed, code)


def waiting_or_done(p: Proc) -> bool:
    """The process exited, or sleeps in a wait (Linux: /proc shows where; elsewhere, after
    SETTLE_SECONDS it is assumed to)."""
    if p.p.poll() is not None:
        return True
    if not LINUX:
        time.sleep(SETTLE_SECONDS)
        return True
    try:
        where = Path(f"/proc/{p.pid}/wchan").read_text()
    except OSError:
        return True
    return "nanosleep" in where or "futex" in where


def wait_for(p: Proc, timeout: float) -> bool:
    """True when the process settled (exited or sleeps in a wait) before ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if waiting_or_done(p):
            return True
        time.sleep(0.01)
    return False


def test_the_readme_has_the_examples_this_test_runs() -> None:
    code = blocks("python")
    assert len(code) == 6
    assert ".act(" in code[5]
    assert "aupdates(" in code[4] and "asyncio.run" in code[4]
    assert "Subscriber(" in code[0] and "wait=True" in code[0]
    assert "Publisher" in code[1] and "end()" in code[1]
    assert "pricefeed get" in blocks("sh")[1]


def test_every_python_example_runs_as_written_in_order(feed: str, procs: List[Proc]) -> None:
    started: List[Proc] = []
    settled: List[bool] = []
    for code in blocks("python"):
        p = Proc([sys.executable, "-c", on_feed(code, feed)])
        procs.append(p)
        started.append(p)
        settled.append(wait_for(p, TIMEOUT))
    results = [p.finish(timeout=TIMEOUT) for p in started]
    for i, (code, _, err) in enumerate(results):
        assert code == 0, f"python block {i + 1} exited {code}: {err}"
        assert "Traceback" not in err, err
    subscriber, _, reader, book, in_loop, acting = (out for _, out, _ in results)
    if settled[0] and started[0].p.returncode == 0 and LINUX:
        # It was waiting for the feed before the publisher started: it saw every change.
        assert subscriber.splitlines() == ["act on AAPL 187.25", "act on MSFT 415.1", "the feed has ended"]
    assert reader.splitlines()[0].startswith("Quote(symbol='AAPL', price=187.25, time_ns=")
    assert reader.splitlines()[1:] == ["None", "['AAPL', 'ES', 'MSFT']"]
    assert book.splitlines() == [
        "1 5201.25 5201.5 12 ('bid', 'ask', 'bid_size', 'ask_size')",
        "3 5201.5 5201.75 3 ('bid', 'bid_size')",
    ]
    assert in_loop.splitlines() == ["async AAPL 187.5"]
    assert acting.splitlines() == ["2 [('AAPL', 187.5), ('MSFT', 415.25)]"]


@posix_only
@pytest.mark.skipif(shutil.which("bash") is None, reason="the README's shell examples need bash")
def test_the_command_line_tour_runs_as_written(feed: str) -> None:
    tour = on_feed(blocks("sh")[1], feed)
    # `pricefeed` is the checkout's, whatever is installed.
    script = f'pricefeed() {{ "{sys.executable}" -m pricefeed "$@"; }}\nset -euo pipefail\n{tour}'
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    out = p.stdout.splitlines()
    assert out[0] == "187.5"  # get
    assert [line.split()[1:] for line in out[1:4]] == [["AAPL", "187.5"], ["MSFT", "415.1"], ["ES", "5201.5"]]
    assert sorted(out[4:7]) == ["AAPL 187.5", "ES 5201.5", "MSFT 415.1"]  # --exec, in feed order
    assert f"feed         {feed}" in out and any(line.split()[:1] == [feed] for line in out)
    gone = subprocess.run([sys.executable, "-m", "pricefeed", "get", feed, "AAPL"], capture_output=True, timeout=60)
    assert gone.returncode == 3, "the tour's last command removes the feed"
