"""LAPP (Zhai et al., arXiv 2309.14157) as a training mode: learnable per-layer
thresholds, a FLOPs-constraint loss and bypasses, pruning progressively while training.

Only the abstract is public, so this is seed-methods.md §3's design; every choice it
leaves open is an option. Each channel group has a learnable threshold t in [0, 1) on its
normalised scores s = |gamma| / max |gamma| (its norms' scale, or a fixed criterion's
scores; or their ranks in the group, `normalise="rank"`). A channel is kept while s > t:
the forward pass multiplies the group's norm outputs by that 0/1 mask, and the backward
pass takes the gradient of sigmoid((s - t) / temperature) instead (straight-through).
The loss adds lam * max(0, F / F_target - 1)^2, F the FLOPs of the soft channel counts
(`CostModel.soft_flops`, exact for 0/1 masks; its gradient on each group optionally
scaled by the group's channel cost, `balance="cost"`, or whole cost, `"group"`), F_target
falling cubically from the base model's FLOPs to the target over the pruning phase; then
the masks freeze at the target (channels ranked by s - t) and training goes on with the
survivors. A bypass, a zero-initialised 1x1 conv beside each pruned k x k conv, keeps thin
layers expressive; at the end it is merged into the conv's centre tap (exact) or kept (its
FLOPs, about 1/k^2 of its conv's, on top of the target).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cost import CostModel
from .dcff import conv_args, plain_conv, set_weights
from .plan import Plan, keep_count
from .surgery import GroupMap, apply_plan
from .targets import fewest_to_meet
from .train import TrainHooks

__all__ = ["BALANCE", "BYPASS", "LAPP", "NORMALISE", "BypassConv2d", "Bypassed", "flops_target"]

BYPASS = ("merge", "keep", "none")
BALANCE = ("none", "cost", "group")
NORMALISE = ("max", "rank")


def flops_target(progress: float, target: float) -> float:
    """F_target / F_base at `progress` (0..1) of the pruning phase: 1 falling cubically
    to `target` (Zhu & Gupta's gradual schedule)."""
    p = min(max(progress, 0.0), 1.0)
    return target + (1 - target) * (1 - p) ** 3


def _mergeable(conv: nn.Conv2d) -> bool:
    """A 1x1 conv with the same stride reads exactly the centre tap's pixels."""
    k = conv.kernel_size
    return (conv.groups == 1 and all(x % 2 == 1 for x in k) and k != (1, 1)
            and conv.padding == tuple(x // 2 for x in k) and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros")


class BypassConv2d(nn.Conv2d):
    """conv(x) + bypass(x), the bypass a 1x1 conv with the same stride, initially 0."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(**conv_args(conv), bias=conv.bias is not None,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        set_weights(self, conv.weight, conv.bias)
        self.bypass = nn.Conv2d(conv.in_channels, conv.out_channels, 1,
                                stride=(conv.stride[0], conv.stride[1]),
                                bias=False, device=conv.weight.device,
                                dtype=conv.weight.dtype)
        nn.init.zeros_(self.bypass.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self._conv_forward(x, self.weight, self.bias) + self.bypass(x)
        return out

    def merged(self) -> nn.Conv2d:
        """One plain conv computing the same: the bypass added to the centre tap."""
        kh, kw = self.kernel_size
        weight = self.weight.detach().clone()
        weight[:, :, kh // 2, kw // 2] += self.bypass.weight.detach()[:, :, 0, 0]
        return plain_conv(self, weight, self.bias)


class Bypassed(nn.Module):
    """A kept bypass at inference: two plain convs, so every FLOPs counter sees both."""

    def __init__(self, conv: nn.Conv2d, bypass: nn.Conv2d) -> None:
        super().__init__()
        self.conv, self.bypass = conv, bypass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x) + self.bypass(x)
        return out


@dataclass(frozen=True)
class _Group:
    name: str
    size: int
    norms: tuple[tuple[str, torch.Tensor, torch.Tensor], ...]  # (norm, its idxs, channels)
    floor: int  # channels always kept


class LAPP(TrainHooks):
    """Learns per-group widths of `model` (a copy) down to `target_flops_ratio`.

    Train `lapp.model` with `train(..., hooks=lapp)`, then `to_compact()`. `scores`
    (group -> one score per channel) fixes the scores; without it they are the group's
    norms' |gamma|, learnt with the model, and groups without a norm stay whole. Like the
    search's genes, no group loses more than `max_ratio` of its channels or goes below
    `min_channels`: unbounded, the FLOPs loss emptied whole residual stages (one channel
    of 64 left in ResNet-20's last stage on Fashion-MNIST, test accuracy 45%).
    `normalise` and `balance` default to seed-methods.md §3's design; the CLI's defaults
    (`search.config.LappConfig`) are what measured best.
    """

    def __init__(self, model: nn.Module, group_map: GroupMap, cost: CostModel, *,
                 target_flops_ratio: float, prune_steps: int, lam: float = 2.0,
                 temperature: float = 0.05, bypass: str = "merge",
                 scores: Mapping[str, np.ndarray] | None = None, max_ratio: float = 0.8,
                 min_channels: int = 4, balance: str = "none", normalise: str = "max"
                 ) -> None:
        if not 0 < target_flops_ratio <= 1:
            raise ValueError(f"lapp.target_flops_ratio: must be in (0, 1], got "
                             f"{target_flops_ratio}")
        if bypass not in BYPASS:
            raise ValueError(f"lapp.bypass: must be one of {BYPASS}, got {bypass!r}")
        if not 0 <= max_ratio < 1 or min_channels < 1:
            raise ValueError("lapp: max_ratio must be in [0, 1) and min_channels >= 1, got "
                             f"{max_ratio}, {min_channels}")
        if normalise not in NORMALISE:
            raise ValueError(f"lapp.normalise: must be one of {NORMALISE}, got {normalise!r}")
        if balance not in BALANCE:
            raise ValueError(f"lapp.balance: must be one of {BALANCE}, got {balance!r}")
        if temperature <= 0 or lam < 0:
            raise ValueError("lapp: temperature must be > 0 and lam >= 0, got "
                             f"{temperature}, {lam}")
        self.group_map, self.cost = group_map, cost
        self.target, self.prune_steps = target_flops_ratio, max(1, prune_steps)
        self.lam, self.temperature, self.bypass = lam, temperature, bypass
        self.normalise = normalise
        self.model = copy.deepcopy(model)
        modules = dict(self.model.named_modules())
        device = next(self.model.parameters()).device
        self.groups: list[_Group] = []
        self.fixed: dict[str, torch.Tensor] = {}
        for g in group_map:
            norms = tuple((op.module, torch.as_tensor(op.idxs, device=device),
                           torch.as_tensor(op.root_idxs, device=device))
                          for op in g.ops if op.module in g.norms)
            if scores is not None:
                s = torch.as_tensor(np.abs(scores[g.name]), dtype=torch.float32, device=device)
                self.fixed[g.name] = self._normalised(s)
            elif not norms:
                continue
            if not norms:  # fixed scores, but nothing to mask the outputs with
                continue
            self.groups.append(_Group(g.name, g.size, norms, keep_count(
                g.size, max_ratio, min_channels=min_channels)))
        self.thresholds = {g.name: nn.Parameter(torch.zeros((), device=device))
                           for g in self.groups}
        self.flops_grad_scale = (self._cost_balance(balance) if balance != "none"
                                 else {g.name: 1.0 for g in self.groups})
        self.frozen: dict[str, torch.Tensor] | None = None
        self.step = 0
        self.loss_flops = 0.0
        self.history: list[dict[str, int]] = []  # kept channels per group, per epoch
        if bypass != "none":
            for name in {p for g in group_map for p in g.producers
                         if g.name in self.thresholds}:
                conv = modules[name]
                if isinstance(conv, nn.Conv2d) and _mergeable(conv):
                    parent, _, attr = name.rpartition(".")
                    setattr(self.model.get_submodule(parent), attr, BypassConv2d(conv))
        self._handles: list[Any] = []
        self._register()

    # -- masks ------------------------------------------------------------------------
    def scores(self, g: _Group) -> torch.Tensor:
        """Normalised scores of the group's channels (differentiable in gamma)."""
        if g.name in self.fixed:
            return self.fixed[g.name]
        modules = dict(self.model.named_modules())
        total = torch.zeros(g.size, device=g.norms[0][1].device)
        for norm, idxs, channels in g.norms:
            weight = modules[norm].weight
            assert isinstance(weight, torch.Tensor)
            total = total.index_add(0, channels, weight[idxs].abs().float())
        return self._normalised(total)

    def _normalised(self, s: torch.Tensor) -> torch.Tensor:
        """s / max s ("max"), or each channel's rank, (r + 1) / (n + 1) ("rank"): with
        "max" a threshold feels the FLOPs loss only while channels sit within a few
        temperatures of it, and a group whose scores all clear 0 by far never moves (from
        a trained ResNet-20 on CIFAR-10 every inner conv stayed whole); ranks spread every
        group evenly over (0, 1), so a threshold is the share of the group pruned. Ranks
        carry no gradient to gamma. Measured with balance="cost" on CIFAR-10 at 0.5 FLOPs:
        80.0%, no better than "max"."""
        if self.normalise == "rank":
            ranks = torch.argsort(torch.argsort(s.detach(), stable=True), stable=True)
            return (ranks.to(torch.float32) + 1) / (s.numel() + 1)
        out: torch.Tensor = s / s.max().clamp_min(1e-12)
        return out

    def mask(self, g: _Group) -> torch.Tensor:
        """0/1 forward, sigmoid((s - t) / T) backward; the group's `floor` best channels
        always kept."""
        if self.frozen is not None:
            return self.frozen[g.name]
        s = self.scores(g)
        soft = torch.sigmoid((s - self.thresholds[g.name]) / self.temperature)
        hard = (s > self.thresholds[g.name]).float()
        hard[torch.topk(s.detach(), g.floor).indices] = 1.0
        return hard + soft - soft.detach()

    def hard(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {g.name: self.mask(g).detach().round() for g in self.groups}

    def _register(self) -> None:
        modules = dict(self.model.named_modules())
        for g in self.groups:
            for norm, idxs, channels in g.norms:
                self._handles.append(modules[norm].register_forward_hook(
                    self._masking(g, idxs, channels)))

    def _masking(self, g: _Group, idxs: torch.Tensor, channels: torch.Tensor) -> Any:
        order = torch.empty_like(idxs)
        order[idxs] = channels  # norm channel -> group channel

        def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
            m = self.mask(g)[order].to(out.dtype)
            return out * m.view(1, -1, *[1] * (out.dim() - 2))
        return hook

    # -- the loss ---------------------------------------------------------------------
    def flops_ratio(self, masks: Mapping[str, torch.Tensor] | None = None) -> float:
        keep = self.hard() if masks is None else masks
        return float(self.cost.soft_flops(keep)) / self.cost.base_flops

    def parameters(self) -> list[nn.Parameter]:
        return list(self.thresholds.values())

    def _cost_balance(self, per: str) -> dict[str, float]:
        """Per group, the mean FLOPs of one channel (`per="cost"`), or of the whole group
        (`"group"`), over the group's own (at full width): the FLOPs loss's gradient on a
        group's mask is scaled by it, so a residual stream, whose channels feed many convs,
        does not take the loss's whole push. With "cost" a threshold on ranks still feels
        a push in proportion to its group's size; with "group" and `normalise="rank"`
        every threshold feels the same push, so the FLOPs loss alone would prune every
        group by the same share and the task loss decides the differences. "cost" measured
        on CIFAR-10 at 0.5 FLOPs did not change LAPP's allocation (80.3% against 80.1%)."""
        keep = {g.name: torch.ones(g.size, requires_grad=True) for g in self.groups}
        grads = torch.autograd.grad(self.cost.soft_flops(keep), list(keep.values()))
        cost = {n: float(d.mean() if per == "cost" else d.sum()) for n, d in zip(keep, grads)}
        mean = float(np.mean(list(cost.values())))
        return {n: mean / max(c, 1e-12) for n, c in cost.items()}

    def penalty(self) -> torch.Tensor | None:
        if self.frozen is not None or not self.lam:
            self.loss_flops = 0.0
            return None
        keep = {}
        for g in self.groups:
            m, scale = self.mask(g), self.flops_grad_scale[g.name]
            keep[g.name] = m if scale == 1.0 else m.detach() + (m - m.detach()) * scale
        ratio = self.cost.soft_flops(keep) / self.cost.base_flops
        goal = flops_target(self.step / self.prune_steps, self.target)
        loss = self.lam * F.relu(ratio / goal - 1) ** 2
        self.loss_flops = float(loss.detach())
        return loss

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        for t in self.thresholds.values():
            t.clamp_(0.0, 1 - 1e-6)
        self.step = step + 1
        if self.frozen is None and self.step >= self.prune_steps:
            self.freeze()

    @torch.no_grad()
    def freeze(self) -> None:
        """Fix the masks at the target: the channels ranked by their margin s - t over
        their group's threshold, the highest kept while the FLOPs fit (each group keeps
        its floor). The learnt thresholds decide the order; the budget, the count: a FLOPs
        loss alone stops above the target or, with momentum, overshoots below it."""
        margin = {g.name: (self.scores(g) - self.thresholds[g.name]).cpu().numpy()
                  for g in self.groups}
        candidates = []
        for g in self.groups:
            best = set(np.argsort(-margin[g.name], kind="stable")[:g.floor].tolist())
            candidates += [(float(v), g.name, c) for c, v in enumerate(margin[g.name])
                           if c not in best]
        device = next(iter(self.thresholds.values())).device

        def ratio(removed: Sequence[tuple[str, int]]) -> float:
            masks = {g.name: torch.ones(g.size, device=device) for g in self.groups}
            for name, c in removed:
                masks[name][c] = 0.0
            return self.flops_ratio(masks)

        masks = {g.name: torch.ones(g.size, device=device) for g in self.groups}
        for name, c in fewest_to_meet(candidates, ratio, self.target):
            masks[name][c] = 0.0
        self.frozen = masks

    # -- results ----------------------------------------------------------------------
    def widths(self) -> dict[str, int]:
        return {g: int(m.sum()) for g, m in self.hard().items()}

    def begin_epoch(self, epoch: int) -> None:
        self.history_until(epoch)

    def history_until(self, epochs: int) -> list[dict[str, int]]:
        """Kept channels per group at the end of each of the first `epochs` epochs (the
        current widths for the ones just ended; checkpointed, so a resumed training has
        them all)."""
        while len(self.history) < epochs:
            self.history.append(self.widths())
        return self.history

    def metrics(self) -> dict[str, float]:
        widths = self.widths()
        return {"flops_ratio_live": self.flops_ratio(), "loss_flops": self.loss_flops,
                "frozen": float(self.frozen is not None),
                **{f"threshold/{g}": float(t.detach()) for g, t in self.thresholds.items()},
                **{f"width/{g}": float(w) for g, w in widths.items()}}

    def kept_plan(self) -> Plan:
        return self.group_map.conform(
            Plan({g: np.flatnonzero(m.cpu().numpy()) for g, m in self.hard().items()}),
            {g.name: self.scores(g).detach().cpu().numpy() for g in self.groups})

    @torch.no_grad()
    def to_compact(self) -> nn.Module:
        """A plain, smaller copy: bypasses merged (or kept and narrowed), the masks baked
        into the norms, the masked channels removed. A training that ended before its
        pruning phase did freezes at the target first."""
        if self.frozen is None:
            self.freeze()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        try:
            model = copy.deepcopy(self.model)
        finally:
            self._register()
        modules = dict(model.named_modules())
        masks = self.hard()
        for g in self.groups:
            for norm, idxs, channels in g.norms:
                m = modules[norm]
                for p in (m.weight, m.bias):
                    if isinstance(p, torch.Tensor):
                        p[idxs] *= masks[g.name][channels].to(p.dtype)
        plan = self.kept_plan()
        bypasses = {n: m for n, m in modules.items() if isinstance(m, BypassConv2d)}
        if self.bypass == "merge":
            for name, m in bypasses.items():
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent), attr, m.merged())
            bypasses = {}
        removals = self.group_map.removals(plan)
        model = apply_plan(model, self.group_map, plan, inplace=True)
        for name, m in bypasses.items():  # narrow each kept bypass as its conv was
            w = m.bypass.weight
            for dim, out in ((0, True), (1, False)):
                drop = removals.get((name, out), (None, np.array([], dtype=np.int64)))[1]
                keep = torch.as_tensor(np.setdiff1d(np.arange(w.shape[dim]), drop),
                                       device=w.device)
                w = w.index_select(dim, keep)
            conv = plain_conv(m, m.weight, m.bias)
            bypass = nn.Conv2d(w.shape[1], w.shape[0], 1, stride=(m.stride[0], m.stride[1]),
                               bias=False,
                               device=w.device, dtype=w.dtype)
            bypass.weight.copy_(w)
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, Bypassed(conv, bypass))
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"thresholds": {g: t.detach().clone() for g, t in self.thresholds.items()},
                "frozen": self.frozen, "step": self.step,
                "history": [list(h.values()) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        with torch.no_grad():
            for g, t in state["thresholds"].items():
                self.thresholds[g].copy_(t)
        self.frozen, self.step = state["frozen"], int(state["step"])
        names = [g.name for g in self.groups]
        self.history = [dict(zip(names, (int(x) for x in h))) for h in state["history"]]
