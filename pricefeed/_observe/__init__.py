"""Observing a feed from outside: the live terminal view and the metrics (docs/observability.md)."""
