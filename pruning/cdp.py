"""CDP/DTC (Li et al., AI Communications 2023) as a training mode, at filter level.

Every conv that produces a prunable channel group carries a filter skeleton S (one entry
per filter and kernel position, initially 1) and computes with W * S. Training adds the
CDP penalty: the texture similarity of each filter (and each skeleton) to its layer's
mean, sim(a, b) = 1 - arccos(cos(a, b)) / pi, and an L1 term on S. After every backward
pass DTC masks the skeleton entries below a per-filter threshold
tau_j = delta * mean_i |S_i|_1 / |S_j|_1, so weak filters die first, and masks their
gradients. A channel dies when every producer's filter in it is dead; its norms' scale and
shift are zeroed, so removing it leaves the outputs unchanged. `to_compact` folds W * S and
removes the dead channels through `apply_plan`.

The published method has no FLOPs target. Ours (`target_flops_ratio`) is met by adapting
the L1 strength: every `adapt_every` steps it is multiplied by `gain` (within a factor 10
of its start) while the live FLOPs ratio is above a schedule that falls linearly from 1 to
the target over the sparse phase, and divided by it otherwise. Where the live ratio trails
the schedule by more than `LAG`, the weakest live channels (by their folded filters' L1
over their layer's mean) are cut down to it, and at the sparse phase's end down to the
target, so the target is met on time. A DTC update that would cross the target lets only
the weakest of the newly dead channels die, just enough to reach it. The masks then
freeze and training goes on as a fine-tune of the survivors.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .cost import CostModel
from .dcff import conv_args, plain_conv, set_weights
from .plan import Plan
from .surgery import GroupMap, apply_plan
from .targets import fewest_to_meet
from .train import TrainHooks

__all__ = ["CDP", "SkeletonConv2d", "dtc_thresholds", "scratch_init", "texture_similarity"]

R_PROP = ("code", "intended")
PROP_SPAN = 10.0  # the L1 strength adapts within [prop / 10, prop * 10]
LAG = 0.05  # how far the live FLOPs ratio may trail the schedule before channels are cut
_CLAMP = 1 - 1e-6  # arccos has an infinite slope at +-1: clamp so gradients stay finite


def texture_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - angle(a_j, b_j) / pi for the rows of `a` and `b` (flattened): 1 parallel, 0.5
    orthogonal, 0 opposite. The cosine is clamped (the public code's is not, and is NaN
    at +-1)."""
    a, b = a.flatten(1), b.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)
    return 1 - torch.acos(cos.clamp(-_CLAMP, _CLAMP)) / math.pi


def scratch_init(model: nn.Module) -> nn.Module:
    """The public code's start from scratch: every BN scale 0.5, so the L1 term on the
    skeletons acts on filters not yet amplified by BN. In place; returns `model`."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            nn.init.constant_(m.weight, 0.5)
    return model


def dtc_thresholds(skeleton: torch.Tensor, delta: float) -> torch.Tensor:
    """tau_j = delta * mean_i |S_i|_1 / |S_j|_1: equal norms give delta, a weaker filter a
    higher threshold, a dead one infinity."""
    norms = skeleton.detach().abs().flatten(1).sum(1)
    return delta * norms.mean() / norms.clamp_min(torch.finfo(norms.dtype).tiny)


class SkeletonConv2d(nn.Conv2d):
    """A conv computing with W * (S * mask), S of shape (filters, kh, kw)."""

    mask: torch.Tensor

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(**conv_args(conv), bias=conv.bias is not None,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        set_weights(self, conv.weight, conv.bias)
        shape = (conv.out_channels, *conv.kernel_size)
        self.skeleton = nn.Parameter(torch.ones(shape, device=self.weight.device,
                                                dtype=self.weight.dtype))
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool,
                                                device=self.weight.device))

    def folded(self) -> torch.Tensor:
        w: torch.Tensor = self.weight * (self.skeleton * self.mask).unsqueeze(1)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self._conv_forward(x, self.folded(), self.bias)
        return out

    def dead(self) -> torch.Tensor:
        """Filters with no skeleton entry left."""
        return ~self.mask.flatten(1).any(1)


@dataclass(frozen=True)
class _Producer:
    """One skeleton conv of a group: its filters and the group channels they make."""

    name: str
    filters: np.ndarray
    channels: np.ndarray


@dataclass(frozen=True)
class _Group:
    name: str
    size: int
    producers: tuple[_Producer, ...]
    norms: tuple[tuple[str, np.ndarray, np.ndarray], ...]  # (norm, its indices, channels)


class CDP(TrainHooks):
    """Trains `base` (a copy) under the CDP penalty and DTC masks to a FLOPs target.

    Train `cdp.model` with `train(..., hooks=cdp)` at peak learning rate `lr`, then
    `to_compact()`. Groups with a producer that is not a conv (a Linear) stay whole.
    """

    def __init__(self, base: nn.Module, group_map: GroupMap, cost: CostModel, *,
                 target_flops_ratio: float, sparse_steps: int, lr: float,
                 delta: float = 0.01, prop: float | None = None, var: float = 0.0,
                 var2: float = 0.0,
                 r_prop: str = "code", gain: float = 1.1, adapt_every: int = 10) -> None:
        if not 0 < target_flops_ratio <= 1:
            raise ValueError(f"cdp.target_flops_ratio: must be in (0, 1], got "
                             f"{target_flops_ratio}")
        if delta < 0:
            raise ValueError(f"cdp.delta: must be >= 0, got {delta}")
        if r_prop not in R_PROP:
            raise ValueError(f"cdp.r_prop: must be one of {R_PROP}, got {r_prop!r}")
        self.group_map, self.cost = group_map, cost
        self.target, self.sparse_steps = target_flops_ratio, max(1, sparse_steps)
        self.delta, self.var, self.var2, self.r_prop = delta, var, var2, r_prop
        self.gain, self.adapt_every = gain, max(1, adapt_every)
        if prop is None:
            # SGD with momentum 0.9 moves a parameter lr / (1 - 0.9) per unit of steady
            # gradient and the L1 term's gradient is 2 prop: alone, this prop would move a
            # skeleton entry by 0.01 over the sparse phase, so the loss decides which fall
            prop = 0.01 * (1 - 0.9) / (2 * lr * self.sparse_steps)
        self.prop = prop
        self.prop_range = (prop / PROP_SPAN, prop * PROP_SPAN)
        self.frozen = False
        self.killed = {"dtc": 0, "cut": 0}  # channels dead by DTC's masks, by the schedule
        self.last_sim: list[float] = []
        self.terms: dict[str, float] = {}
        self.model = copy.deepcopy(base)
        modules = dict(self.model.named_modules())
        wrapped: dict[str, SkeletonConv2d] = {}
        self.groups: list[_Group] = []
        for g in group_map:
            if not g.producers or not all(isinstance(modules[p], nn.Conv2d)
                                          for p in g.producers):
                continue
            producers, norms = [], []
            for op in g.ops:
                if op.module in g.producers and op.out_channels:
                    producers.append(_Producer(op.module, op.idxs, op.root_idxs))
                elif op.module in g.norms:
                    norms.append((op.module, op.idxs, op.root_idxs))
            for p in g.producers:
                if p not in wrapped:
                    conv = modules[p]
                    assert isinstance(conv, nn.Conv2d)
                    wrapped[p] = SkeletonConv2d(conv)
                    parent, _, attr = p.rpartition(".")
                    setattr(self.model.get_submodule(parent), attr, wrapped[p])
            self.groups.append(_Group(g.name, g.size, tuple(producers), tuple(norms)))
        self.convs = wrapped
        self.dead = {g.name: np.zeros(g.size, dtype=bool) for g in self.groups}
        self.frozen = self.flops_ratio() <= self.target  # nothing to prune

    # -- the loss ---------------------------------------------------------------------
    def _sims(self) -> list[torch.Tensor]:
        return [texture_similarity(c.skeleton, c.skeleton.mean(0, keepdim=True)
                                   .expand_as(c.skeleton)).sum() for c in self.convs.values()]

    def penalty(self) -> torch.Tensor | None:
        """var * sum sim(W_j, mean W) + var2 * sum sim(S_j, mean S) + R_prop; R_prop is
        2 * prop * |S|_1 ("code", the public code's effective term) or, "intended",
        prop * (Sim_t / Sim_t-1 + Sim_t-1 / Sim_t) * |S|_1 per layer, with the ratios
        taken as constants. R_prop stops once the masks freeze."""
        convs = list(self.convs.values())
        parts: dict[str, torch.Tensor] = {}
        if self.var:
            parts["penalty_texture_w"] = self.var * torch.stack([texture_similarity(
                c.weight, c.weight.mean((0, 2, 3), keepdim=True).expand_as(c.weight)).sum()
                for c in convs]).sum()
        sims = self._sims() if (self.var2 or self.r_prop == "intended") else []
        if self.var2:
            parts["penalty_texture_s"] = self.var2 * torch.stack(sims).sum()
        if not self.frozen and self.prop:
            weights = [2.0] * len(convs)
            now = [float(x.detach()) for x in sims]
            if self.r_prop == "intended" and self.last_sim:
                weights = [n / max(b, 1e-12) + b / max(n, 1e-12)
                           for n, b in zip(now, self.last_sim)]
            self.last_sim = now
            parts["penalty_l1"] = self.prop * torch.stack(
                [w * c.skeleton.abs().sum() for w, c in zip(weights, convs)]).sum()
        self.terms = {"penalty_l1": 0.0, **{k: float(v.detach()) for k, v in parts.items()}}
        if not parts:
            return None
        total: torch.Tensor = torch.stack(list(parts.values())).sum()
        return total

    # -- DTC --------------------------------------------------------------------------
    def _plan(self, dead: dict[str, np.ndarray]) -> Plan:
        return Plan({g.name: np.flatnonzero(~dead[g.name]) for g in self.groups})

    def flops_ratio(self, dead: dict[str, np.ndarray] | None = None) -> float:
        plan = self._plan(self.dead if dead is None else dead)
        return self.cost.predict(plan)[0] / self.cost.base_flops

    def _channel_dead(self, g: _Group) -> np.ndarray:
        dead = np.ones(g.size, dtype=bool)
        for p in g.producers:
            filt = self.convs[p.name].dead().cpu().numpy()
            alive_channels = p.channels[~filt[p.filters]]
            dead[alive_channels] = False
        return dead

    def _strength(self, g: _Group, masks: dict[str, torch.Tensor] | None = None
                  ) -> np.ndarray:
        """A channel's strength: the L1 norm of each producer's folded filter (W * S)
        over the mean of that conv's live filters, averaged over the producers. Scale-free,
        so the cut compares layers fairly: the skeletons all start at 1 and BN makes a
        filter's scale moot, and a maximum over a residual stream's many producers would
        spare the streams and gut the blocks' inner convs."""
        total, count = np.zeros(g.size), np.zeros(g.size)
        for p in g.producers:
            c = self.convs[p.name]
            mask = c.mask if masks is None else masks[p.name]
            s = (c.skeleton.detach() * mask).unsqueeze(1)
            l1 = (c.weight.detach() * s).abs().flatten(1).sum(1)
            live = l1[mask.flatten(1).any(1)]
            rel = (l1 / live.mean() if live.numel() else l1).cpu().numpy()
            np.add.at(total, p.channels, rel[p.filters])
            np.add.at(count, p.channels, 1)
        out: np.ndarray = total / np.maximum(count, 1)
        return out

    def _kill(self, candidates: list[tuple[float, str, int]], goal: float
              ) -> list[tuple[str, int]]:
        """The fewest of `candidates` (weakest first) whose death brings the FLOPs ratio to
        `goal` (all of them if even that does not)."""
        def ratio(removed: Sequence[tuple[str, int]]) -> float:
            dead = {n: d.copy() for n, d in self.dead.items()}
            for g, c in removed:
                dead[g][c] = True
            return self.flops_ratio(dead)

        return fewest_to_meet(candidates, ratio, goal)

    @torch.no_grad()
    def _set_channels(self, g: _Group, channels: np.ndarray, rows: dict[str, torch.Tensor]
                      ) -> None:
        """Give `channels` of group g the masks in `rows` (per producer: the full mask)."""
        for p in g.producers:
            sel = np.isin(p.channels, channels)
            if sel.any():
                idx = torch.as_tensor(p.filters[sel], device=rows[p.name].device)
                self.convs[p.name].mask[idx] = rows[p.name][idx]

    def scheduled(self, step: int) -> float:
        """The FLOPs ratio the schedule asks for after `step` + 1 steps."""
        return 1 - (1 - self.target) * min(1.0, (step + 1) / self.sparse_steps)

    @torch.no_grad()
    def after_backward(self, step: int) -> None:
        if not self.frozen:
            dead = sum(self.killed.values())
            self._update_masks()
            scheduled = self.scheduled(step)
            last = step + 1 >= self.sparse_steps
            if (step + 1) % self.adapt_every == 0 or last:
                live = self.flops_ratio()
                prop = self.prop * self.gain if live > scheduled else self.prop / self.gain
                self.prop = min(max(prop, self.prop_range[0]), self.prop_range[1])
                if last or live > scheduled + LAG:
                    self._cut_to(self.target if last else scheduled)
            if sum(self.killed.values()) != dead:  # the FLOPs move only when channels die
                self.frozen = self.flops_ratio() <= self.target
        self._apply_masks()

    def after_step(self, step: int) -> None:
        self._apply_masks()  # momentum moves masked entries and dead norms off 0

    def _update_masks(self) -> None:
        old = {n: c.mask.clone() for n, c in self.convs.items()}
        for conv in self.convs.values():
            s = conv.skeleton * conv.mask
            tau = dtc_thresholds(s, self.delta)
            conv.mask &= s.abs() > tau.view(-1, 1, 1)
        candidates, restore = [], []
        for g in self.groups:
            now = self._channel_dead(g)
            newly = np.flatnonzero(now & ~self.dead[g.name])
            if not newly.size:
                continue
            strength = self._strength(g, old)
            if now.all():  # a group keeps its strongest channel
                keep = newly[np.argmax(strength[newly])]
                restore.append((g, np.array([keep])))
                newly = newly[newly != keep]
            candidates += [(float(strength[c]), g.name, int(c)) for c in newly]
        for g, channels in restore:
            self._set_channels(g, channels, old)
        if not candidates:
            return
        dying = set(self._kill(candidates, self.target))
        by_name = {g.name: g for g in self.groups}
        for _, name, channel in candidates:
            if (name, channel) in dying:
                self.dead[name][channel] = True
                self.killed["dtc"] += 1
            else:
                self._set_channels(by_name[name], np.array([channel]), old)

    def _cut_to(self, goal: float) -> None:
        """The weakest live channels die until the FLOPs ratio is `goal`."""
        candidates = []
        for g in self.groups:
            alive = np.flatnonzero(~self.dead[g.name])
            strength = self._strength(g)
            keep = alive[np.argmax(strength[alive])]
            candidates += [(float(strength[c]), g.name, int(c)) for c in alive if c != keep]
        zeros = {n: torch.zeros_like(conv.mask) for n, conv in self.convs.items()}
        by_name = {g.name: g for g in self.groups}
        for name, channel in self._kill(candidates, goal):
            self.dead[name][channel] = True
            self.killed["cut"] += 1
            self._set_channels(by_name[name], np.array([channel]), zeros)

    @torch.no_grad()
    def _apply_masks(self) -> None:
        """Masked skeleton entries and their gradients are 0; a dead channel's norms and
        biases are 0 too, so it outputs nothing."""
        modules = dict(self.model.named_modules())
        for c in self.convs.values():
            c.skeleton.mul_(c.mask)
            if c.skeleton.grad is not None:
                c.skeleton.grad.mul_(c.mask)
        for g in self.groups:
            dead = self.dead[g.name]
            if not dead.any():
                continue
            for p in g.producers:
                bias = self.convs[p.name].bias
                if bias is not None:
                    _zero(bias, p.filters[dead[p.channels]])
            for norm, idxs, channels in g.norms:
                m = modules[norm]
                for t in (m.weight, m.bias):
                    if isinstance(t, torch.Tensor):
                        _zero(t, idxs[dead[channels]])

    # -- results ----------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        filters = sum(int(c.dead().sum()) for c in self.convs.values())
        return {"flops_ratio_live": self.flops_ratio(), "dead_filters": float(filters),
                "dead_channels": float(sum(int(d.sum()) for d in self.dead.values())),
                "channels_dtc": float(self.killed["dtc"]),
                "channels_cut": float(self.killed["cut"]),
                "prop": self.prop, "frozen": float(self.frozen), **self.terms}

    def kept_plan(self) -> Plan:
        """The live channels; a grouped conv's groups made equal (strongest kept)."""
        return self.group_map.conform(self._plan(self.dead),
                                      {g.name: self._strength(g) for g in self.groups})

    def to_compact(self) -> nn.Module:
        """A plain, smaller copy: W * S folded into each conv, dead channels removed."""
        self._apply_masks()
        model = copy.deepcopy(self.model)
        for name, m in list(model.named_modules()):
            if isinstance(m, SkeletonConv2d):
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent), attr, plain_conv(m, m.folded(), m.bias))
        plan = self.kept_plan()
        return apply_plan(model, self.group_map, plan, inplace=True)

    def state_dict(self) -> dict[str, Any]:
        return {"prop": self.prop, "frozen": self.frozen, "last_sim": list(self.last_sim),
                "killed": dict(self.killed),
                "dead": {n: torch.as_tensor(d) for n, d in self.dead.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.prop, self.frozen = float(state["prop"]), bool(state["frozen"])
        self.last_sim = [float(x) for x in state["last_sim"]]
        self.killed = {k: int(v) for k, v in state["killed"].items()}
        self.dead = {n: np.asarray(d, dtype=bool) for n, d in state["dead"].items()}


def _zero(t: torch.Tensor, idxs: np.ndarray) -> None:
    if idxs.size:
        i = torch.as_tensor(idxs, device=t.device)
        t.data[i] = 0
        if t.grad is not None:
            t.grad[i] = 0
