"""A real second user for the tests that need one: made with useradd when running as root,
skipped (saying why) otherwise; and a way to run a function as that user in a forked child."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from typing import Any, Callable, Dict, Iterator

import pytest

if sys.platform.startswith("linux"):
    import pwd

USER = "pricefeed-test"


def make_other_user() -> Iterator[pwd.struct_passwd]:
    """An unprivileged user, made for the test when running as root (a module's fixture
    ``other_user`` yields from this)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("a second user is made with useradd, on Linux only")
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second, unprivileged user")
    if not shutil.which("useradd"):
        pytest.skip("useradd is not installed")
    made = False
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True, timeout=60
        )
        entry = pwd.getpwnam(USER)
        made = True
    try:
        yield entry
    finally:
        if made:
            subprocess.run(["userdel", USER], check=False, timeout=60)


def as_user(user: pwd.struct_passwd, fn: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Run fn in a forked child that has dropped to ``user`` (real uid and gid, no groups)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            out = fn()
        except BaseException as exc:
            out = {"crashed": repr(exc)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 60)
        if not ready:
            raise TimeoutError("the child running as the other user did not answer within 60 s")
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    result: Dict[str, Any] = json.loads(data)
    if "crashed" in result:
        raise AssertionError(f"the function run as the other user raised {result['crashed']}")
    return result
