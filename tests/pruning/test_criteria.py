import math

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from pruning import GroupMap, compute_scores, get_criterion, list_criteria

W = np.array([[1.0, 2.0], [-3.0, 0.0], [0.5, 0.5]])  # three 1x1 filters over 2 inputs
GAMMA = [0.5, -2.0, 1.0]


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(W).view(3, 2, 1, 1))
            self.bn.weight.copy_(torch.tensor(GAMMA))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.bn(self.conv(x))).mean((2, 3)))


def conv_group(model: Tiny):
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 2, 4, 4))
    return dg.get_pruning_group(model.conv, tp.prune_conv_out_channels, [0, 1, 2])


def test_registry_lists_every_design_criterion():
    expected = {"l1", "l2", "fpgm", "bn_gamma", "dcff_kl", "texture", "taylor", "hrank",
                "apoz", "act_mean", "random"}
    assert expected <= set(list_criteria())
    assert list_criteria("l*") == ["l1", "l2"]


@pytest.mark.parametrize("name", ["l1", "l2", "fpgm", "texture", "dcff_kl", "bn_gamma"])
def test_data_free_criteria_match_hand_computation(name):
    d = np.linalg.norm(W[:, None] - W[None], axis=2)
    mean_filter = W.mean(0)
    cos = W @ mean_filter / (np.linalg.norm(W, axis=1) * np.linalg.norm(mean_filter))
    dn = d / (d.sum() / 6)
    p = np.exp(-dn) / np.exp(-dn).sum(1, keepdims=True)
    kl = np.array([sum((p[j] * np.log(p[j] / p[k])).sum() for k in range(3)) for j in range(3)])
    expected = {
        "l1": [3.0, 3.0, 1.0],
        "l2": [math.sqrt(5), 3.0, math.sqrt(0.5)],
        "fpgm": [math.sqrt(20) + math.sqrt(2.5), math.sqrt(20) + math.sqrt(12.5),
                 math.sqrt(2.5) + math.sqrt(12.5)],
        "texture": np.arccos(cos) / math.pi,
        "dcff_kl": kl,
        "bn_gamma": [0.5, 2.0, 1.0],
    }[name]
    scores = get_criterion(name)(conv_group(Tiny()))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-6)


def test_unknown_criterion_is_named():
    with pytest.raises(ValueError, match="criteria.pool: unknown criterion 'l3'"):
        get_criterion("l3")


def test_random_criterion_repeats_under_seed():
    g = conv_group(Tiny())
    a, b = get_criterion("random", seed=3)(g), get_criterion("random", seed=3)(g)
    assert torch.equal(a, b) and not torch.equal(a, get_criterion("random", seed=4)(g))


def dead_channel_model() -> Tiny:
    """Channel 1 has a zero filter and BN shift -1: always zero after ReLU."""
    torch.manual_seed(0)
    m = Tiny()
    with torch.no_grad():
        m.conv.weight[1] = 0
        m.bn.bias.copy_(torch.tensor([0.5, -1.0, 0.5]))
    return m.eval()


@pytest.mark.parametrize("name", ["apoz", "act_mean", "hrank", "taylor"])
def test_always_zero_channel_scores_lowest(name):
    m = dead_channel_model()
    gm = GroupMap(m, torch.randn(1, 2, 4, 4))
    batches = [(torch.randn(8, 2, 4, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    table = compute_scores(m, gm, [name], batches)
    s = table.scores["conv"][name]
    assert s.shape == (3,)
    assert s[1] == s.min() and s[1] < min(s[0], s[2])
    if name != "taylor":
        assert s[1] == 0.0


def test_apoz_is_fraction_of_positive_activations():
    m = dead_channel_model()
    x = torch.randn(16, 2, 4, 4)
    with torch.no_grad():
        act = m.bn(m.conv(x))
    gm = GroupMap(m, x[:1])
    s = compute_scores(m, gm, ["apoz"], [(x, torch.zeros(16, dtype=torch.long))])
    expected = (act > 0).double().mean((0, 2, 3)).numpy()
    np.testing.assert_allclose(s.scores["conv"]["apoz"], expected)


def test_residual_group_scores_are_one_vector_per_group():
    from pruning import create_model

    m = create_model("resnet20").eval()
    gm = GroupMap(m, torch.randn(1, 3, 32, 32))
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
    table = compute_scores(m, gm, ["l1", "taylor", "hrank", "bn_gamma"], batches)
    for g in gm:
        for c in table.criteria:
            s = table.scores[g.name][c]
            assert s.shape == (g.size,) and np.all(np.isfinite(s))
    # Residual coupling: stage-one group spans the stem conv and both convs of each block.
    stem = gm["conv1"]
    assert {"conv1", "layer1.0.conv2", "layer1.2.conv2"} <= set(stem.producers)


@pytest.mark.parametrize("name", list_criteria())
def test_every_criterion_gives_one_finite_repeatable_score_per_channel(name):
    """The contract of every registered criterion, on a real residual net."""
    from pruning import create_model

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4).eval()
    x = torch.randn(16, 3, 16, 16)
    y = torch.arange(16) % 4
    gm = GroupMap(model, x[:1])

    def scores():
        torch.manual_seed(1)
        return compute_scores(model, gm, [name], [(x[:8], y[:8]), (x[8:], y[8:])])

    a, b = scores(), scores()
    for group in gm:
        s = a.scores[group.name][name]
        assert s.shape == (group.size,) and np.all(np.isfinite(s)), group.name
        assert np.array_equal(s, b.scores[group.name][name]), group.name
