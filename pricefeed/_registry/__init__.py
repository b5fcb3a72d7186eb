"""THE SUBSCRIBER REGISTRY: who reads a feed, and how far behind (docs/observability.md).

``layout`` is the spec's one table; ``registry`` creates, claims and reads it; ``procs`` tells
a live process from a reused pid; ``types`` is what a tool gets.
"""
