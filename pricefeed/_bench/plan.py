"""How much to measure: the full run (under 10 minutes on 2 cores) and --quick (about one).

Every count is per contender. The pacing keeps each receiver blocked when its change arrives:
200-400 µs apart for one receiver, and longer for many, since k woken Python processes need
about k x 30 µs of CPU to run on this machine's 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

__all__ = ["Plan", "FULL", "QUICK"]

US = 1000
MS = 1000 * US


@dataclass(frozen=True)
class Plan:
    name: str
    # wake latency: rounds x changes per round, paced gap_low..gap_high
    latency_rounds: int
    latency_per_round: int
    gap_low: int = 200 * US
    gap_high: int = 400 * US
    # bursts: rounds x bursts per round, each burst_size changes burst_gap apart
    burst_rounds: int = 3
    bursts_per_round: int = 60
    burst_size: int = 10
    burst_gap: Tuple[int, int] = (10 * US, 40 * US)
    burst_pause: Tuple[int, int] = (1 * MS, 2 * MS)
    # fan-out and subscriber scale: sizes, rounds x changes per round (fewer for large sizes)
    fan_sizes: Tuple[int, ...] = (1, 10, 100)
    fan_rounds: int = 3
    fan_changes: int = 300  # per size over all rounds, for 1 subscriber; scaled down for more
    # targeted wake-ups: receivers, each on its own symbol, and changes in all
    targeted_receivers: int = 100
    targeted_changes: int = 100
    # throughput: rounds, and how long one round of a rate test lasts
    throughput_rounds: int = 5
    publish_calls: int = 20_000
    batch: int = 1000
    delivery_rates: Tuple[int, ...] = (100_000, 250_000, 500_000, 750_000, 1_000_000)
    delivery_seconds: float = 0.2
    # reads
    read_rounds: int = 5
    read_calls: int = 20_000
    snapshot_calls: int = 30
    # scale: symbols and ring sizes; latency samples per point
    scale_symbols: Tuple[int, ...] = (10, 1000, 100_000)
    scale_rings: Tuple[int, ...] = (1024, 65536, 1 << 20)
    scale_rounds: int = 3
    scale_per_round: int = 150

    def fan_count(self, size: int) -> int:
        """Changes per round for ``size`` subscribers: fewer as each change costs more."""
        scaled = self.fan_changes * 10 // (10 + size)
        return max(10, scaled // self.fan_rounds)

    def fan_gap(self, size: int) -> Tuple[int, int]:
        """Pacing for ``size`` subscribers: the 200-400 µs of one, or 100 µs per subscriber."""
        low = max(self.gap_low, size * 100 * US)
        return low, max(self.gap_high, 2 * low)


QUICK = Plan(
    name="quick",
    latency_rounds=5,
    latency_per_round=1000,
    bursts_per_round=100,
    fan_changes=600,
    delivery_seconds=0.3,
    scale_per_round=300,
)

FULL = Plan(
    name="full",
    latency_rounds=10,
    latency_per_round=2000,
    burst_rounds=5,
    bursts_per_round=200,
    fan_sizes=(1, 10, 50, 100, 200),
    fan_rounds=5,
    fan_changes=3000,
    targeted_changes=400,
    throughput_rounds=10,
    delivery_rates=(100_000, 200_000, 300_000, 400_000, 500_000, 600_000, 800_000, 1_000_000, 1_500_000),
    delivery_seconds=0.5,
    read_rounds=10,
    snapshot_calls=100,
    scale_symbols=(10, 100, 1000, 10_000, 100_000),
    scale_rings=(1024, 16384, 65536, 1 << 20, 1 << 22),
    scale_rounds=5,
    scale_per_round=400,
)
