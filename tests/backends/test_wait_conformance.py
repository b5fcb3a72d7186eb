"""The wait-backend conformance suite under pytest: every check of ``pricefeed._wait.conformance`` (the
suite ``pricefeed selftest`` runs where pricefeed is installed) against every backend that works
here, one test id per pair, such as ``test_conformance[futex-cross_process_wake]``.

The contract is in pricefeed/_wait/__init__.py; the checks themselves are in
pricefeed/_wait/conformance.py and nowhere else.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import pytest

from pricefeed import InvalidInput, UnsupportedPlatform
from pricefeed._segment import list_feeds
from pricefeed._wait import ENV, available, select
from pricefeed._wait.conformance import CHECKS, Check, Skip, run

BACKENDS = [name for name, ok in available().items() if ok]


@pytest.mark.parametrize(
    ("backend", "check"),
    [pytest.param(b, c, id=f"{b}-{c.name}") for b in BACKENDS for c in CHECKS],
)
def test_conformance(backend: str, check: Check) -> None:
    try:
        note = check.func(backend)
    except Skip as exc:
        pytest.skip(exc.reason)
    if note:
        print(f"{check.name}[{backend}]: {note}")


def test_futex_backend_is_available_on_linux() -> None:
    if sys.platform.startswith("linux"):
        assert available()["futex"], "the futex backend should work on Linux"
    assert available()["polling"]


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert select("polling").name == "polling"
    assert select().name == BACKENDS[0]
    with pytest.raises(UnsupportedPlatform, match=r"unknown wait backend 'nope'; expected one of"):
        select("nope")
    unusable = [name for name, ok in available().items() if not ok]
    if unusable:
        with pytest.raises(UnsupportedPlatform) as info:
            select(unusable[0])
        assert str(info.value) == (
            f"wait backend {unusable[0]!r} does not work on this machine; the ones that do: {sorted(BACKENDS)}"
        )
    monkeypatch.setenv(ENV, "polling")
    assert select().name == "polling"


class _DeadWord:
    """A broken wait: it never sees a change or a wake, and ends at once as if it had timed out."""

    def wait(self, expected: Any, timeout: Optional[float]) -> bool:
        return False

    def wake(self) -> None:
        pass

    def wake_with(self, other: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _NeverWakes:
    name = "never-wakes"

    def usable(self) -> bool:
        return True

    def word(self, address: int, view: memoryview, key: Any, writer: bool = False) -> _DeadWord:
        return _DeadWord()

    def can_wait_many(self) -> bool:
        return True

    def multi(self, words: Sequence[Any]) -> _DeadWord:
        return _DeadWord()


def _our_segments() -> List[str]:
    """The segments run() made in this process and left behind (it must leave none)."""
    return [name for name in list_feeds() if name.startswith(f"st-{os.getpid()}-")]


def _rows(report: str, backend: str) -> Dict[str, str]:
    """{check name: row} for the rows of one backend in run()'s report."""
    rows: Dict[str, str] = {}
    for line in report.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("PASS", "FAIL", "SKIP") and parts[2] == backend:
            assert parts[1] not in rows, f"two rows for {parts[1]}: {report}"
            rows[parts[1]] = line
    return rows


def test_run_reports_a_broken_backend_and_returns_1() -> None:
    out = io.StringIO()
    assert run([_NeverWakes()], out=out) == 1
    report = out.getvalue()
    rows = _rows(report, "never-wakes")
    assert list(rows) == [c.name for c in CHECKS], report
    assert rows["returns_at_once"].startswith("FAIL"), report
    assert "returned False, not True" in rows["returns_at_once"], report
    assert rows["in_process_wake"].startswith("FAIL"), report
    assert rows["raising_handler_ends_wait"].startswith("FAIL"), report
    # Children select their backend by name, which a stand-in object does not have.
    assert rows["cross_process_wake"].startswith("SKIP"), report
    assert f"{len(CHECKS)} checks: " in report and "FAILED: returns_at_once[never-wakes]" in report, report
    assert _our_segments() == []


def test_run_returns_0_for_the_real_backends() -> None:
    out = io.StringIO()
    assert run(out=out, only="wake_with") == 0
    report = out.getvalue()
    for name in BACKENDS:
        assert list(_rows(report, name)) == ["wake_with"], report
        assert _rows(report, name)["wake_with"].startswith("PASS"), report
    assert f"{len(BACKENDS)} checks: {len(BACKENDS)} passed, 0 skipped, 0 failed" in report, report
    assert "FAILED" not in report
    assert _our_segments() == []


def test_run_refuses_unknown_names_before_running_anything() -> None:
    out = io.StringIO()
    with pytest.raises(InvalidInput, match=r"unknown check 'nope'; expected one of \['returns_at_once'"):
        run(out=out, only="nope")
    with pytest.raises(UnsupportedPlatform, match=r"unknown wait backend 'nope'"):
        run(["nope"], out=out)
    assert out.getvalue() == ""
