"""Workarounds for faults in native CPU kernels that blendprune's pruned shapes reach.

Pruning produces layer widths no hand-designed network has (a 4-channel input to a
strided 1x1 shortcut, say), and with them kernel paths that vendors rarely test. Each
guard here names the fault it avoids and has a standalone reproduction under
`tests/native/`; remove a guard only when that reproduction passes without it on every
pinned torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["training_guards", "unit_stride_pointwise"]


def _strided_pointwise(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
            and module.stride != (1, 1) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


def _unit_stride_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    ph, pw = cast(tuple[int, int], self.padding)  # str padding is never patched
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    sh, sw = self.stride
    fused = getattr(self, "fused", None)  # a FusedConv2d computes its weight
    weight, bias = fused() if fused is not None else (self.weight, self.bias)
    return F.conv2d(x[..., ::sh, ::sw], weight, bias, 1, 0, 1, self.groups)


@contextmanager
def unit_stride_pointwise(model: nn.Module) -> Iterator[None]:
    """Within the block, every strided 1x1 `Conv2d` of `model` runs as subsample +
    unit-stride 1x1: the same convolution, without oneDNN's faulty path.

    oneDNN (3.12, in torch 2.14.1) backs strided 1x1 convolutions with a "reduce to unit
    stride" copy into a scratch buffer. In backward-weights with a channels-last input, its
    x64 1x1 kernels offset into that buffer by `ic_block` floats per pixel while sizing it
    at `ic` floats per pixel, so whenever fewer than `ic_block` (8 on AVX2, 16 on AVX-512)
    input channels remain, it writes past the buffer: heap corruption with one thread,
    hangs or wrong gradients with several (uxlfoundation/oneDNN#6035). A 1x1 kernel reads
    only every stride-th pixel, so taking those pixels first is the same convolution, and
    oneDNN then needs no scratch copy at all. Only those modules' `forward` is replaced
    (for the block), so every other operation runs at full speed.
    """
    patched = [m for m in model.modules() if _strided_pointwise(m)]
    for m in patched:
        m.forward = MethodType(_unit_stride_forward, m)
    try:
        yield
    finally:
        for m in patched:
            vars(m).pop("forward", None)


@contextmanager
def training_guards(model: nn.Module) -> Iterator[None]:
    """Every guard that forward/backward passes of `model` on its device need; enter it
    around training (anything that calls backward)."""
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cpu":
        yield
        return
    with unit_stride_pointwise(model):
        yield
