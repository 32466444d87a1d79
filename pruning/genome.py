"""Genomes: where each gene sits, and what a genome decodes to without touching weights.

A genome is `[alpha_1..alpha_K, r_1..r_S]` (design §2.4): one calibration factor per
criterion, then one ratio (or threshold) per slot. `GenomeLayout` knows the bounds and
the slot of every group; `Decoder` blends the criteria with the alphas, decodes a plan,
predicts its cost, and proposes the search's seed genomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .blending import Blender
from .cost import CostModel
from .plan import ENCODINGS, Plan, decode_plan, ratio_slots
from .scores import ScoreTable
from .surgery import GroupMap

__all__ = ["Decoder", "GenomeLayout"]


@dataclass(frozen=True)
class GenomeLayout:
    """Where each gene sits: `[alpha_1..alpha_K, r_1..r_S]` (design §2.4)."""

    criteria: tuple[str, ...]
    slots: tuple[str, ...]
    slot_of: tuple[int, ...]
    encoding: str = "ratio"
    max_ratio: float = 0.8
    min_channels: int = 4
    round_to: int = 1

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"genome.encoding: must be one of {ENCODINGS}, "
                             f"got {self.encoding!r}")
        if not 0.0 <= self.max_ratio < 1.0:
            raise ValueError(f"genome.max_ratio: must be in [0, 1), got {self.max_ratio}")
        if self.min_channels < 1:
            raise ValueError(f"genome.min_channels: must be >= 1, got {self.min_channels}")
        if self.round_to < 1:
            raise ValueError(f"genome.round_to: must be >= 1, got {self.round_to}")

    @classmethod
    def build(cls, table: ScoreTable, group_map: GroupMap, *, granularity: str = "group",
              **options: Any) -> GenomeLayout:
        slots, slot_of = ratio_slots([group_map[g] for g in table.groups], granularity)
        return cls(tuple(table.criteria), tuple(slots), tuple(slot_of), **options)

    def __len__(self) -> int:
        return len(self.criteria) + len(self.slots)

    def bounds(self) -> tuple[list[float], list[float]]:
        """Lower and upper bound of every gene."""
        n_a, n_s = len(self.criteria), len(self.slots)
        return [0.0] * (n_a + n_s), [1.0] * n_a + [self.max_ratio] * n_s

    def split(self, genome: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        g = np.asarray(genome, dtype=np.float64)
        if g.shape != (len(self),):
            raise ValueError(f"genome: expected {len(self)} genes, got {g.shape}")
        if not np.all(np.isfinite(g)):
            raise ValueError("genome: genes must be finite")
        alpha = np.clip(g[: len(self.criteria)], 0.0, 1.0)
        values = np.clip(g[len(self.criteria):], 0.0, self.max_ratio)
        return alpha, values

    def make(self, alpha: Sequence[float], values: float | Sequence[float]) -> list[float]:
        """A genome from alphas and one value per slot (a scalar means uniform)."""
        if isinstance(values, (int, float, np.floating)):
            return [float(a) for a in alpha] + [float(values)] * len(self.slots)
        vals = [float(v) for v in values]
        return [float(a) for a in alpha] + vals


class Decoder:
    """Genome -> plan, and the plan's predicted cost, without touching any weights.

    Cheap enough for the search driver: seeding, constraint checks and reports use it.
    """

    def __init__(self, table: ScoreTable, layout: GenomeLayout, cost: CostModel,
                 cluster_threshold: float = 0.1) -> None:
        self.table, self.layout, self.cost = table, layout, cost
        self.blender = Blender(table, cluster_threshold)

    def decode(self, genome: Sequence[float]) -> Plan:
        alpha, values = self.layout.split(genome)
        blended = self.blender.blend(alpha)
        return decode_plan(blended, values, self.layout.slot_of,
                           encoding=self.layout.encoding, min_channels=self.layout.min_channels,
                           round_to=self.layout.round_to)

    def flops_ratio(self, genome: Sequence[float]) -> float:
        """Predicted FLOPs of the genome's plan over the base model's."""
        return self.cost.predict(self.decode(genome))[0] / self.cost.base_flops

    def min_flops_ratio(self) -> float:
        """The smallest FLOPs ratio any genome reaches (every slot at its upper bound)."""
        lo, hi = self.layout.bounds()
        n_a = len(self.layout.criteria)
        if self.layout.encoding == "threshold":
            hi = hi[:n_a] + [min(0.999, v) for v in hi[n_a:]]
        return self.flops_ratio([1.0] * n_a + hi[n_a:])

    def spread_seeds(self, budget: float, count: int, criteria: Sequence[int] | None = None
                     ) -> list[tuple[str, list[float]]]:
        """`count` single-criterion genomes at uniform ratios spread over the FLOPs range.

        Seed i uses criterion i (cycling) at a FLOPs target stepping down from `budget` to
        40% of it, so generation 0 already spans the front rather than one point of it.
        Names read `criterion@target`.
        """
        names = self.layout.criteria
        picks = list(range(len(names))) if criteria is None else list(criteria)
        floor = max(0.4 * budget, self.min_flops_ratio() + 0.02)
        targets = np.linspace(budget, min(floor, budget), count) if count > 1 else [budget]
        seeds = []
        for i, target in enumerate(targets):
            k = picks[i % len(picks)]
            alpha = np.eye(len(names))[k]
            genome = self.layout.make(alpha, self.uniform_value_for(alpha, float(target)))
            seeds.append((f"{names[k]}@{target:.2f}", genome))
        return seeds

    def uniform_value_for(self, alpha: Sequence[float], target: float, *, tol: float = 1e-3
                          ) -> float:
        """The smallest uniform ratio (or threshold) whose plan meets `target` FLOPs ratio.

        Bisection: the FLOPs of a uniform plan fall monotonically as the value grows.
        """
        upper = self.layout.max_ratio
        if self.flops_ratio(self.layout.make(alpha, 0.0)) <= target:
            return 0.0
        lo, hi = 0.0, upper
        while hi - lo > tol:
            mid = (lo + hi) / 2
            if self.flops_ratio(self.layout.make(alpha, mid)) <= target:
                hi = mid
            else:
                lo = mid
        return hi
