"""Workarounds for faults in native CPU kernels that blendprune's pruned shapes reach.

Pruning produces layer widths no hand-designed network has (a 4-channel input to a
strided 1x1 shortcut, say), and with them kernel paths that vendors rarely test. Each
guard here names the fault it avoids and has a standalone reproduction under
`tests/native/`; remove a guard only when that reproduction passes without it on every
pinned torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["UnitStridePointwise", "training_guards"]

_CONV2D: tuple[Callable[..., Any], ...] = (F.conv2d, torch.conv2d)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[-1])


class UnitStridePointwise(TorchFunctionMode):
    """Compute every strided 1x1 convolution on CPU as subsample + unit-stride 1x1.

    oneDNN (3.12, in torch 2.14.1) backs strided 1x1 convolutions with a "reduce to unit
    stride" copy into a scratch buffer. In backward-weights with a channels-last input, its
    x64 1x1 kernels offset into that buffer by `ic_block` floats per pixel while sizing it
    at `ic` floats per pixel, so whenever fewer than `ic_block` (8 on AVX2, 16 on AVX-512)
    input channels remain, it writes past the buffer: heap corruption with one thread,
    hangs or wrong gradients with several (uxlfoundation/oneDNN#6035). A 1x1 kernel reads
    only every stride-th pixel, so taking those pixels first is the same convolution, and
    oneDNN then needs no scratch copy at all.
    """

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func not in _CONV2D:
            return func(*args, **kwargs)
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        bound = dict(zip(names, args), **kwargs)
        x, weight = bound["input"], bound["weight"]
        stride = _pair(bound.get("stride", 1))
        padding = bound.get("padding", 0)
        if (x.device.type != "cpu" or tuple(weight.shape[-2:]) != (1, 1) or stride == (1, 1)
                or isinstance(padding, str)):
            return func(*args, **kwargs)
        ph, pw = _pair(padding)
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        sh, sw = stride
        return func(x[..., ::sh, ::sw], weight, bound.get("bias"), 1, 0, 1,
                    bound.get("groups", 1))


@contextmanager
def training_guards(device: torch.device) -> Iterator[None]:
    """Every guard that forward/backward passes on `device` need; enter around training."""
    if device.type != "cpu":
        yield
        return
    with UnitStridePointwise():
        yield
