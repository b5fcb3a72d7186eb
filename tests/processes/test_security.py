"""Another local user as an attacker: segments made by someone else under our feed's name,
segments every user may write, and names swapped for FIFOs and junk files while the CLI runs.

The second user is real (made with useradd when running as root); the tests that need it are
skipped, saying why, otherwise. docs/guarantees.md ("Other users") states the threat model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest
from _users import as_user, make_other_user
from conftest import cli

from pricefeed import FeedNotTrusted, InvalidGeometry, InvalidInput, Publisher, Subscriber
from pricefeed._segment import segment_path

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="Linux-specific: a second user by setuid, segments seen in /dev/shm",
)

if sys.platform.startswith("linux"):
    import pwd

#: What every CLI run in these tests must finish within; a hang fails the test, never stalls it.
RUN_TIMEOUT = 30


@pytest.fixture(scope="module")
def other_user() -> Iterator[pwd.struct_passwd]:
    yield from make_other_user()


def _made_by(user: pwd.struct_passwd, feed: str, mode: int, price: float = 1.0) -> None:
    """``user`` creates ``feed`` with ``mode`` and publishes A=price, then closes it."""

    def make() -> Dict[str, Any]:
        with Publisher.create(feed, mode=mode, allow_world_writable=bool(mode & 0o002)) as pub:
            pub.publish("A", price)
        return {}

    as_user(user, make)


def _bytes(feed: str) -> bytes:
    with open(segment_path(feed), "rb") as f:
        return f.read()


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)


def test_a_squatted_world_writable_segment_is_refused_and_left_untouched(
    feed: str, other_user: pwd.struct_passwd
) -> None:
    """The other user made the feed first, writable by all: our publisher refuses it, says
    whose it is and its mode, and writes nothing (the lock is not even taken)."""
    _made_by(other_user, feed, 0o666)
    before = _bytes(feed)
    got = _run("publish", feed, "AAPL=187.25")
    assert got.returncode == 14, got
    assert f"feed {feed!r} belongs to {other_user.pw_name} (uid {other_user.pw_uid}) (mode 0666)" in got.stderr
    assert "Traceback" not in got.stderr
    with pytest.raises(FeedNotTrusted, match="not to root"):
        Publisher.open(feed)
    with pytest.raises(FeedNotTrusted, match="belongs to"):
        Publisher.open_or_create(feed)  # not taken for missing, and not created over
    assert _bytes(feed) == before, "a refused segment was written"
    # Subscribers refuse it too: every user may write it.
    with pytest.raises(FeedNotTrusted, match=r"may be written by every user \(mode 0666\)"):
        Subscriber(feed)
    assert _run("get", feed, "A").returncode == 14


def test_another_users_feed_is_published_to_only_when_told_whose_it_is(
    feed: str, other_user: pwd.struct_passwd
) -> None:
    """A group of publishers that take over from one another: told the owner, the takeover
    works and continues the sequence; told another owner, it is refused."""
    _made_by(other_user, feed, 0o660)
    with pytest.raises(FeedNotTrusted, match=f"pass owner='{other_user.pw_name}'"):
        Publisher.open(feed)
    with pytest.raises(FeedNotTrusted):
        Publisher.open(feed, owner="root")
    with Publisher.open(feed, owner=other_user.pw_name) as pub:
        assert pub.head == 1
        assert pub.publish("A", 2.0)
        assert pub.head == 2
    with Publisher.open(feed, owner=other_user.pw_uid) as pub:  # a uid works as well as a name
        assert pub.head == 2


def test_an_owner_that_does_not_exist_is_bad_input(feed: str) -> None:
    Publisher.create(feed).close()
    with pytest.raises(InvalidInput, match="owner must be the name or uid of a user of this machine"):
        Publisher.open(feed, owner="no-such-user-here")


def test_reading_another_users_feed_is_normal_and_the_owner_can_be_pinned(
    feed: str, other_user: pwd.struct_passwd
) -> None:
    _made_by(other_user, feed, 0o644, price=3.5)
    with Subscriber(feed) as sub:
        assert sub["A"].price == 3.5
        status = sub.status()
        assert (status.owner, status.mode) == (other_user.pw_name, 0o644)
    with Subscriber(feed, owner=other_user.pw_name) as sub:
        assert sub["A"].price == 3.5
    with pytest.raises(FeedNotTrusted, match=f"belongs to {other_user.pw_name}"):
        Subscriber(feed, owner="root")


def test_world_writable_feeds_are_refused_by_every_role_unless_allowed(feed: str) -> None:
    with pytest.raises(InvalidGeometry, match="lets every user write the feed"):
        Publisher.create(feed, mode=0o666)
    assert not os.path.exists(segment_path(feed))
    Publisher.create(feed).close()
    os.chmod(segment_path(feed), 0o602)  # our own feed, opened to every writer by mistake
    with pytest.raises(FeedNotTrusted, match=r"mode 0602"):
        Publisher.open(feed)
    with pytest.raises(FeedNotTrusted, match="--allow-world-writable"):
        Subscriber(feed)
    assert _run("publish", feed, "A=1").returncode == 14
    with Publisher.open(feed, allow_world_writable=True) as pub:
        pub.publish("A", 1.0)
    with Subscriber(feed, allow_world_writable=True) as sub:
        assert sub["A"].price == 1.0


@pytest.mark.parametrize("owner", ["root", None])
def test_a_feed_recreated_by_another_user_is_not_followed(
    feed: str, other_user: pwd.struct_passwd, owner: Optional[str]
) -> None:
    """Our feed is removed and the other user creates one under its name: a subscriber stops
    with FeedNotTrusted instead of following the impostor, whether it pinned the owner or took
    the owner of the feed it first attached to."""
    with Publisher.create(feed, mode=0o644) as pub:
        pub.publish("A", 1.0)
        with Subscriber(feed, owner=owner) as sub:
            events = sub.updates(timeout=20)
            pub.publish("A", 2.0)
            assert next(events).price == 2.0
            pub.unlink()
            _made_by(other_user, feed, 0o644, price=666.0)
            with pytest.raises(FeedNotTrusted, match=f"belongs to {other_user.pw_name}"):
                for event in events:
                    assert getattr(event, "price", None) != 666.0, "followed another user's feed"


_OPEN_LOOP = """
import json, sys
from pricefeed import PricefeedError, Publisher, Subscriber, feed_names
feed, counts = sys.argv[1], {}
for i in range(1500):
    try:
        if i % 3 == 0:
            with Subscriber(feed) as sub:
                assert sub.get("A").price == 1.25
        elif i % 3 == 1:
            Publisher.open(feed).close()
        else:
            feed_names()
        key = "ok"
    except PricefeedError as exc:
        key = type(exc).__name__
    counts[key] = counts.get(key, 0) + 1
print(json.dumps(counts))
"""


def test_names_swapped_for_fifos_and_junk_never_hang_the_cli(feed: str) -> None:
    """While a FIFO, a junk file and the real segment take turns under the feed's name
    (renamed into place: atomic), every command finishes within seconds with a correct answer
    or a clear error. An open that follows the name into the FIFO would block forever."""
    with Publisher.create(feed, mode=0o600) as pub:
        pub.publish("A", 1.25)
    path = segment_path(feed)
    keep, fifo, junk, link = (f"{path}.{tag}" for tag in ("keep", "fifo", "junk", "link"))
    os.link(path, keep)
    stop = threading.Event()
    swaps = [0]

    def swap() -> None:
        deadline = time.monotonic() + 120  # bounded even if the test body dies
        while not stop.is_set() and time.monotonic() < deadline:
            os.mkfifo(fifo, 0o600)
            os.rename(fifo, path)
            time.sleep(0.002)
            with open(junk, "wb") as f:
                f.write(os.urandom(300))
            os.rename(junk, path)
            time.sleep(0.001)
            os.link(keep, link)
            os.rename(link, path)
            time.sleep(0.002)
            swaps[0] += 1

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    outcomes: Dict[str, List[int]] = {}
    idle: List[subprocess.Popen[str]] = []
    try:
        # Idle subscribers look at the name every wait slice (is it still their segment?).
        for _ in range(3):
            idle.append(
                subprocess.Popen(
                    cli("subscribe", feed, "--timeout", "3"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    stdin=subprocess.DEVNULL,
                )
            )
        # Thousands of opens through the library, in a child that must finish in time.
        loop = subprocess.run(
            [sys.executable, "-c", _OPEN_LOOP, feed], capture_output=True, text=True, timeout=RUN_TIMEOUT * 2
        )
        assert loop.returncode == 0, loop.stderr
        counts = json.loads(loop.stdout)
        assert set(counts) <= {"ok", "BadSegment"}, counts
        assert counts.get("ok", 0) > 0, counts
        commands = [
            ("ls",),
            ("status", feed),
            ("get", feed, "A"),
            ("snapshot", feed),
            ("subscribe", feed, "--snapshot", "--count", "1", "--timeout", "2"),
            ("publish", feed, "A=1.25"),
        ]
        for _ in range(6):
            for command in commands:
                got = _run(*command)  # raises TimeoutExpired on a hang
                assert "Traceback" not in got.stderr, (command, got.stderr)
                assert got.returncode in (0, 9, 12), (command, got.returncode, got.stderr)
                if got.returncode == 9:
                    assert "not a pricefeed segment" in got.stderr or "damaged" in got.stderr, got.stderr
                if got.returncode == 0 and command[0] == "get":
                    assert got.stdout.strip() == "1.25"
                outcomes.setdefault(command[0], []).append(got.returncode)
        for p in idle:
            _, err = p.communicate(timeout=RUN_TIMEOUT)  # raises TimeoutExpired on a hang
            assert p.returncode in (9, 12), (p.returncode, err)
            assert "Traceback" not in err, err
    finally:
        for p in idle:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=10)
        stop.set()
        swapper.join(timeout=10)
        assert not swapper.is_alive()
        os.rename(keep, path)  # does nothing when both already name the segment: see below
        for leftover in (keep, fifo, junk, link):
            if os.path.lexists(leftover):
                os.unlink(leftover)
    assert swaps[0] > 10, "the names were hardly swapped: the test proved little"
    with Subscriber(feed) as sub:
        assert sub["A"].price == 1.25, "the real segment came through unchanged"


def test_removing_another_users_feed_writes_nothing_into_it(feed: str, other_user: pwd.struct_passwd) -> None:
    """Root may unlink any name in /dev/shm, but ending the feed would write into a segment
    that is not ours: rm only unlinks it."""
    _made_by(other_user, feed, 0o644)
    path = segment_path(feed)
    kept = path + ".kept"
    os.link(path, kept)
    try:
        before = _bytes(feed)
        assert _run("rm", feed).returncode == 0
        assert not os.path.exists(path)
        with open(kept, "rb") as f:
            assert f.read() == before, "rm wrote into another user's segment"
    finally:
        os.unlink(kept)
