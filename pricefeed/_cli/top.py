"""`pricefeed top`: placeholder, being written."""

from __future__ import annotations

import click


@click.command(name="top")
def top() -> None:
    """Being written."""
    raise click.UsageError("not built yet")
