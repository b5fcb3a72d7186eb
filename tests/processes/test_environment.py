"""The feed among other users and processes: permissions with a real second user, a full
shared-memory file system, leaks over many opens, stale feeds removed while publishers race
for them, and (opt-in) a long soak."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

if sys.platform.startswith("linux"):
    import pwd
from _users import as_user, make_other_user
from conftest import ROOT, Proc, mappings_of, open_fds, unique_name, unlink_feed, worker

from pricefeed import PricefeedError, Publisher, Subscriber, remove
from pricefeed._segment import segment_name
from pricefeed._segment.attach import attach

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="Linux-specific: a second user by setuid, a full tmpfs by unshare, /proc",
)


@pytest.fixture(scope="module")
def other_user() -> Iterator[pwd.struct_passwd]:
    yield from make_other_user()


def _mappings(feed: str) -> set[str]:
    with open("/proc/self/maps") as f:
        return {line for line in f if line.rstrip().endswith(segment_name(feed))}


def _try(fn: Callable[[], Any]) -> Dict[str, Any]:
    try:
        return {"ok": fn()}
    except PricefeedError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


def test_owner_only_feed_is_closed_to_others(feed: str, other_user: pwd.struct_passwd) -> None:
    with Publisher.create(feed) as pub:  # 0600 by default
        pub.publish("A", 1.0)

        def probe() -> Dict[str, Any]:
            return {"read": _try(lambda: Subscriber(feed).get("A")), "write": _try(lambda: Publisher.open(feed).head)}

        got = as_user(other_user, probe)
    for what in ("read", "write"):
        assert got[what]["error"] == "FeedPermissionError", got
        assert (
            f"permission denied to open{' for writing' if what == 'write' else ''} feed '{feed}'"
            in got[what]["message"]
        )


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_readable_feed_can_be_followed_never_written(feed: str, other_user: pwd.struct_passwd, mode: int) -> None:
    with Publisher.create(feed, mode=mode) as pub:
        if mode == 0o640:
            os.chown(f"/dev/shm{segment_name(feed)}", -1, other_user.pw_gid)
        pub.publish("A", 1.5)

        def probe() -> Dict[str, Any]:
            out: Dict[str, Any] = {}
            inherited = _mappings(feed)  # the parent's publisher mapping came along with fork()
            with Subscriber(feed) as sub:
                q = sub["A"]
                out["read"] = [q.symbol, q.price]
                seg, _ = attach(feed, writable=False)  # the mapping the subscriber made
                try:
                    seg.view[0] = 0
                    out["wrote"] = True
                except TypeError:
                    out["wrote"] = False
                finally:
                    seg.close()
                out["maps"] = [line.split()[1] for line in _mappings(feed) - inherited]
            out["publish"] = _try(lambda: Publisher.open(feed).publish("A", 9.0))
            out["remove"] = _try(lambda: remove(feed, force=True))  # /dev/shm is sticky: not theirs to unlink
            return out

        got = as_user(other_user, probe)
        assert got["read"] == ["A", 1.5] and got["wrote"] is False and got["maps"] == ["r--s"]
        assert got["publish"]["error"] == "FeedPermissionError"
        assert got["remove"]["error"] == "FeedPermissionError", got["remove"]
        with Subscriber(feed) as sub:
            assert sub["A"].price == 1.5 and sub.head == 1 and not sub.ended, "the other user changed nothing"


def test_full_shared_memory_fails_cleanly_and_leaves_nothing(tmp_path: Path) -> None:
    """A private 256 KiB tmpfs on /dev/shm (in a mount namespace of its own): a feed that does
    not fit is refused with a clear error and nothing is left behind."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a small tmpfs in a private namespace")
    script = tmp_path / "full.py"
    script.write_text(
        "import json, os, subprocess, sys\n"
        "from pricefeed import Publisher, PricefeedError\n"
        "out = {}\n"
        "try:\n"
        "    Publisher.create('big', capacity=1024, ring_size=65536)\n"
        "    out['big'] = 'created'\n"
        "except PricefeedError as exc:\n"
        "    out['big'] = [type(exc).__name__, str(exc)]\n"
        "out['left'] = sorted(os.listdir('/dev/shm'))\n"
        "with Publisher.create('small', capacity=8, ring_size=16) as pub:\n"
        "    pub.publish('A', 1.0)\n"
        "p = subprocess.run([sys.executable, '-m', 'pricefeed', 'create', 'big2', '--ring', '65536'], capture_output=True, text=True)\n"
        "out['cli'] = [p.returncode, p.stderr]\n"
        "out['after'] = sorted(os.listdir('/dev/shm'))\n"
        "print(json.dumps(out))\n"
    )
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    p = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=256k tmpfs /dev/shm && exec {sys.executable} {script}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["big"][0] == "PricefeedError" and "no room in shared memory" in out["big"][1], out
    assert out["left"] == [], "a feed that did not fit left something behind"
    code, err = out["cli"]
    assert code == 1 and "no room in shared memory" in err and "Traceback" not in err
    assert out["after"] == ["pf-small"]


def test_ten_thousand_opens_leak_nothing(feed: str) -> None:
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
    fds = open_fds()
    for _ in range(10_000):
        with Subscriber(feed) as sub:
            sub.get("A")
    for i in range(1_000):
        with Publisher.open(feed) as pub:
            pub.publish("A", float(i))
    assert (open_fds(), mappings_of(feed)) == (fds, 0)


def test_stale_removal_never_takes_a_held_feed(procs: List[Proc]) -> None:
    """A publisher taking over a stale feed and `rm --stale` start at the same instant, 40
    times: either the publisher holds the feed (and it is still there, under its name), or it
    was removed and the publisher was refused. Never a publisher on a removed segment."""
    outcomes = {"held": 0, "removed": 0}
    for _ in range(40):
        feed = unique_name()
        try:
            Publisher.create(feed).close()
            start = str(time.time() + 0.4)
            taker = Proc(worker("race_take", feed, start), stdin=subprocess.PIPE)
            remover = Proc(worker("race_remove", feed, start))
            procs.extend([taker, remover])
            took, removed = taker.json_line(timeout=30), remover.json_line(timeout=30)
            if took["held"]:
                assert took["linked"] and not removed["removed"], (took, removed)
                st = os.stat(f"/dev/shm{segment_name(feed)}")
                assert [st.st_dev, st.st_ino] == took["inode"]
                outcomes["held"] += 1
            else:
                assert removed["removed"] and took["error"] == "FeedNotFound", (took, removed)
                outcomes["removed"] += 1
            taker.finish(timeout=30)
        finally:
            unlink_feed(feed)
    print(outcomes)


@pytest.mark.slow
def test_soak_ten_million_changes(feed: str, procs: List[Proc]) -> None:
    """10 million changes to 4 subscribers, each checked as it arrives; memory stays flat."""
    total = 10_000_000
    Publisher.create(feed, capacity=128, ring_size=1 << 16).close()
    subs = [Proc(worker("soak_follow", feed)) for _ in range(4)]
    procs.extend(subs)
    for s in subs:
        assert s.readline() == "ready"
    pub = Proc(worker("soak_publish", feed, total))
    procs.append(pub)
    assert pub.readline() == "ready"
    published = pub.json_line(timeout=3600)
    for s in subs:
        got = s.json_line(timeout=600)
        assert got["bad"] == 0 and got["last"] == total
        assert got["delivered"] + got["missed"] == total, got
        rss = got["rss_kib"]
        assert rss and max(rss) - min(rss) < 8 * 1024, f"subscriber memory grew: {rss}"
        print({k: got[k] for k in ("delivered", "missed")})
    rss = published["rss_kib"]
    assert max(rss) - min(rss) < 8 * 1024, f"publisher memory grew: {rss}"
