"""oneDNN#6035 (strided 1x1 backward-weights writes past its scratch buffer) and the guard
that keeps blendprune's training off that path."""

import contextlib
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from pruning.kernel_guards import training_guards, unit_stride_pointwise

from ..helpers import REPO

SCRIPT = REPO / "tests" / "native" / "onednn_pointwise_stride.py"


def _run(env, *args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, timeout=300,
                          env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True)


def test_fault_still_reproduces_on_the_pinned_torch(onednn_env):
    runs = [_run(onednn_env) for _ in range(3)]
    assert any(r.returncode != 0 for r in runs), (
        f"oneDNN#6035 no longer reproduces on torch {torch.__version__}: if that holds for "
        "every pinned torch, unit_stride_pointwise can go")
    crashed = next(r for r in runs if r.returncode != 0)
    assert crashed.returncode < 0 or "Fatal Python error" in crashed.stderr, crashed.stderr


def test_guard_avoids_the_fault(onednn_env):
    for _ in range(3):
        r = _run(onednn_env, "--guard")
        assert r.returncode == 0 and "no fault" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize("stride,padding,groups,shape", [
    (2, 0, 1, (3, 4, 8, 8)),       # the pruned ResNet shortcut
    ((2, 1), 1, 1, (2, 6, 7, 5)),  # odd sizes, asymmetric stride, padding
    (3, 0, 2, (2, 4, 9, 9)),       # grouped
    (2, 0, 1, (4, 8, 8)),          # unbatched input
])
def test_guard_computes_the_same_convolution(stride, padding, groups, shape):
    torch.manual_seed(0)
    conv = nn.Conv2d(shape[-3], 6, 1, stride=stride, padding=padding, groups=groups).double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    outs = []
    for guarded in (False, True):
        with unit_stride_pointwise(conv) if guarded else contextlib.nullcontext():
            y = conv(x)
        gy = torch.ones_like(y) * torch.arange(y.numel(), dtype=y.dtype).view_as(y).cos()
        outs.append((y.detach(), *torch.autograd.grad(y, (x, conv.weight, conv.bias), gy)))
    for ref, got in zip(*outs):
        assert ref.shape == got.shape
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert "forward" not in vars(conv)  # the module is itself again after the block


def test_guard_patches_only_strided_pointwise_convs_and_only_on_cpu():
    from pruning import create_model

    model = create_model("resnet20")
    with unit_stride_pointwise(model):
        patched = {n for n, m in model.named_modules() if "forward" in vars(m)}
    assert patched == {"layer2.0.shortcut.0", "layer3.0.shortcut.0"}
    with training_guards(model.to("meta")):
        assert not any("forward" in vars(m) for m in model.modules())
