"""The criterion interface and its registry.

A criterion is a callable `criterion(group) -> Tensor` over a torch-pruning group: one
score per channel of the group, in root-channel order, higher meaning keep. It is a
`torch_pruning.importance.Importance`, so `tp.pruner.BasePruner(importance=...)` takes it
as is. Scores of the several layers a group couples (a residual stream feeds many convs)
are reduced to one vector by their mean.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterator

import torch
import torch_pruning as tp
from torch import nn

from ..registry import Registry

__all__ = ["Criterion", "get_criterion", "list_criteria", "register_criterion"]

CRITERIA: Registry[type[Criterion]] = Registry("criterion", "criteria.pool")

_OUT_FNS = (tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels,
            tp.prune_linear_out_channels)
_NORM_FNS = (tp.prune_batchnorm_out_channels,)


class Criterion(tp.importance.Importance):  # type: ignore[misc]  # untyped base
    """Base class. Subclasses implement `__call__(group)`.

    `requires_data` criteria are fed through the context manager `recording(model)`:
    the caller runs a few batches inside it (with a backward pass when `requires_grad`)
    and then calls the criterion on each group.
    """

    name: ClassVar[str] = ""
    requires_data: ClassVar[bool] = False
    requires_grad: ClassVar[bool] = False

    def __call__(self, group: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def register_criterion(name: str) -> Callable[[type[Criterion]], type[Criterion]]:
    """Class decorator: make `get_criterion(name, **options)` build this class."""

    def wrap(cls: type[Criterion]) -> type[Criterion]:
        CRITERIA.add(name, cls)
        cls.name = name
        return cls

    return wrap


def list_criteria(pattern: str = "*") -> list[str]:
    return CRITERIA.names(pattern)


def get_criterion(name: str, **options: Any) -> Criterion:
    """A registered criterion, or a `module:Class` Criterion subclass, built with options."""
    cls = CRITERIA.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Criterion)):
        raise ValueError(f"criteria.pool: {name!r} is not a Criterion subclass")
    return cls(**options)


def group_size(group: Any) -> int:
    return len(group[0].idxs)


Producer = nn.Conv2d | nn.Linear
Norm = nn.modules.batchnorm._BatchNorm


def producer_layers(group: Any) -> Iterator[tuple[Producer, list[int], list[int]]]:
    """(layer, its channel indices, their root indices) for every conv/linear whose
    output channels are in the group."""
    for item in group:
        if item.dep.handler in _OUT_FNS:
            yield item.dep.target.module, list(item.idxs), list(item.root_idxs)


def norm_layers(group: Any) -> Iterator[tuple[Norm, list[int], list[int]]]:
    for item in group:
        if item.dep.handler in _NORM_FNS:
            yield item.dep.target.module, list(item.idxs), list(item.root_idxs)


def reduce_mean(group: Any, parts: list[tuple[torch.Tensor, list[int]]]) -> torch.Tensor:
    """Average per-layer score vectors into one vector in root-channel order."""
    n = group_size(group)
    # Root indices may be any subset (tp groups built for idxs=[2, 6, 9]): map to positions.
    position = {int(r): i for i, r in enumerate(group[0].root_idxs)}
    total = torch.zeros(n, dtype=torch.float64)
    count = torch.zeros(n, dtype=torch.float64)
    for scores, root_idxs in parts:
        idx = torch.as_tensor([position[int(r)] for r in root_idxs], dtype=torch.long)
        total.index_add_(0, idx, scores.detach().double().cpu())
        count.index_add_(0, idx, torch.ones(len(root_idxs), dtype=torch.float64))
    return total / count.clamp_min(1)
