"""Real models whose pruned shapes fail: ResNet-20 whose first conv, once pruning leaves it
under half its filters, asks the CPU allocator for 4 TiB (`memory_hungry_resnet20`) or
frees one heap block twice, so glibc aborts the process as it does on a corrupted heap
(`heap_corrupting_resnet20`). Importable by Ray workers as `tests.fault_models:<name>`."""

from __future__ import annotations

import ctypes

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


class DoubleFreeWhenPruned(AllocateWhenPruned):
    """Forward hook: a real double free on narrow layers ("free(): double free detected
    in tcache 2", then SIGABRT), the way a native kernel's out-of-bounds write ends."""

    def __call__(self, module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        if module.out_channels < self.width // 2:
            libc = ctypes.CDLL(None)
            libc.malloc.restype = ctypes.c_void_p
            block = ctypes.c_void_p(libc.malloc(64))
            libc.free(block)
            libc.free(block)


def _hooked_resnet20(hook: type[AllocateWhenPruned], num_classes: int, in_channels: int
                     ) -> nn.Module:
    model = create_model("resnet20", num_classes, in_channels)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(hook(conv.out_channels))
    return model


def memory_hungry_resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return _hooked_resnet20(AllocateWhenPruned, num_classes, in_channels)


def heap_corrupting_resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return _hooked_resnet20(DoubleFreeWhenPruned, num_classes, in_channels)
