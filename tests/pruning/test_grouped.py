"""Grouped convolutions, depthwise-separable blocks and layer scales, on small nets whose
widths are checked by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from pruning import CostModel, GroupMap, Plan, apply_plan, count_cost, prune


class DenseIntoGrouped(nn.Module):
    """stem -> two branches concatenated -> grouped conv (2 conv groups) -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=2, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.a(x), self.b(x)], 1)  # conv group 0 reads a, conv group 1 b
        x = torch.relu(self.bn(self.grouped(x)))
        return self.fc(x.mean((2, 3)))


def _net():
    torch.manual_seed(0)
    return DenseIntoGrouped().eval(), torch.randn(2, 3, 8, 8)


def test_concatenation_into_a_grouped_conv_keeps_equal_channels_per_conv_group():
    model, x = _net()
    gm = GroupMap(model, x)
    assert sorted(gm.names) == ["a.0", "b.0", "grouped", "stem.0"]
    # a keeps 6, b keeps 3: the grouped conv would read 6 + 3 -> both keep the mean, 5:
    # a drops its worst, b takes back its two best
    scores = {g: np.arange(gm[g].size, dtype=float) for g in gm.names}
    plan = Plan({"stem.0": np.arange(8), "a.0": np.arange(2, 8), "b.0": np.array([0, 5, 7]),
                 "grouped": np.arange(16)})
    with pytest.raises(ValueError, match="grouped conv 'grouped' would keep unequal input"):
        apply_plan(model, gm, plan)
    fixed = gm.conform(plan, scores)
    assert fixed.kept["a.0"].tolist() == [3, 4, 5, 6, 7]
    assert fixed.kept["b.0"].tolist() == [0, 4, 5, 6, 7]
    pruned = apply_plan(model, gm, fixed)
    assert pruned.grouped.weight.shape == (16, 5, 3, 3) and pruned.grouped.groups == 2
    assert pruned.grouped.in_channels == 10 and pruned(x).shape == (2, 10)
    assert CostModel(model, gm, x).predict(fixed) == count_cost(pruned, x)


def test_grouped_inputs_are_cut_conv_group_by_conv_group():
    # Cutting a's channel 1 and b's channel 6 (inputs 1 and 14 of the grouped conv, so
    # positions 1 and 6 of its two conv groups) must equal zeroing those two channels.
    model, x = _net()
    gm = GroupMap(model, x)
    plan = Plan({"a.0": np.array([0, 2, 3, 4, 5, 6, 7]),
                 "b.0": np.array([0, 1, 2, 3, 4, 5, 7])})
    pruned = apply_plan(model, gm, plan)
    zeroed = apply_plan(model, gm, Plan({}))
    with torch.no_grad():
        zeroed.a[1].weight[1] = 0.0
        zeroed.a[1].bias[1] = 0.0
        zeroed.b[1].weight[6] = 0.0
        zeroed.b[1].bias[6] = 0.0
        torch.testing.assert_close(pruned(x), zeroed(x))


def test_a_grouped_conv_output_kept_in_one_conv_group_is_equalised_by_score():
    model, x = _net()
    with torch.no_grad():
        model.grouped.weight[:8] *= 100  # every top-8 output by L1 is in conv group 0
    pruned, report = prune(model, x, ratio=0.5)
    # 8 / 0 per conv group -> each keeps the mean, 4: its four best by L1
    assert report.pruned["grouped"] == (16, 8)
    l1 = model.grouped.weight.detach().abs().sum((1, 2, 3))
    best = [sorted(l1[:8].argsort(descending=True)[:4].tolist()),
            sorted((8 + l1[8:].argsort(descending=True)[:4]).tolist())]
    assert report.plan.kept["grouped"].tolist() == best[0] + best[1]
    assert pruned.grouped.weight.shape == (8, 4, 3, 3) and pruned(x).shape == (2, 10)
    assert report.flops[1] < report.flops[0]


class Separable(nn.Module):
    """MobileNet's depthwise-separable block, with a layer scale that no layer owns."""

    def __init__(self) -> None:
        super().__init__()
        self.pw1 = nn.Conv2d(3, 12, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.scale = nn.Parameter(torch.ones(12, 1, 1))
        self.pw2 = nn.Conv2d(12, 6, 1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.pw1(x)))
        x = torch.relu(self.bn2(self.dw(x))) * self.scale
        return self.fc(self.pw2(x).mean((2, 3)))


def test_depthwise_separable_block_with_a_layer_scale():
    torch.manual_seed(0)
    model, x = Separable().eval(), torch.randn(2, 3, 8, 8)
    pruned, report = prune(model, x, ratio=0.5)
    # pw1, bn1, dw, bn2 and the scale are one channel group (named after its root, dw)
    assert report.pruned == {"dw": (12, 6), "pw2": (6, 3)}
    assert pruned.dw.weight.shape == (6, 1, 3, 3) and pruned.dw.groups == 6
    assert pruned.scale.shape == (6, 1, 1) and pruned.pw2.weight.shape == (3, 6, 1, 1)
    assert pruned(x).shape == (2, 5)
    assert CostModel(model, report.group_map, x).predict(report.plan) == count_cost(pruned, x)
    assert report.params == (count_cost(model, x)[1], count_cost(pruned, x)[1])
