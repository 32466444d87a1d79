"""DCFF: dynamic-coded filter fusion (Lin et al., arXiv 2107.06916) as a training mode.

A pruned conv keeps its full bank of n filters and outputs m of them, each *fused* from
the whole bank: W_hat = P W, P the kept rows of softmax(-T D) over filter distances D.
The temperature T rises over training (1 -> 10^4: fusion turns into selection), and at
the start of every epoch the kept set is re-chosen by the KL importance
s_j = sum_k KL(p_j || p_k). One P per channel group, shared by all its producers, keeps
residual channels aligned. `to_compact` bakes W_hat into a plain model of the same
architecture `apply_plan` builds.

The official code computes the KL naively, which is NaN from epoch 1 (P is one-hot in
float32), and keeps the previous scores then: its kept set freezes at the epoch-0 scores
of the initial weights. `score_update="freeze_nonfinite"` reproduces that; the default
re-chooses every epoch with an exact log-softmax KL, finite at any temperature.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fusion import distances, fusion_matrix, kl_importance
from .plan import Plan
from .surgery import GroupMap, apply_plan
from .train import TrainHooks

__all__ = ["DCFF", "FusedConv2d", "conv_args", "plain_conv", "set_weights", "start_temperature",
           "temperature"]

SCORE_UPDATES = ("every_epoch", "freeze_nonfinite")
START_SHARE = 0.5  # t_start=None: each filter keeps half its own weight at epoch 0


def temperature(epoch: float, epochs: int, t_start: float = 1.0, t_end: float = 1e4,
                k: float = 1.0) -> float:
    """DCFF's schedule: T(0) = t_start, T(epochs) = t_end, a logistic rise between."""
    if epochs < 1:
        raise ValueError(f"dcff: epochs must be >= 1, got {epochs}")
    decay = math.exp(-k * epochs)
    a = 2 * (t_end - t_start) * (1 + decay) / (1 - decay)
    return a / (1 + math.exp(-k * epoch)) + t_start - a / 2


def conv_args(conv: nn.Conv2d) -> dict[str, Any]:
    """A conv's constructor arguments, for a new conv of the same kind."""
    return {"in_channels": conv.in_channels, "out_channels": conv.out_channels,
            "kernel_size": conv.kernel_size, "stride": conv.stride, "padding": conv.padding,
            "dilation": conv.dilation, "groups": conv.groups, "padding_mode": conv.padding_mode}


@torch.no_grad()
def set_weights(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    conv.weight.copy_(weight)
    if bias is not None and conv.bias is not None:
        conv.bias.copy_(bias)


def plain_conv(like: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None
               ) -> nn.Conv2d:
    """An `nn.Conv2d` of `like`'s kind holding `weight` and `bias` (a wrapped conv baked)."""
    conv = nn.Conv2d(**conv_args(like), bias=bias is not None, device=weight.device,
                     dtype=weight.dtype)
    set_weights(conv, weight, bias)
    return conv


class FusedConv2d(nn.Conv2d):
    """A conv whose filters are fused from a larger bank: weight = fusion @ bank."""

    fusion: torch.Tensor
    scores: torch.Tensor

    def __init__(self, conv: nn.Conv2d, bank: torch.Tensor, bias: torch.Tensor | None
                 ) -> None:
        super().__init__(**conv_args(conv), bias=conv.bias is not None, device=bank.device,
                         dtype=bank.dtype)
        del self.weight
        self.bank = nn.Parameter(bank.detach().clone())
        if bias is not None:
            del self.bias
            self.bank_bias = nn.Parameter(bias.detach().clone())
        self.register_buffer("fusion", torch.zeros(conv.out_channels, len(bank),
                                                   dtype=bank.dtype, device=bank.device))
        # the group's last finite importances (freeze_nonfinite falls back on them); a
        # buffer, so a resumed training has them
        self.register_buffer("scores", torch.full((len(bank),), float("nan"),
                                                  dtype=torch.float64, device=bank.device))

    def fused(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = (self.fusion @ self.bank.flatten(1)).view(-1, *self.bank.shape[1:])
        b = self.fusion @ self.bank_bias if hasattr(self, "bank_bias") else None
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.fused()
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)


def start_temperature(banks: list[torch.Tensor], distance: str = "raw",
                      share: float = START_SHARE) -> float:
    """The temperature at which the median filter of `banks` (rows: flattened filters)
    keeps `share` of its own fused weight. DCFF's T_s = 1 is for training from scratch;
    on a trained base's filters it fuses nearly the mean filter (a median own weight of
    0.04 on the Fashion-MNIST ResNet-20) and erases what the base learnt."""
    d = [distances(b.detach().double(), distance) for b in banks if len(b) > 1]
    if not d:
        return 1.0

    def own(t: float) -> float:
        return float(torch.cat([torch.softmax(-t * x, 1).diagonal() for x in d]).median())

    lo, hi = -6.0, 8.0  # log10 T; own weight rises with T
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if own(10 ** mid) < share else (lo, mid)
    return float(10 ** hi)


def _top(scores: torch.Tensor, m: int) -> np.ndarray:
    """The m highest scores' indices, in channel order."""
    return np.sort(torch.argsort(scores, descending=True, stable=True)[:m].cpu().numpy())


@dataclass
class _Fused:
    """One fused channel group: its producers, how many it keeps, and its kept set."""

    name: str
    producers: list[str]
    keep: int
    kept: np.ndarray


def _fusable(base: nn.Module, group_map: GroupMap, plan: Plan) -> list[_Fused]:
    """The plan's pruned groups whose producers are all plain convs (a grouped or
    depthwise producer leaves its group to plain selection)."""
    modules = dict(base.named_modules())
    out = []
    for g in group_map:
        kept = plan.kept.get(g.name)
        convs = [p for p in g.producers if isinstance(modules[p], nn.Conv2d)]
        if kept is None or len(kept) == g.size or not convs or len(convs) < len(
                g.producers) or any(modules[p].groups != 1 for p in convs):
            continue
        out.append(_Fused(g.name, convs, len(kept), np.asarray(kept)))
    return out


class DCFF(TrainHooks):
    """Trains a plan's compact network by dynamic filter fusion.

    `model` starts as `apply_plan(base, plan')`, plan' keeping the plan's channel counts
    and DCFF's own epoch-0 picks, with each producer of a pruned group (plain convs only; a
    group with a grouped or depthwise producer is plain selection) turned into a
    `FusedConv2d` whose bank is the base layer's full set of filters over the layer's kept
    inputs. Train `model` with `train(..., hooks=dcff)`: `begin_epoch(e)`
    sets T and re-chooses the kept sets at every epoch's start. Then `to_compact()`.
    `t_start=None` starts at `start_temperature` of the base's filters (for a trained base).
    """

    def __init__(self, base: nn.Module, group_map: GroupMap, plan: Plan, epochs: int, *,
                 distance: str = "raw", score_update: str = "every_epoch",
                 t_start: float | None = 1.0, t_end: float = 1e4, k: float = 1.0) -> None:
        if score_update not in SCORE_UPDATES:
            raise ValueError(f"dcff.score_update: must be one of {SCORE_UPDATES}, "
                             f"got {score_update!r}")
        distances(torch.zeros(1, 1), distance)  # validates the name
        self.epochs, self.distance, self.score_update = epochs, distance, score_update
        self.plan = plan
        # Start on the kept sets DCFF itself picks at T(0) (on the base's whole filters),
        # not the plan's: the compact layers after a group are cut for its kept channels,
        # and a different pick at epoch 0 would feed them filters they never saw.
        modules = dict(base.named_modules())
        fusable = _fusable(base, group_map, plan)
        rows = {g.name: torch.cat([modules[p].weight.detach().flatten(1)
                                   for p in g.producers], 1) for g in fusable}
        if t_start is None:
            t_start = min(start_temperature(list(rows.values()), distance), t_end)
        self.schedule = (t_start, t_end, k)
        scores = {name: kl_importance(r, t_start, distance, exact=score_update == "every_epoch")
                  for name, r in rows.items()}
        self._build(base, group_map, Plan({**plan.kept, **{
            g.name: _top(scores[g.name], g.keep) for g in fusable}}))
        fused = dict(self.model.named_modules())
        for group in self.groups:
            fused[group.producers[0]].scores.copy_(scores[group.name])
        self._started = False  # epoch 0 keeps the start's picks
        self.churn: dict[str, int] = {}

    def _build(self, base: nn.Module, group_map: GroupMap, plan: Plan) -> None:
        """`model` = apply_plan(base, plan) with every fusable group's producers fused."""
        self.model = apply_plan(base, group_map, plan)
        base_modules = dict(base.named_modules())
        modules = dict(self.model.named_modules())
        inputs_removed = {m: idxs for (m, out), (_, idxs) in group_map.removals(plan).items()
                          if not out}
        self.groups = _fusable(base, group_map, plan)
        for group in self.groups:
            for name in group.producers:
                original = base_modules[name]
                assert isinstance(original, nn.Conv2d)
                keep_in = np.setdiff1d(np.arange(original.in_channels),
                                       inputs_removed.get(name, np.array([], dtype=np.int64)))
                bank = original.weight.detach()[:, torch.as_tensor(keep_in)]
                conv = modules[name]
                assert isinstance(conv, nn.Conv2d)
                fused = FusedConv2d(conv, bank, original.bias)
                parent, _, attr = name.rpartition(".")
                setattr(self.model.get_submodule(parent), attr, fused)

    def _rows(self, group: _Fused) -> torch.Tensor:
        modules = dict(self.model.named_modules())
        return torch.cat([modules[p].bank.detach().flatten(1) for p in group.producers], 1)

    def temperature(self, epoch: float) -> float:
        return temperature(epoch, self.epochs, *self.schedule)

    def begin_epoch(self, epoch: int) -> None:
        """Set this epoch's temperature and re-choose every group's kept set (the top-m
        KL importances, in channel order); `churn` says how many changed per group."""
        t = self.temperature(epoch)
        if epoch == 0 and not self._started:  # the start's picks and scores stand
            picked = {g.name: g.kept for g in self.groups}
        else:
            picked = self._picks(t)
        self._started = True
        for group in self.groups:
            self.churn[group.name] = int(np.setdiff1d(picked[group.name], group.kept).size)
            group.kept = picked[group.name]
        self.fuse(t)

    def _picks(self, t: float) -> dict[str, np.ndarray]:
        """Every fused group's top-m KL importances at T = t, in channel order. Under
        `freeze_nonfinite`, non-finite scores fall back to the last finite ones."""
        exact = self.score_update == "every_epoch"
        modules = dict(self.model.named_modules())
        out = {}
        for group in self.groups:
            scores = kl_importance(self._rows(group), t, self.distance, exact=exact)
            last = modules[group.producers[0]].scores
            assert isinstance(last, torch.Tensor)
            if not bool(torch.isfinite(scores).all()) and bool(torch.isfinite(last).all()):
                scores = last.clone()  # the official code's fallback: last finite scores
            last.copy_(scores)
            out[group.name] = _top(scores, group.keep)
        return out

    def fuse(self, t: float) -> None:
        """Set every fused conv's fusion for its group's kept set at temperature t."""
        modules = dict(self.model.named_modules())
        for group in self.groups:
            fusion = fusion_matrix(self._rows(group), group.kept, t, self.distance)
            for p in group.producers:
                conv = modules[p]
                assert isinstance(conv, FusedConv2d)
                conv.fusion.copy_(fusion.to(conv.fusion.dtype))

    def kept_plan(self) -> Plan:
        """The plan with every fused group's current kept set."""
        kept = dict(self.plan.kept)
        kept.update({g.name: g.kept for g in self.groups})
        return Plan(kept)

    def to_compact(self) -> nn.Module:
        """A plain copy of the model: every fused conv's W_hat baked into an nn.Conv2d."""
        model = copy.deepcopy(self.model)
        for name, m in list(model.named_modules()):
            if isinstance(m, FusedConv2d):
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent), attr, plain_conv(m, *m.fused()))
        return model
