"""Which channel groups can really be pruned: each is cut by one channel, alone, and the
result must run, keep its output shape and cost what `CostModel` predicts. A group that
fails (a custom module with a fixed channel count, a reshape the graph missed) is left
whole with its reason, before a search spends candidates on it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .cost import CostModel, count_cost
from .plan import Plan
from .surgery import GroupMap, apply_plan

__all__ = ["prunability"]


def prunability(model: nn.Module, group_map: GroupMap, example_input: torch.Tensor
                ) -> dict[str, str | None]:
    """Group -> None if cutting one of its channels works, else why not."""
    cost = CostModel(model, group_map, example_input)
    with torch.no_grad():
        expected = tuple(model.eval()(example_input).shape)
    out: dict[str, str | None] = {}
    for g in group_map:
        if g.size < 2:
            out[g.name] = "a single channel"
            continue
        plan = group_map.conform(Plan({g.name: np.arange(g.size - 1)}),
                                 {g.name: np.arange(g.size, 0, -1, dtype=np.float64)})
        try:
            pruned = apply_plan(model, group_map, plan).eval()
            with torch.no_grad():
                shape = tuple(pruned(example_input).shape)
            if shape != expected:
                raise ValueError(f"output shape {shape}, not {expected}")
            counted, predicted = count_cost(pruned, example_input)[0], cost.predict(plan)[0]
            if counted != predicted:
                raise ValueError(f"{counted} FLOPs counted, {predicted} predicted")
            out[g.name] = None
        except Exception as exc:  # any failure is the group's reason to stay whole
            out[g.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return out
