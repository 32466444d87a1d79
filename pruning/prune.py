"""Prune any CNN in one call: what a search does underneath, for one plan.

`prune(model, example_inputs, ratio=0.5)` traces the channel groups, scores every group
with one criterion, keeps the top (1 - ratio) of each, cuts the model and reports what it
did; `plan=` cuts an explicit plan instead (a search's front member, say).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .cost import count_cost
from .plan import Plan, decode_plan
from .scores import compute_scores
from .surgery import GroupMap, apply_plan

__all__ = ["PruneReport", "prune"]


@dataclass
class PruneReport:
    """What `prune` did: groups cut (name -> channels before, after), modules left alone
    and why, and the cost before and after (FLOPs as multiply-accumulates)."""

    pruned: dict[str, tuple[int, int]]
    left_alone: dict[str, str]
    flops: tuple[int, int]
    params: tuple[int, int]
    plan: Plan = field(repr=False)
    group_map: GroupMap = field(repr=False)

    def __str__(self) -> str:
        (f0, f1), (p0, p1) = self.flops, self.params
        lines = [f"pruned {len(self.pruned)} channel groups: FLOPs {f0:,} -> {f1:,} "
                 f"({f1 / max(f0, 1):.3f}), params {p0:,} -> {p1:,} ({p1 / max(p0, 1):.3f})"]
        lines += [f"  left alone: {name} ({why})" for name, why in self.left_alone.items()]
        return "\n".join(lines)


def prune(model: nn.Module, example_inputs: torch.Tensor, *, ratio: float | None = None,
          plan: Plan | None = None, criterion: str = "l1",
          ignored: Sequence[nn.Module] | None = None,
          batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None
          ) -> tuple[nn.Module, PruneReport]:
    """A pruned copy of `model` and its report.

    Args:
        model: any CNN (left unchanged).
        example_inputs: one batch of the input shape, to trace the graph.
        ratio: the share of every group's channels to remove, by `criterion`; or
        plan: exactly which channels each group keeps.
        ignored: modules whose output channels stay (default: the classifier, found as
            the layers that produce the output's class dimension).
        batches: a few (x, y) training batches, for data-driven criteria.
    """
    if (ratio is None) == (plan is None):
        raise ValueError("prune: give exactly one of ratio and plan")
    group_map = GroupMap(model, example_inputs, ignored)
    if plan is None:
        assert ratio is not None
        table = compute_scores(model, group_map, [criterion], batches)
        scores = {g: table.scores[g][criterion] for g in group_map.names}
        plan = group_map.conform(decode_plan(scores, [ratio], [0] * len(group_map)), scores)
    pruned_model = apply_plan(model, group_map, plan)
    before = count_cost(model, example_inputs)
    after = count_cost(pruned_model, example_inputs)
    pruned = {g.name: (g.size, len(plan.kept[g.name])) for g in group_map
              if g.name in plan.kept and len(plan.kept[g.name]) < g.size}
    left_alone = dict(group_map.left_alone)
    left_alone.update({g.name: "keeps every channel" for g in group_map
                       if len(plan.kept.get(g.name, range(g.size))) == g.size})
    return pruned_model, PruneReport(pruned, left_alone, (before[0], after[0]),
                                     (before[1], after[1]), plan, group_map)
