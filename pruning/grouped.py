"""Grouped convolutions: a plan must keep as many channels in every conv group.

A convolution with `groups=G` (not depthwise) splits its input and its output channels
into G conv groups; after pruning each must still hold the same number. `ConvBlocks`
records, for one side of one grouped conv, which (channel group, channel) each conv group
holds, whatever channel groups feed it (a concatenation may span several); `conform`
turns any plan into one that satisfies every grouped conv, and `prune_grouped_in` cuts a
grouped conv's inputs conv group by conv group (Torch-Pruning's handler assumes the same
positions are cut in every conv group, which a plan need not do).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .plan import Plan

__all__ = ["ConvBlocks", "conform", "is_grouped", "prune_grouped_in", "unequal"]


def is_grouped(module: nn.Module) -> bool:
    """A conv with several conv groups that is not depthwise (depthwise convs couple each
    input channel to its own output channel: Torch-Pruning prunes both as one)."""
    if not isinstance(module, nn.Conv2d) or module.groups == 1:
        return False
    return not module.groups == module.in_channels == module.out_channels


@dataclass(frozen=True)
class ConvBlocks:
    """One side of one grouped conv: the prunable (group, channel) pairs in each conv
    group, and how many channels of each conv group no plan can remove."""

    module: str
    out_channels: bool
    blocks: tuple[tuple[tuple[str, int], ...], ...]
    fixed: tuple[int, ...]

    def counts(self, kept: Mapping[str, set[int]]) -> list[int]:
        return [f + sum(c in kept[g] for g, c in members)
                for f, members in zip(self.fixed, self.blocks)]


def conv_blocks(module: str, conv: nn.Conv2d, out_channels: bool,
                members: Iterable[tuple[int, str, int]]) -> ConvBlocks:
    """`members`: (conv channel, group, group channel) of every prunable channel there."""
    dim = conv.out_channels if out_channels else conv.in_channels
    per = dim // conv.groups
    blocks: list[list[tuple[str, int]]] = [[] for _ in range(conv.groups)]
    for i, group, c in members:
        blocks[i // per].append((group, c))
    return ConvBlocks(module, out_channels, tuple(tuple(b) for b in blocks),
                      tuple(per - len(b) for b in blocks))


def unequal(plan: Plan, sizes: Mapping[str, int], blocks: Sequence[ConvBlocks]
            ) -> ConvBlocks | None:
    """The first grouped conv side whose conv groups would keep unequal channel counts."""
    kept = _kept(plan, sizes)
    return next((b for b in blocks if len(set(b.counts(kept))) > 1), None)


def _kept(plan: Plan, sizes: Mapping[str, int]) -> dict[str, set[int]]:
    return {g: set(plan.kept[g].tolist()) if g in plan.kept else set(range(n))
            for g, n in sizes.items()}


def conform(plan: Plan, scores: Mapping[str, np.ndarray], sizes: Mapping[str, int],
            blocks: Sequence[ConvBlocks]) -> Plan:
    """`plan` with every grouped conv keeping as many channels in each conv group: the
    mean count (so the plan keeps about the channels it asked for), conv groups above it
    dropping their lowest-`scores` channels and those below taking back their best ones,
    repeated until every grouped conv agrees. A channel group never loses its last
    channel."""
    if not blocks or unequal(plan, sizes, blocks) is None:
        return plan
    kept = _kept(plan, sizes)
    for _ in range(100):
        changed = False
        for side in blocks:
            counts = side.counts(kept)
            k = max(1, math.floor(sum(counts) / len(counts) + 0.5))
            for count, members in zip(counts, side.blocks):
                if count > k:
                    order = sorted((c for c in members if c[1] in kept[c[0]]),
                                   key=lambda gc: scores[gc[0]][gc[1]])
                    for g, c in order:
                        if count == k:
                            break
                        if len(kept[g]) > 1:
                            kept[g].discard(c)
                            count, changed = count - 1, True
                elif count < k:
                    order = sorted((c for c in members if c[1] not in kept[c[0]]),
                                   key=lambda gc: -scores[gc[0]][gc[1]])
                    for g, c in order[:k - count]:
                        kept[g].add(c)
                        changed = True
        if not changed:
            break
    return Plan({g: np.array(sorted(kept[g]), dtype=np.int64) for g in plan.kept})


def prune_grouped_in(layer: nn.Conv2d, idxs: Sequence[int]) -> nn.Conv2d:
    """Remove input channels `idxs` of a grouped conv, each conv group keeping its own
    channels (equal numbers of them): the weight rows of conv group b keep the columns
    of the inputs conv group b keeps."""
    groups, per_in = layer.groups, layer.in_channels // layer.groups
    drop = set(idxs)
    kept = [[p for p in range(per_in) if b * per_in + p not in drop] for b in range(groups)]
    if len({len(k) for k in kept}) != 1:
        raise ValueError(f"grouped conv: unequal input channels kept per conv group "
                         f"({[len(k) for k in kept]})")
    per_out = layer.out_channels // groups
    w = layer.weight.detach()
    rows = [w[b * per_out:(b + 1) * per_out][:, kept[b]] for b in range(groups)]
    layer.weight = nn.Parameter(torch.cat(rows, 0).contiguous())
    layer.in_channels = groups * len(kept[0])
    return layer
