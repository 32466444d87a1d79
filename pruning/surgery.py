"""Channel groups from torch-pruning's dependency graph, and applying a plan to a model.

The dependency graph is traced once per base model. Each group's pruning operations are
recorded with the *original* index of every coupled channel (torch-pruning's
`root_idxs`), so applying a plan to a fresh copy is a handful of `index_select`s through
torch-pruning's own pruning functions, with no re-tracing per candidate: tracing ResNet-56
costs ~50 ms, the recorded ops ~1 ms.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from .fusion import fusion_matrix
from .grouped import ConvBlocks, conform, conv_blocks, is_grouped, prune_grouped_in, unequal
from .plan import Plan
from .tracing import buffers_kept, channel_reshapes, failing_module, train_only

__all__ = ["ChannelGroup", "GroupMap", "PruneOp", "apply_plan", "classifier_layers"]


@dataclass(frozen=True)
class PruneOp:
    """One torch-pruning function applied to one module, in original channel coordinates."""

    module: str
    handler: Callable[..., Any]
    out_channels: bool
    idxs: np.ndarray  # channel indices of this module's dimension
    root_idxs: np.ndarray  # the group channel each of `idxs` belongs to


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be removed together (a conv, its BN, everything coupled to it)."""

    name: str  # the root module, e.g. "layer1.0.conv1"
    size: int
    stage: str  # output resolution of the root, e.g. "16x16": groups of one stage share a slot
    producers: tuple[str, ...]  # conv/linear modules whose output channels these are
    norms: tuple[str, ...]  # normalisation layers over these channels
    ops: tuple[PruneOp, ...] = field(repr=False)


@dataclass(frozen=True)
class ParameterCut:
    """Prunes a parameter that belongs to no layer (a layer scale) along `dim`."""

    dim: int

    def __call__(self, model: nn.Module, name: str, idxs: Sequence[int]) -> None:
        owner, _, attr = name.rpartition(".")
        parent = model.get_submodule(owner)
        p = getattr(parent, attr)
        keep = torch.as_tensor(sorted(set(range(p.shape[self.dim])) - set(idxs)),
                               device=p.device)
        setattr(parent, attr, nn.Parameter(p.detach().index_select(self.dim, keep),
                                           requires_grad=p.requires_grad))


def _all_groups(dg: tp.DependencyGraph) -> tuple[list[Any], dict[nn.Module, str]]:
    """Every conv/linear-rooted group (torch-pruning's `get_all_groups`), and the roots
    whose channel dependencies could not be followed, with why: those stay whole rather
    than stopping the whole model."""
    groups: list[Any] = []
    failed: dict[nn.Module, str] = {}
    visited: set[nn.Module] = set()
    for m in list(dg.module2node):
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or m in visited \
                or m in dg.IGNORED_LAYERS_IN_TRACING:
            continue
        pruner = dg.get_pruner_of_module(m)
        try:
            group = dg.get_pruning_group(m, pruner.prune_out_channels,
                                         list(range(pruner.get_out_channels(m))))
        except (IndexError, ValueError, ZeroDivisionError, RuntimeError) as exc:
            failed[m] = f"its channel dependencies could not be traced ({type(exc).__name__})"
            continue
        visited.update(item.dep.target.module for item in group
                       if _is_out_fn(dg, item.dep.handler))
        groups.append(group)
    return groups, failed


def _is_out_fn(dg: tp.DependencyGraph, fn: Callable[..., Any]) -> bool:
    return bool(dg.is_out_channel_pruning_fn(fn))


def _classifier_groups(dg: tp.DependencyGraph, groups: list[Any]) -> list[int]:
    """Positions of the groups whose channels are the output's (the classifier's): those
    that prune the output channels of the graph's sink, or reach its output node."""
    sinks = {n.module for n in dg.module2node.values() if not n.outputs}
    return [i for i, group in enumerate(groups) if any(
        isinstance(item.dep.target.module, tp.ops._OutputOp)
        or (item.dep.target.module in sinks and _is_out_fn(dg, item.dep.handler))
        for item in group)]


class GroupMap:
    """The prunable channel groups of a base model, in a fixed order.

    Args:
        model: the base model (left unchanged).
        example_input: one batch of the input shape, used to trace the graph.
        ignored: modules whose output channels must stay (default: the classifier, found
            as the layers whose output channels are the model's output, whatever their
            type; a model with none is refused).
        exclude: groups to leave whole after all (group -> why), as `prunability` finds.

    `left_alone` says which groups stay whole and why; `classifier` names the layers found.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor,
                 ignored: Sequence[nn.Module] | None = None,
                 exclude: Mapping[str, str] | None = None) -> None:
        model_was_training = model.training
        names = {m: n for n, m in model.named_modules()}
        # Layers that run in train mode only (auxiliary heads) read channels too: trace the
        # train-mode graph then, so they are narrowed with what feeds them.
        auxiliary = train_only(model, example_input)
        shapes: dict[nn.Module, tuple[int, ...]] = {}
        hooks = [m.register_forward_hook(lambda m, i, o: shapes.__setitem__(m, tuple(o.shape)))
                 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        def forward(m: nn.Module, x: torch.Tensor) -> Any:  # torch-pruning sets eval mode
            if auxiliary:  # train-mode BatchNorm wants two samples
                m.train()
                x = x.repeat(2, *[1] * (x.dim() - 1))
            return m(x)

        try:
            # torch-pruning traces through autograd, so grad mode must be on here.
            with torch.enable_grad(), buffers_kept(model), failing_module(model), \
                    channel_reshapes() as shuffles:
                dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input,
                                                           forward_fn=forward, verbose=False)
                every, untraced = _all_groups(dg)
        finally:
            for h in hooks:
                h.remove()
            model.train(model_was_training)
        found = _classifier_groups(dg, every)
        self.classifier = [names[item.dep.target.module] for i in found for item in every[i]
                           if item.dep.target.module in names
                           and _is_out_fn(dg, item.dep.handler)]
        self.left_alone: dict[str, str] = {names[m]: why for m, why in untraced.items()}
        if ignored is None:
            if not found:
                raise ValueError("model: no layer produces the output's channels (the class "
                                 "dimension); pass the layers to leave alone as `ignored`")
            keep = set(found)
            why = "the classifier: its channels are the output's"
        else:
            ignored_names = {names[m] for m in ignored}
            keep = {i for i, group in enumerate(every) if any(
                names.get(item.dep.target.module) in ignored_names
                and _is_out_fn(dg, item.dep.handler) for item in group)}
            why = "ignored"
        for i, group in enumerate(every):  # channels a shuffle reorders stay whole
            if i not in keep and any(getattr(item.dep.target, "grad_fn", None) in shuffles
                                     for item in group):
                keep.add(i)
                self.left_alone[names[group[0].dep.target.module]] = \
                    "a channel shuffle reorders its channels"
        for i, group in enumerate(every):  # an auxiliary head's own layers stay whole
            made = [item.dep.target.module for item in group
                    if _is_out_fn(dg, item.dep.handler)
                    and isinstance(item.dep.target.module, (nn.Conv2d, nn.Linear))]
            if i not in keep and made and all(m in auxiliary for m in made):
                keep.add(i)
                self.left_alone[names[made[0]]] = "an auxiliary head (runs in train mode only)"
        groups: list[ChannelGroup] = []
        self.dependency_groups: dict[str, Any] = {}
        params = {p: n for n, p in model.named_parameters()}
        self.parameters: dict[str, int] = {}  # unwrapped parameter -> the dim pruned
        for i, tp_group in enumerate(every):
            root = tp_group[0].dep.target.module
            if i in keep:
                self.left_alone.setdefault(names[root], why)
                continue
            ops, producers, norms = [], [], []
            for item in tp_group:
                module = item.dep.target.module
                if isinstance(module, nn.Parameter) and module in params:
                    # a parameter no layer owns (layer scale): cut along its channel dim
                    dim = int(item.dep.target.pruning_dim)
                    self.parameters[params[module]] = dim % module.dim()
                    ops.append(PruneOp(params[module], ParameterCut(dim), True,
                                       np.asarray(item.idxs, dtype=np.int64),
                                       np.asarray(item.root_idxs, dtype=np.int64)))
                    continue
                if module not in names:  # add/concat/flatten nodes carry no parameters
                    continue
                is_out = _is_out_fn(dg, item.dep.handler)
                handler = item.dep.handler
                if is_grouped(module) and not is_out:
                    handler = prune_grouped_in
                ops.append(PruneOp(names[module], handler, is_out,
                                   np.asarray(item.idxs, dtype=np.int64),
                                   np.asarray(item.root_idxs, dtype=np.int64)))
                if is_out and isinstance(module, (nn.Conv2d, nn.Linear)):
                    producers.append(names[module])
                if is_out and isinstance(module, nn.modules.batchnorm._BatchNorm):
                    norms.append(names[module])
            shape = shapes.get(root, ())
            stage = "x".join(map(str, shape[2:])) if len(shape) > 2 else "linear"
            name = names[root]
            groups.append(ChannelGroup(name, len(tp_group[0].idxs), stage, tuple(producers),
                                       tuple(norms), tuple(ops)))
            self.dependency_groups[name] = tp_group
        for name, why in (exclude or {}).items():  # found unprunable (see `prunability`)
            self.left_alone[name] = why
            self.dependency_groups.pop(name, None)
        self.exclude = dict(exclude or {})
        self.groups: tuple[ChannelGroup, ...] = tuple(g for g in groups
                                                      if g.name not in self.exclude)
        self._by_name = {g.name: g for g in self.groups}
        self.sizes = {g.name: g.size for g in self.groups}
        self.conv_blocks = self._conv_blocks(dict(model.named_modules()))

    def _conv_blocks(self, modules: dict[str, nn.Module]) -> tuple[ConvBlocks, ...]:
        """Every grouped conv side, with the prunable channels of each of its conv groups."""
        members: dict[tuple[str, bool], list[tuple[int, str, int]]] = defaultdict(list)
        for g in self.groups:
            for op in g.ops:
                if op.module in modules and is_grouped(modules[op.module]):
                    members[(op.module, op.out_channels)] += [
                        (int(i), g.name, int(c)) for i, c in zip(op.idxs, op.root_idxs)]
        return tuple(conv_blocks(name, modules[name], out, m)  # type: ignore[arg-type]
                     for (name, out), m in members.items())

    def conform(self, plan: Plan, scores: dict[str, np.ndarray]) -> Plan:
        """`plan` made valid for every grouped conv (equal channels per conv group),
        dropping the lowest-`scores` channels where counts differ; see `grouped.conform`."""
        return conform(plan, scores, self.sizes, self.conv_blocks)

    def __getitem__(self, name: str) -> ChannelGroup:
        return self._by_name[name]

    def __iter__(self) -> Any:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getstate__(self) -> dict[str, Any]:
        # The traced graph holds autograd nodes and live modules: keep it on this process.
        state = self.__dict__.copy()
        state["dependency_groups"] = {}
        return state

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def in_model_order(self, model: nn.Module) -> list[str]:
        """Group names in the order of their first producer in `model` (the order users
        give per-group rates in)."""
        position = {name: i for i, (name, _) in enumerate(model.named_modules())}
        return sorted(self.names, key=lambda g: min(position[p] for p in self[g].producers))

    def removals(self, plan: Plan
                 ) -> dict[tuple[str, bool], tuple[Callable[..., Any], np.ndarray]]:
        """(module, is-output-dim) -> (pruning fn, sorted original indices to remove)."""
        pending: dict[tuple[str, bool], list[np.ndarray]] = defaultdict(list)
        handlers: dict[tuple[str, bool], Callable[..., Any]] = {}
        for group in self.groups:
            kept = plan.kept.get(group.name)
            if kept is None or len(kept) == group.size:
                continue
            for op in group.ops:
                drop = op.idxs[~np.isin(op.root_idxs, kept)]
                if drop.size:
                    pending[(op.module, op.out_channels)].append(drop)
                    handlers[(op.module, op.out_channels)] = op.handler
        # A concat consumer's input channels come from several groups: remove them in one
        # call, in original coordinates, so no group's indices shift under another's.
        return {key: (handlers[key], np.unique(np.concatenate(chunks)))
                for key, chunks in pending.items()}


def classifier_layers(model: nn.Module, example_input: torch.Tensor) -> list[nn.Module]:
    """The layers whose output channels are the model's output (see `GroupMap`)."""
    modules = dict(model.named_modules())
    return [modules[name] for name in GroupMap(model, example_input).classifier]


def apply_plan(base: nn.Module, group_map: GroupMap, plan: Plan, *, keep: str = "select",
               fuse_temperature: float = 5.0, inplace: bool = False) -> nn.Module:
    """Return a physically smaller copy of `base` that keeps `plan`'s channels.

    Under `keep="select"` the kept filters' weights are the originals, bit for bit.
    Under `keep="fuse"` each group's producing convs get DCFF fused filters first (one
    fusion per group over mean-normalised distances; groups with a grouped, depthwise or
    linear producer are selected).
    """
    if keep not in ("select", "fuse"):
        raise ValueError(f"keep: must be 'select' or 'fuse', got {keep!r}")
    unknown = set(plan.kept) - set(group_map.names)
    if unknown:
        raise ValueError(f"plan: unknown groups {sorted(unknown)}")
    for name, kept in plan.kept.items():
        if len(kept) == 0:
            raise ValueError(f"plan: group {name!r} keeps no channel")
        if kept.min() < 0 or kept.max() >= group_map[name].size:
            raise ValueError(f"plan: group {name!r} has indices outside "
                             f"[0, {group_map[name].size})")
    side = unequal(plan, group_map.sizes, group_map.conv_blocks)
    if side is not None:
        raise ValueError(f"plan: grouped conv {side.module!r} would keep unequal "
                         f"{'output' if side.out_channels else 'input'} channels per conv "
                         f"group; make it valid with GroupMap.conform")
    model = base if inplace else copy.deepcopy(base)
    modules = dict(model.named_modules())
    removals = group_map.removals(plan)

    def cut(out_channels: bool) -> None:
        for (module, out), (handler, idxs) in removals.items():
            if out != out_channels:
                continue
            if isinstance(handler, ParameterCut):
                handler(model, module, idxs.tolist())
            else:
                handler(modules[module], idxs.tolist())

    cut(False)  # inputs first: a fused filter is fused over the inputs it keeps, as DCFF's
    if keep == "fuse":
        with torch.no_grad():
            for name, kept in plan.kept.items():
                layers = [modules[p] for p in group_map[name].producers]
                if not all(isinstance(m, nn.Conv2d) and m.groups == 1 for m in layers):
                    continue
                rows = [m.weight.flatten(1) for m in layers]
                fusion = fusion_matrix(torch.cat(rows, 1), kept, fuse_temperature, "mean")
                for m, r in zip(layers, rows):
                    fused = (fusion.to(r.dtype) @ r).view(len(kept), *m.weight.shape[1:])
                    m.weight[torch.as_tensor(kept)] = fused
    cut(True)
    return model
