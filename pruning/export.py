"""Save and load pruned models as plain tensors + plan (loadable with weights_only=True).

A pruned model's shapes differ from its arch's defaults, so a state dict alone cannot be
loaded. The file holds the arch, the plan and the state dict; loading rebuilds the arch,
re-applies the plan through the dependency graph, then loads the weights.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .models import create_model
from .plan import Plan
from .surgery import GroupMap, apply_plan

__all__ = ["FORMAT", "load_pruned", "save_pruned"]

FORMAT = "blendprune.pruned/1"


def save_pruned(model: nn.Module, path: str | os.PathLike[str], *, arch: str, plan: Plan,
                num_classes: int, input_shape: tuple[int, ...], extra: dict[str, Any] | None = None
                ) -> None:
    """Write `model` (the result of `apply_plan` on `arch`) atomically to `path`."""
    payload = {"format": FORMAT, "arch": arch, "num_classes": num_classes,
               "input_shape": list(input_shape), "plan": plan.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "extra": extra or {}}
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_pruned(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, metadata) from a file written by `save_pruned`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{os.fspath(path)}: not a readable pruned model ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)}: not a {FORMAT} file")
    shape = payload["input_shape"]
    model = create_model(payload["arch"], payload["num_classes"], shape[1]).eval()
    group_map = GroupMap(model, torch.zeros(shape))
    apply_plan(model, group_map, Plan.from_dict(payload["plan"]), inplace=True)
    model.load_state_dict(payload["state_dict"])
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model.eval(), meta
