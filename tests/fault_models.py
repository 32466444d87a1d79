"""A real model whose pruned shapes exhaust memory: ResNet-20 whose first conv asks the
CPU allocator for 4 TiB once pruning leaves it under half its filters. Importable by Ray
workers as `tests.fault_models:memory_hungry_resnet20`."""

from __future__ import annotations

import torch
from torch import nn

from pruning import create_model


class AllocateWhenPruned:
    """Forward hook: a real allocation the machine cannot satisfy, on narrow layers."""

    def __init__(self, width: int) -> None:
        self.width = width

    def __call__(self, module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        if module.out_channels < self.width // 2:
            torch.empty(1 << 42, dtype=torch.uint8)


def memory_hungry_resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    model = create_model("resnet20", num_classes, in_channels)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(AllocateWhenPruned(conv.out_channels))
    return model
