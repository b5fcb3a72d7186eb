"""The docs that are generated from code must match the code; the README's promises must
point at tests that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_sections_are_current() -> None:
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr


def test_generated_section_check_can_fail(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_docs
    finally:
        sys.path.pop(0)
    text = (
        (ROOT / "docs" / "layout.md")
        .read_text(encoding="utf-8")
        .replace("| 64 | 8 | u64 | `head_seq`", "| 72 | 8 | u64 | `head_seq`")
    )
    assert gen_docs.render(text, "TABLES", gen_docs.SECTIONS[("docs/layout.md", "TABLES")]()) != text


def test_readme_points_at_tests_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?", readme)
    assert cited
    for path, name in cited:
        source = (ROOT / path).read_text(encoding="utf-8")
        if name:
            assert f"def {name}(" in source, f"README cites {path}::{name}, which does not exist"


def test_readme_opens_with_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    demo, tests = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert demo.endswith("pricefeed demo")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci, "CI must run the README's test command word for word"


def test_architecture_map_names_files_that_exist() -> None:
    """Every file and folder the map in docs/architecture.md names is in the repository."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## The map", 1)[1].split("```", 2)[1]
    names = set(re.findall(r"(?<![\w.])([\w-]+(?:/[\w.*-]+)*\.(?:py|h|c|sh)|[\w-]+/)(?=\s|$)", block))
    assert len(names) > 40, names
    files = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if ".git" not in p.parts]
    for name in sorted(names):
        pattern = re.escape(name).replace(r"\*", "[^/]*")
        found = any(re.search(rf"(^|/){pattern}", f) for f in files)
        assert found, f"docs/architecture.md names {name}, which is not in the repository"
