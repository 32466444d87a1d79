"""Standalone reproduction of uxlfoundation/oneDNN#6035 as blendprune's pruned nets hit it.

The backward-weights pass of a strided 1x1 convolution over a channels-last input with
fewer input channels than the kernel's block (8 on AVX2, 16 on AVX-512) writes past its
scratch buffer. The first case is a pruned ResNet-20 shortcut on digits (4 of 16 channels
kept, 8x8 input); it faults under the AVX2 kernel. The second keeps 12 of 16 channels at
64x64 and faults under the AVX-512 kernel too. With glibc's heap checks on:

    MALLOC_CHECK_=3 ONEDNN_MAX_CPU_ISA=AVX2 python tests/native/onednn_pointwise_stride.py
    MALLOC_CHECK_=3 python tests/native/onednn_pointwise_stride.py   # on an AVX-512 CPU

dies of SIGABRT ("corrupted size vs. prev_size", "corrupted double-linked list", ...) or
SIGSEGV on torch 2.14.1 (oneDNN 3.12). With `--guard` the convolutions run under
blendprune's `unit_stride_pointwise` and the script prints "no fault".
"""

import contextlib
import sys

import torch
from torch import nn

CASES = [(128, 4, 6, 8), (32, 12, 16, 64)]  # batch, in channels, out channels, input size

torch.set_num_threads(1)
for n, c_in, c_out, size in CASES:
    conv = nn.Conv2d(c_in, c_out, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
    guard = contextlib.nullcontext()
    if "--guard" in sys.argv:
        from pruning.kernel_guards import unit_stride_pointwise

        guard = unit_stride_pointwise(conv)
    with guard:
        for _ in range(20):
            x = torch.randn(n, c_in, size, size).contiguous(memory_format=torch.channels_last)
            conv(x).sum().backward()
print("no fault")
