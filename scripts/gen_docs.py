#!/usr/bin/env python3
"""Regenerate the generated sections of docs/ from the code that owns them.

    python scripts/gen_docs.py          # rewrite the sections in place
    python scripts/gen_docs.py --check  # exit 1 if any section is out of date

docs/layout.md's field tables come from pricefeed._protocol.layout, docs/cli.md's exit-code table from
the error classes, docs/observability.md's registry tables from pricefeed._registry.layout.
tests/docs/test_docs.py runs the check, so the docs cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pricefeed._cli.main import exit_code_table  # noqa: E402
from pricefeed._protocol import layout as _layout  # noqa: E402
from pricefeed._registry import layout as _registry  # noqa: E402

BEGIN = "<!-- BEGIN GENERATED {} -->"
END = "<!-- END GENERATED {} -->"

SECTIONS: Dict[Tuple[str, str], Callable[[], str]] = {
    ("docs/layout.md", "TABLES"): _layout.markdown_tables,
    ("docs/cli.md", "EXIT CODES"): exit_code_table,
    ("docs/observability.md", "REGISTRY"): _registry.markdown_tables,
}


def render(text: str, tag: str, body: str) -> str:
    begin, end = BEGIN.format(tag), END.format(tag)
    if begin not in text or end not in text:
        raise SystemExit(f"missing markers {begin!r} / {end!r}")
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def main(argv: List[str]) -> int:
    check = "--check" in argv
    stale = []
    for (path, tag), make in SECTIONS.items():
        file = ROOT / path
        text = file.read_text(encoding="utf-8")
        new = render(text, tag, make())
        if new != text:
            stale.append(f"{path} ({tag})")
            if not check:
                file.write_text(new, encoding="utf-8")
    if check and stale:
        print("out of date: " + ", ".join(stale) + "; run: python scripts/gen_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
