"""The package list in pyproject.toml names every package of the source tree: a folder left
out installs fine with ``pip install -e .`` (which CI uses) and is missing from a wheel."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_every_package_is_in_the_wheel() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listed = set(re.findall(r'"(pricefeed[\w.]*)"', re.search(r"^packages = \[(.*)\]$", text, re.M).group(1)))  # type: ignore[union-attr]
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "pricefeed").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == set(), "these are listed but are not packages"
