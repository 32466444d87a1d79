"""Genomes: where each gene sits, and what a genome decodes to without touching weights.

A genome is `[alpha_1..alpha_K, r_1..r_S]` (design §2.4): one calibration factor per
criterion, then one ratio (or threshold) per slot; with FLOPs targets, one more gene picks
the target and the ratios become a profile repaired onto it (`targets`). `GenomeLayout`
knows the bounds and the slot of every group; `Decoder` blends the criteria with the
alphas, decodes a plan, predicts its cost, and proposes the search's seed genomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .blending import Blender
from .cost import CostModel
from .plan import ENCODINGS, Plan, decode_plan, ratio_slots
from .scores import ScoreTable
from .surgery import GroupMap
from .targets import Targets, global_profile, repair

__all__ = ["Decoder", "GenomeLayout"]


@dataclass(frozen=True)
class GenomeLayout:
    """Where each gene sits: `[alpha_1..alpha_K, r_1..r_S]` (design §2.4), then the
    target gene when `targets` is set."""

    criteria: tuple[str, ...]
    slots: tuple[str, ...]
    slot_of: tuple[int, ...]
    encoding: str = "ratio"
    max_ratio: float = 0.8
    min_channels: int = 4
    round_to: int = 1
    targets: Targets | None = None
    # One alpha gene per tuple of criterion indices (a cluster of criteria that agree);
    # None: one per criterion.
    alpha_genes: tuple[tuple[int, ...], ...] | None = None
    levels: int = 0  # > 0: ratio genes snap to `levels` steps of max_ratio / levels

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
        if self.levels < 0:
            raise ValueError(f"genome.levels: must be >= 0, got {self.levels}")

    @classmethod
    def build(cls, table: ScoreTable, group_map: GroupMap, *, granularity: str = "group",
              **options: Any) -> GenomeLayout:
        slots, slot_of = ratio_slots([group_map[g] for g in table.groups], granularity)
        return cls(tuple(table.criteria), tuple(slots), tuple(slot_of), **options)

    @property
    def n_alpha(self) -> int:
        """How many alpha genes lead the genome."""
        return len(self.criteria) if self.alpha_genes is None else len(self.alpha_genes)

    def __len__(self) -> int:
        return self.n_alpha + len(self.slots) + (self.targets is not None)

    def bounds(self) -> tuple[list[float], list[float]]:
        """Lower and upper bound of every gene."""
        n_a, n_s, n_t = self.n_alpha, len(self.slots), int(self.targets is not None)
        return [0.0] * (n_a + n_s + n_t), [1.0] * n_a + [self.max_ratio] * n_s + [1.0] * n_t

    def split(self, genome: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        g = np.asarray(genome, dtype=np.float64)
        if g.shape != (len(self),):
            raise ValueError(f"genome: expected {len(self)} genes, got {g.shape}")
        if not np.all(np.isfinite(g)):
            raise ValueError("genome: genes must be finite")
        n_a, n_s = self.n_alpha, len(self.slots)
        genes = np.clip(g[:n_a], 0.0, 1.0)
        values = np.clip(g[n_a:n_a + n_s], 0.0, self.max_ratio)
        if self.levels:  # discrete keep levels: nearby genomes share a plan, dedupe bites
            step = self.max_ratio / self.levels
            values = np.round(values / step) * step
        if self.alpha_genes is None:
            return genes, values
        alpha = np.zeros(len(self.criteria))
        for gene, members in zip(genes, self.alpha_genes):
            alpha[list(members)] = gene
        return alpha, values

    def target(self, genome: Sequence[float]) -> float | None:
        """The FLOPs target the genome is pruned onto (None: its ratios are used as they are)."""
        return None if self.targets is None else self.targets.at(genome[-1])

    def make(self, alpha: Sequence[float], values: float | Sequence[float],
             target: float | None = None) -> list[float]:
        """A genome from one alpha per criterion (a cluster gene takes its members'
        largest), one value per slot (a scalar means uniform) and, with targets, the FLOPs
        target."""
        if (target is None) != (self.targets is None):
            raise ValueError("genome: a FLOPs target is needed exactly when the layout has "
                             "targets")
        if isinstance(values, (int, float, np.floating)):
            vals = [float(values)] * len(self.slots)
        else:
            vals = [float(v) for v in values]
        tail = [] if self.targets is None or target is None else [self.targets.gene(target)]
        genes = [float(a) for a in alpha] if self.alpha_genes is None else \
            [max(float(alpha[i]) for i in members) for members in self.alpha_genes]
        return genes + vals + tail


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
        target = self.layout.target(genome)
        if target is None:
            return self._plan(blended, values)
        return repair(values, self.layout.max_ratio, lambda v: self._plan(blended, v),
                      self.plan_flops_ratio, target)

    def _plan(self, blended: dict[str, np.ndarray], values: Sequence[float] | np.ndarray
              ) -> Plan:
        plan = decode_plan(blended, values, self.layout.slot_of,
                           encoding=self.layout.encoding, min_channels=self.layout.min_channels,
                           round_to=self.layout.round_to)
        return self.cost.group_map.conform(plan, blended)

    def plan_flops_ratio(self, plan: Plan) -> float:
        return self.cost.predict(plan)[0] / self.cost.base_flops

    def flops_ratio(self, genome: Sequence[float]) -> float:
        """Predicted FLOPs of the genome's plan over the base model's."""
        return self.plan_flops_ratio(self.decode(genome))

    def _uniform_ratio(self, alpha: Sequence[float] | np.ndarray, value: float) -> float:
        """FLOPs ratio of `alpha`'s plan at one value in every slot (never repaired)."""
        values = np.full(len(self.layout.slots), value)
        return self.plan_flops_ratio(self._plan(self.blender.blend(alpha), values))

    def min_flops_ratio(self) -> float:
        """The smallest FLOPs ratio any genome reaches (every slot at its upper bound)."""
        top = self.layout.max_ratio
        if self.layout.encoding == "threshold":
            top = min(0.999, top)
        return self._uniform_ratio(np.ones(len(self.layout.criteria)), top)

    def spread_seeds(self, budget: float, count: int, criteria: Sequence[int] | None = None
                     ) -> list[tuple[str, list[float]]]:
        """`count` single-criterion genomes at uniform ratios spread over the FLOPs range.

        Seed i uses criterion i (cycling) at a FLOPs target stepping down from `budget` to
        40% of it, so generation 0 already spans the front rather than one point of it.
        Names read `criterion@target`.
        """
        names = self.layout.criteria
        genes = self.layout.alpha_genes  # one seed per cluster gene, named by its first member
        picks = list(criteria) if criteria is not None else \
            [m[0] for m in genes] if genes else list(range(len(names)))
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
        if self._uniform_ratio(alpha, 0.0) <= target:
            return 0.0
        lo, hi = 0.0, upper
        while hi - lo > tol:
            mid = (lo + hi) / 2
            if self._uniform_ratio(alpha, mid) <= target:
                hi = mid
            else:
                lo = mid
        return hi

    def plan_genome(self, plan: Plan, alpha: Sequence[float]) -> list[float]:
        """A genome with `plan`'s per-slot pruning ratios (its widths; which channels is
        the blend's choice) and, with targets, the target nearest its FLOPs ratio."""
        if self.layout.encoding != "ratio":
            raise ValueError("genome: a plan seeds only the ratio encoding")
        counts = plan.counts()
        cut: list[list[float]] = [[] for _ in self.layout.slots]
        for name, slot in zip(self.table.groups, self.layout.slot_of):
            size = len(self.table.scores[name][self.table.criteria[0]])
            cut[slot].append(1 - counts.get(name, size) / size)
        values = [min(float(np.mean(c)) if c else 0.0, self.layout.max_ratio) for c in cut]
        targets = self.layout.targets
        target = None
        if targets is not None:
            ratio = self.plan_flops_ratio(plan)
            levels = targets.values or targets.seeding
            target = min(levels, key=lambda t: abs(t - ratio))
        return self.layout.make(alpha, values, target)

    def target_seeds(self, fill: int, criteria: Sequence[int] | None = None
                     ) -> list[tuple[str, list[float]]]:
        """Seeds at FLOPs targets: every criterion cluster (or each of `criteria`) at every
        target at uniform ratios, all of them, so no criterion is judged at one FLOPs level
        only; then the same criteria's LAMP-style global profiles while there are fewer
        than `fill` seeds. Each plan once. Criteria and targets are interleaved so a list
        cut short (at a small budget) still covers both. Names read `criterion@target` and
        `criterion-global@target`.
        """
        targets = self.layout.targets
        if targets is None:
            raise ValueError("genome: target seeds need a layout with targets")
        names, top = self.layout.criteria, self.layout.max_ratio
        reps = list(criteria) if criteria is not None else \
            [members[0] for members in self.blender.model_clusters()]
        levels = targets.seeding
        n_c, n_t = len(reps), len(levels)
        cycle = math.lcm(n_c, n_t)  # the first max(n_c, n_t) pairs already cover both
        order = [(reps[i % n_c], levels[(i + i // cycle) % n_t]) for i in range(n_c * n_t)]
        candidates = []
        for k, t in order:
            candidates.append((f"{names[k]}@{t:g}",
                               self.layout.make(np.eye(len(names))[k], min(0.5, top), t)))
        for k, t in order:
            scores = [self.table.matrix(g)[k] for g in self.table.groups]
            profile = global_profile(scores, self.layout.slot_of, len(self.layout.slots),
                                     1.0 - float(np.sqrt(t)), top)
            candidates.append((f"{names[k]}-global@{t:g}",
                               self.layout.make(np.eye(len(names))[k], profile, t)))
        seeds: list[tuple[str, list[float]]] = []
        seen = set()
        for i, (name, genome) in enumerate(candidates):
            if i >= len(order) and len(seeds) >= fill:
                break
            key = tuple(tuple(v) for v in self.decode(genome).to_dict().values())
            if key not in seen:
                seen.add(key)
                seeds.append((name, genome))
        return seeds
