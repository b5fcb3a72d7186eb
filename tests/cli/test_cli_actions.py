"""Bad values of subscribe's action options: a usage error (exit 2) with a one-line reason, or
for a state file that is there but not a state, exit 7 naming the file; never a traceback.
Real `python -m pricefeed` processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import List

import pytest
from conftest import cli

from pricefeed import Publisher, Subscriber


def run(*args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout)


def refused(args: List[object], code: int, *expected: str) -> str:
    p = run(*args)
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.stdout == ""
    for text in expected:
        assert text in p.stderr, p.stderr
    return p.stderr


@pytest.mark.parametrize(
    ("option", "value", "rule"),
    [
        ("--jobs", "0", "jobs must be N (1 to 256) or MIN:MAX"),
        ("--jobs", "3:2", "jobs must be N"),
        ("--jobs", "x", "jobs must be N"),
        ("--jobs", "1:2:3", "jobs must be N"),
        ("--on-error", "retry:-1", "on_error must be stop, skip, retry:N or retry:N:BACKOFF"),
        ("--on-error", "retry:2:x", "on_error must be"),
        ("--on-error", "halt", "on_error must be"),
        ("--timeout-action", "-1", "--timeout-action must be a number of seconds > 0: got '-1'"),
        ("--timeout-action", "0", "--timeout-action must be a number of seconds > 0"),
        ("--queue", "0", "queue must be a whole number of changes from 1 to 1000000: got '0'"),
        ("--grace", "-2", "--grace must be a number of seconds >= 0"),
        ("--idle", "nan", "--idle must be a number of seconds > 0"),
    ],
)
def test_a_bad_option_value_is_a_usage_error(feed: str, option: str, value: str, rule: str) -> None:
    Publisher.create(feed).close()
    err = refused(["subscribe", feed, "--exec", "true", option, value, "--count", "1"], 2, rule, f"'{option}'")
    assert "Usage: pricefeed subscribe" in err


def test_a_state_file_in_a_missing_directory_is_a_usage_error(feed: str, tmp_path: Path) -> None:
    Publisher.create(feed).close()
    missing = tmp_path / "nowhere" / "st.json"
    refused(["subscribe", feed, "--exec", "true", "--state", missing], 2, "does not exist", "'--state'")


@pytest.mark.parametrize("option", [["--jobs", "2"], ["--queue", "5"], ["--on-error", "skip"], ["--state", "s.json"],
                                    ["--grace", "1"], ["--idle", "1"], ["--timeout-action", "1"]])  # fmt: skip
def test_pool_options_need_exec(feed: str, option: List[str]) -> None:
    Publisher.create(feed).close()
    refused(["subscribe", feed, *option, "--count", "1"], 2, f"{option[0]} needs --exec")


def test_a_corrupt_state_file_exits_7_naming_the_file(feed: str, tmp_path: Path) -> None:
    Publisher.create(feed).close()
    path = tmp_path / "st.json"
    path.write_text('{"format": "pricefeed-actions", "version": 1, "feed": "x"')
    refused(["subscribe", feed, "--exec", "true", "--state", path], 7, f"state file {str(path)!r}", "not valid JSON")
    path.write_text(json.dumps({"format": "pricefeed-actions", "version": 1, "feed": feed, "incarnation": 1,
                                "resume": 0, "symbols": {"A": -4}}))  # fmt: skip
    refused(["subscribe", feed, "--exec", "true", "--state", path], 7, "the seq of symbol 'A' must be a whole number")


def test_a_state_file_of_another_feed_or_beyond_the_head_exits_7(feed: str, tmp_path: Path) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
    with Subscriber(feed) as sub:
        incarnation = sub.status().incarnation
    path = tmp_path / "st.json"
    state = {"format": "pricefeed-actions", "version": 1, "feed": "other", "incarnation": incarnation,
             "resume": 0, "symbols": {}}  # fmt: skip
    path.write_text(json.dumps(state))
    refused(["subscribe", feed, "--exec", "true", "--state", path], 7, "is for feed 'other'")
    path.write_text(json.dumps({**state, "feed": feed, "resume": 99}))
    refused(["subscribe", feed, "--exec", "true", "--state", path], 7, "resume 99 beyond the feed's head (1)")
