"""The DCFF paper's published CIFAR-10 pruning rates (github.com/lmbxmu/DCFF README), as
per-group rates of a blendprune model: VGG-16's thirteen convs; ResNet-56's 27
block-internal convs (its residual stream is not pruned)."""

from __future__ import annotations

from torch import nn

from .surgery import GroupMap

__all__ = ["PUBLISHED", "published_rates"]

_VGG16 = [0.5] * 2 + [0.4] * 2 + [0.35] * 3 + [0.85] * 6
_RESNET56 = ([0.7] * 2 + [0.5] * 3 + [0.3] * 2 + [0.4] + [0.8]
             + [0.7] * 2 + [0.8] * 4 + [0.4] + [0.2] * 2
             + [0.7] + [0.3] + [0.8] + [0.4] * 2 + [0.7] + [0.3] + [0.4] + [0.8])


def _vgg16(convs: list[str]) -> dict[str, float]:
    if len(convs) != len(_VGG16):
        raise ValueError(f"dcff.preset: vgg16 has {len(_VGG16)} rates; this model has "
                         f"{len(convs)} conv channel groups")
    return dict(zip(convs, _VGG16))


def _resnet56(convs: list[str]) -> dict[str, float]:
    internal = [g for g in convs if g.endswith(".conv1") and g.startswith("layer")]
    if len(internal) != len(_RESNET56):
        raise ValueError(f"dcff.preset: resnet56 has {len(_RESNET56)} block rates; this "
                         f"model has {len(internal)} blocks")
    return dict(zip(internal, _RESNET56))


PUBLISHED = {"vgg16": _vgg16, "resnet56": _resnet56}


def published_rates(name: str, model: nn.Module, group_map: GroupMap) -> dict[str, float]:
    """Rate per channel group of `model` from the paper's list `name`; every group the
    list does not name stays whole (rate 0). ValueError names `dcff.preset` when the
    model does not have the list's layers."""
    order = group_map.in_model_order(model)
    modules = dict(model.named_modules())
    convs = [g for g in order
             if all(isinstance(modules[p], nn.Conv2d) for p in group_map[g].producers)]
    return {**dict.fromkeys(order, 0.0), **PUBLISHED[name](convs)}
