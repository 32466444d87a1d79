"""FLOPs, parameters and latency; and predicting a plan's FLOPs without building it.

FLOPs follow the convention of the pruning literature (HRank, DCFF, ABCPruner): they are
the multiply-accumulates of convolutions and linear layers, as torch-pruning's op counter
counts them per layer (BN, ReLU and pooling excluded). Parameters are all parameters.
Everywhere, `flops` is that count and `flops_ratio` the count over the base model's.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from .plan import Plan
from .surgery import GroupMap

__all__ = ["CostModel", "count_cost", "measure_latency"]


def count_cost(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """(FLOPs (multiply-accumulates) of conv+linear layers for one sample, parameter count)."""
    x = example_input[:1]
    _, _, layer_flops, _ = tp.utils.count_ops_and_params(model, x, layer_wise=True)
    flops = sum(int(v or 0) for m, v in layer_flops.items()
                if isinstance(m, (nn.Conv2d, nn.Linear)))
    return flops, sum(p.numel() for p in model.parameters())


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def _norm_channels(m: nn.Module) -> int:
    if isinstance(m, nn.LayerNorm):
        return int(m.normalized_shape[-1])
    if isinstance(m, nn.GroupNorm):
        return int(m.num_channels)
    return int(m.num_features)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Layer:
    name: str
    kind: str  # conv | depthwise | linear | norm (any per-channel parameters)
    in_dim: int
    out_dim: int
    per_pair: int  # FLOPs per (input channel, output channel) pair, per sample
    weight_per_pair: int
    bias: bool
    groups: int = 1  # conv groups of a grouped conv: each output sees in_dim / groups inputs


class CostModel:
    """Predicts FLOPs and parameters of `apply_plan(base, plan)` from the plan alone.

    Channel pruning leaves spatial sizes alone, so each layer's cost is a product of
    its kept input and output widths; the widths come from the same recorded ops the
    surgery applies, which keeps prediction and surgery in step by construction.
    """

    def __init__(self, model: nn.Module, group_map: GroupMap, example_input: torch.Tensor) -> None:
        self.group_map = group_map
        self.base_flops, self.base_params = count_cost(model, example_input)
        spatial: dict[str, int] = {}
        names = {m: n for n, m in model.named_modules()}

        def positions(m: nn.Module, i: object, o: torch.Tensor) -> None:
            # a conv slides over dims 2.., a Linear over every dim but the first and last
            # (ConvNeXt applies Linear to channels-last maps)
            dims = o.shape[2:] if isinstance(m, nn.Conv2d) else o.shape[1:-1]
            spatial[names[m]] = int(np.prod(dims)) if len(dims) else 1

        hooks = [m.register_forward_hook(positions)
                 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(example_input[:1])
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        layers = []
        counted = 0
        for name, m in model.named_modules():
            own = sum(p.numel() for p in m.parameters(recurse=False))
            # a layer the eval pass never runs (an auxiliary head) has parameters, no FLOPs
            if isinstance(m, nn.Conv2d):
                k = int(np.prod(m.kernel_size))
                dw = m.groups == m.in_channels == m.out_channels and m.groups > 1
                layers.append(_Layer(name, "depthwise" if dw else "conv", m.in_channels,
                                     m.out_channels, k * spatial.get(name, 0), k,
                                     m.bias is not None, 1 if dw else m.groups))
            elif isinstance(m, nn.Linear):
                layers.append(_Layer(name, "linear", m.in_features, m.out_features,
                                     spatial.get(name, 0), 1, m.bias is not None))
            elif isinstance(m, _NORMS) and own:
                channels = _norm_channels(m)
                layers.append(_Layer(name, "norm", channels, channels, 0, own // channels,
                                     False))
            else:
                continue
            counted += own
        params = dict(model.named_parameters())
        for pname, dim in group_map.parameters.items():  # layer scales and the like
            p = params[pname]
            layers.append(_Layer(pname, "norm", p.shape[dim], p.shape[dim], 0,
                                 p.numel() // p.shape[dim], False))
            counted += p.numel()
        self._layers = tuple(layers)
        self._other_params = self.base_params - counted

    def soft_flops(self, keep: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """FLOPs with channel counts as sums of per-channel keep weights (`keep[group]`,
        in [0, 1]; groups absent keep all): differentiable in the weights, and equal to
        `predict` for 0/1 weights (LAPP's FLOPs loss)."""
        if not hasattr(self, "_channels"):
            # (module, is-output-dim) -> {module channel: (group, group channel)}, as
            # `GroupMap.removals` collects them (a channel reached twice counts once)
            found: dict[tuple[str, bool], dict[int, tuple[str, int]]] = defaultdict(dict)
            for g in self.group_map:
                for op in g.ops:
                    for i, r in zip(op.idxs.tolist(), op.root_idxs.tolist()):
                        found[(op.module, op.out_channels)][i] = (g.name, r)
            self._channels = {key: _by_group(v) for key, v in found.items()}
        ref = next(iter(keep.values()))
        zero = torch.zeros((), dtype=ref.dtype, device=ref.device)

        def removed(key: tuple[str, bool]) -> torch.Tensor:
            return sum((1 - keep[g][idx]).sum() for g, idx in self._channels.get(key, [])
                       if g in keep) + zero

        flops = zero
        for layer in self._layers:
            if layer.kind == "norm":
                continue
            out = layer.out_dim - removed((layer.name, True))
            inp = (1 if layer.kind == "depthwise"
                   else (layer.in_dim - removed((layer.name, False))) / layer.groups)
            positions = layer.per_pair // layer.weight_per_pair
            if layer.kind == "linear":
                positions = min(positions, 1)
            flops = flops + layer.per_pair * inp * out + (out * positions if layer.bias else 0)
        return flops

    def widths(self, plan: Plan) -> dict[tuple[str, bool], int]:
        """(module, is-output-dim) -> number of channels removed by the plan."""
        return {key: len(idxs) for key, (_, idxs) in self.group_map.removals(plan).items()}

    def predict(self, plan: Plan) -> tuple[int, int]:
        """(FLOPs, params) that `count_cost` will report for the pruned model."""
        removed = self.widths(plan)
        flops, params = 0, self._other_params
        for layer in self._layers:
            cut = removed.get((layer.name, True), 0)
            if layer.kind == "norm":  # its pruning function may count as either side
                cut = cut or removed.get((layer.name, False), 0)
            out = layer.out_dim - cut
            if layer.kind in ("depthwise", "norm"):
                inp = 1  # one input channel per output channel
            else:  # a grouped conv keeps as many inputs in each of its conv groups
                inp = (layer.in_dim - removed.get((layer.name, False), 0)) // layer.groups
            if layer.kind == "norm":  # per-channel parameters only
                params += layer.weight_per_pair * out
                continue
            # torch-pruning's counter adds a conv's bias at every position, a Linear's once
            positions = layer.per_pair // layer.weight_per_pair
            if layer.kind == "linear":
                positions = min(positions, 1)
            flops += layer.per_pair * inp * out + (out * positions if layer.bias else 0)
            params += layer.weight_per_pair * inp * out + (out if layer.bias else 0)
        return flops, params


def _by_group(channels: dict[int, tuple[str, int]]) -> list[tuple[str, torch.Tensor]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for g, r in channels.values():
        groups[g].append(r)
    return [(g, torch.as_tensor(rs)) for g, rs in groups.items()]


def measure_latency(model: nn.Module, example_input: torch.Tensor, *, warmup: int = 5,
                    repeats: int = 20) -> float:
    """Median seconds per forward pass of `example_input`, after `warmup` passes."""
    was_training = model.training
    model.eval()
    cuda = example_input.is_cuda
    samples = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(example_input)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                samples.append(time.perf_counter() - t0)
    model.train(was_training)
    return statistics.median(samples)
