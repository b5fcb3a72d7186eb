"""`pricefeed metrics`: placeholder, being written."""

from __future__ import annotations

import click


@click.command(name="metrics")
def metrics() -> None:
    """Being written."""
    raise click.UsageError("not built yet")
