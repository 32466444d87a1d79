"""FLOPs targets: every candidate pruned onto one target, whatever its ratio profile.

With targets, a genome's ratio genes are a *profile* (which layers to prune more, which
less) and one more gene picks the FLOPs target. `repair` shifts the whole profile by one
amount, found by bisection, to the largest plan whose predicted FLOPs ratio is at or
below the target, so candidates meet at the FLOPs the user asked for and no criterion or
profile is tied to one FLOPs level by its seed.

`global_profile` is the LAMP-style alternative to uniform ratios (Lee et al., "Layer-
adaptive sparsity for the magnitude-based pruning", ICLR 2021): scores normalised within
each layer, then one global threshold decides every layer's ratio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .plan import Plan, keep_count, top_channels

__all__ = ["Targets", "fewest_to_meet", "global_profile", "lamp_scores", "repair", "top_plan",
           "uniform_plan"]


@dataclass(frozen=True)
class Targets:
    """The FLOPs ratios a search prunes to: a list (the gene picks one) or a range [lo, hi]."""

    values: tuple[float, ...] = ()
    span: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if bool(self.values) == (self.span is not None):
            raise ValueError("targets: give either a list of FLOPs targets or a range")
        for t in (*self.values, *(self.span or ())):
            if not 0.0 < t <= 1.0:
                raise ValueError(f"targets: a FLOPs target must be in (0, 1], got {t}")
        if self.values and list(self.values) != sorted(set(self.values)):
            raise ValueError(f"targets: must be ascending and distinct, got {list(self.values)}")
        if self.span is not None and not self.span[0] < self.span[1]:
            raise ValueError(f"targets: range needs lo < hi, got {self.span}")

    def at(self, gene: float) -> float:
        """The target a gene in [0, 1] picks."""
        u = min(max(float(gene), 0.0), 1.0)
        if self.span is not None:
            return self.span[0] + u * (self.span[1] - self.span[0])
        return self.values[min(len(self.values) - 1, int(u * len(self.values)))]

    def gene(self, target: float) -> float:
        """A gene that picks `target` (the middle of its bin for a list)."""
        if self.span is not None:
            return (target - self.span[0]) / (self.span[1] - self.span[0])
        return (self.values.index(target) + 0.5) / len(self.values)

    @property
    def seeding(self) -> tuple[float, ...]:
        """The targets seeds are placed at: the list, or four points across the range."""
        if self.span is not None:
            return tuple(float(t) for t in np.linspace(*self.span, 4))
        return self.values


def repair(values: np.ndarray, top: float, plan_of: Callable[[np.ndarray], Plan],
           flops_ratio: Callable[[Plan], float], target: float, tol: float = 1e-3) -> Plan:
    """The largest plan at or below `target` FLOPs that one shift of the profile reaches.

    `values` (one ratio per slot, in [0, top]) are all moved by one shift, clipped to their
    bounds; FLOPs fall as the shift grows, so bisection finds the smallest shift that fits.
    Plans move in steps (same-width layers drop a channel at the same shift), so the slots
    then take the next smaller shift one by one, in order, while the plan still fits: the
    result sits within about one channel of the target. An unreachable target gives the
    smallest plan (recorded over budget, not silently moved).
    """
    def shifted(s: float) -> np.ndarray:
        return np.clip(values + s, 0.0, top)

    lo, hi = -top, top
    best = plan_of(shifted(hi))
    if flops_ratio(best) > target:
        return best
    plan = plan_of(shifted(lo))
    if flops_ratio(plan) <= target:
        return plan
    while hi - lo > tol:
        mid = (lo + hi) / 2
        plan = plan_of(shifted(mid))
        if flops_ratio(plan) <= target:
            hi, best = mid, plan
        else:
            lo = mid
    fits, too_big = shifted(hi), shifted(lo)
    a, b = 0, len(values)  # the first a slots at the smaller shift fit; all b do not
    while b - a > 1:
        k = (a + b) // 2
        plan = plan_of(np.concatenate([too_big[:k], fits[k:]]))
        if flops_ratio(plan) <= target:
            a, best = k, plan
        else:
            b = k
    return best


def fewest_to_meet(candidates: Sequence[tuple[float, str, int]],
                   ratio_without: Callable[[Sequence[tuple[str, int]]], float], goal: float
                   ) -> list[tuple[str, int]]:
    """The fewest of `candidates` ((score, group, channel), lowest score first) whose
    removal brings `ratio_without(removed)` to `goal` or below; all of them if even that
    does not. The ratio falls as more are removed, so bisection finds the count."""
    order = [(g, c) for _, g, c in sorted(candidates)]
    lo, hi = 0, len(order)
    if ratio_without(order) > goal:
        return order
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if ratio_without(order[:mid]) > goal else (lo, mid)
    return order[:hi]


def top_plan(scores: Mapping[str, np.ndarray], rates: Mapping[str, float]) -> Plan:
    """Each group's highest-scoring channels, pruned at its rate."""
    return Plan({g: top_channels(s, keep_count(len(s), rates[g])) for g, s in scores.items()})


def uniform_plan(scores: Mapping[str, np.ndarray], flops_ratio: Callable[[Plan], float],
                 target: float, top: float = 0.95) -> Plan:
    """One pruning rate for every group, the smallest that meets `target` (then, as
    `repair` does, a channel more in some groups while it still fits); the highest-scoring
    channels kept. Above `target` when even rate `top` is."""
    names = list(scores)
    return repair(np.zeros(len(names)), top,
                  lambda v: top_plan(scores, dict(zip(names, v.tolist()))), flops_ratio, target)


def lamp_scores(scores: np.ndarray) -> np.ndarray:
    """LAMP score of each channel: s_u^2 / sum of s_v^2 over channels v at least as large.

    Comparable across layers: a layer's largest channel always scores 1.
    """
    s2 = np.asarray(scores, dtype=np.float64) ** 2
    order = np.argsort(s2, kind="stable")
    tail = np.cumsum(s2[order][::-1])[::-1]  # sum over this and every larger channel
    out = np.empty_like(s2)
    out[order] = np.divide(s2[order], tail, out=np.ones_like(tail), where=tail > 0)
    return out


def global_profile(scores: Sequence[np.ndarray], slot_of: Sequence[int], slots: int,
                   fraction: float, max_ratio: float) -> list[float]:
    """Per-slot pruning ratios from one global threshold on LAMP-normalised `scores` (one
    array per group) that prunes `fraction` of all channels; a slot shared by groups
    takes their mean, and no ratio exceeds `max_ratio`."""
    lamp = [lamp_scores(np.abs(s)) for s in scores]
    every = np.concatenate(lamp)
    threshold = np.quantile(every, fraction) if fraction > 0 else -np.inf
    ratios: list[list[float]] = [[] for _ in range(slots)]
    for values, slot in zip(lamp, slot_of):
        ratios[slot].append(min(max_ratio, float((values < threshold).mean())))
    return [float(np.mean(r)) if r else 0.0 for r in ratios]
