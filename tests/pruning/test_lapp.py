"""LAPP's acceptance checks (seed-methods.md §3)."""

import numpy as np
import pytest
import torch

from pruning import CostModel, GroupMap, Plan, create_model, load_pruned, save_pruned, train
from pruning.lapp import LAPP, BypassConv2d, Bypassed, flops_target


def _setup(arch="resnet20", target=0.5, **kw):
    torch.manual_seed(0)
    base = create_model(arch, 10, 3).eval()
    for m in base.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.2, 1.5)
    x = torch.randn(4, 3, 16, 16)
    gm = GroupMap(base, x[:2])
    cost = CostModel(base, gm, x[:2])
    return base, LAPP(base, gm, cost, target_flops_ratio=target, prune_steps=8, **kw), x


def test_the_target_falls_cubically_from_one_to_the_target():
    assert flops_target(0.0, 0.4) == 1.0 and flops_target(1.0, 0.4) == pytest.approx(0.4)
    assert flops_target(0.5, 0.4) == pytest.approx(0.4 + 0.6 * 0.125)
    assert flops_target(2.0, 0.4) == pytest.approx(0.4)


@pytest.mark.parametrize("arch", ["resnet20", "vgg16", "mobilenet_v2"])
def test_soft_flops_equal_the_cost_model_for_binary_masks(arch):
    torch.manual_seed(1)
    base = create_model(arch, 10, 3).eval()
    x = torch.randn(1, 3, 32, 32)
    gm = GroupMap(base, x)
    cost = CostModel(base, gm, x)
    rng = np.random.default_rng(0)
    for _ in range(3):
        keep = {}
        for g in gm:
            m = rng.random(g.size) < rng.uniform(0.2, 1.0)
            m[rng.integers(g.size)] = True
            keep[g.name] = m
        plan = gm.conform(Plan({n: np.flatnonzero(m) for n, m in keep.items()}),
                          {g.name: np.zeros(g.size) for g in gm})
        weights = {n: torch.as_tensor(np.isin(np.arange(gm[n].size), k), dtype=torch.float64)
                   for n, k in plan.kept.items()}
        assert float(cost.soft_flops(weights)) == cost.predict(plan)[0]


def test_the_flops_loss_and_its_gradient_are_zero_once_the_target_is_met():
    _, lapp, x = _setup(target=0.5)
    lapp.step = lapp.prune_steps  # the target has fallen to 0.5
    first = lapp.groups[0].name
    with torch.no_grad():
        for name, t in lapp.thresholds.items():
            t.fill_(0.0)
        assert lapp.flops_ratio() > 0.5
    loss = lapp.penalty()
    loss.backward()
    assert loss.item() > 0 and lapp.thresholds[first].grad is not None
    with torch.no_grad():
        for t in lapp.thresholds.values():
            t.fill_(0.9)
            t.grad = None
        assert lapp.flops_ratio() <= 0.5
    loss = lapp.penalty()
    loss.backward()
    assert loss.item() == 0.0
    assert all(t.grad is None or float(t.grad.abs().max()) == 0.0
               for t in lapp.thresholds.values())


@pytest.mark.parametrize("stride", [1, 2])
def test_a_merged_bypass_computes_conv_plus_bypass(stride):
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(6, 8, 3, stride=stride, padding=1)
    by = BypassConv2d(conv)
    torch.nn.init.normal_(by.bypass.weight)
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        expect = conv(x) + by.bypass(x)
        torch.testing.assert_close(by(x), expect, atol=1e-5, rtol=0)
        torch.testing.assert_close(by.merged()(x), expect, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch, bypass", [("resnet20", "merge"), ("resnet20", "keep"),
                                          ("vgg16", "merge"), ("resnet20", "none")])
def test_training_freezes_at_the_target_and_the_compact_model_is_the_masked_one(arch, bypass,
                                                                               tmp_path):
    base, lapp, x = _setup(arch, target=0.4, bypass=bypass)
    assert any(isinstance(m, BypassConv2d) for m in lapp.model.modules()) == (bypass != "none")
    y = torch.randint(0, 10, (4,))
    train(lapp.model, [(x, y)] * 4, epochs=3, lr=0.05, warmup_epochs=0.0, hooks=lapp)
    assert lapp.frozen is not None and 0.38 <= lapp.flops_ratio() <= 0.4
    assert len(lapp.history_until(3)) == 3
    compact = lapp.to_compact().eval()
    assert any(isinstance(m, Bypassed) for m in compact.modules()) == (bypass == "keep")
    assert not any(isinstance(m, BypassConv2d) for m in compact.modules())
    with torch.no_grad():
        torch.testing.assert_close(compact(x.contiguous()), lapp.model.eval()(x),
                                   rtol=1e-4, atol=1e-4)
    kept = lapp.kept_plan()
    assert sum(len(k) for k in kept.kept.values()) < sum(g.size for g in lapp.groups)
    path = tmp_path / "m.pt"  # and it loads back as saved, kept bypasses included
    save_pruned(compact, path, arch=arch, plan=kept, num_classes=10,
                input_shape=(1, 3, 16, 16))
    loaded, _ = load_pruned(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x.contiguous()), compact(x.contiguous()),
                                   rtol=1e-5, atol=1e-5)


def test_no_group_falls_below_its_floor_however_low_the_target():
    _, lapp, x = _setup(target=0.05, max_ratio=0.75, min_channels=4)
    for g in lapp.groups:  # 16 -> 4, 32 -> 8, 64 -> 16 channels at least
        lapp.thresholds[g.name].data.fill_(1 - 1e-6)  # every score below its threshold
    assert {g.name: w for g, w in zip(lapp.groups, lapp.widths().values(), strict=True)} == {
        g.name: g.size // 4 for g in lapp.groups}
    lapp.freeze()
    assert all(int(lapp.frozen[g.name].sum()) >= g.size // 4 for g in lapp.groups)
    assert lapp.flops_ratio() > 0.05  # the floor wins over the target


def test_cost_balance_scales_each_groups_flops_gradient_by_its_channels_cost():
    grads = {}
    for balance in ("none", "cost"):
        _, lapp, x = _setup(target=0.3, balance=balance)
        lapp.step = lapp.prune_steps
        with torch.no_grad():
            for t in lapp.thresholds.values():
                t.fill_(0.6)  # channels either side, so every soft mask has a slope
        lapp.penalty().backward()
        grads[balance] = {n: float(t.grad) for n, t in lapp.thresholds.items()}
    scale = lapp.flops_grad_scale
    assert max(scale.values()) > 2 * min(scale.values())  # streams cost more per channel
    for name, g in grads["none"].items():
        assert g != 0.0 and grads["cost"][name] == pytest.approx(g * scale[name], rel=1e-5)
    full = Plan({g.name: np.arange(g.size) for g in lapp.groups})
    balanced = []  # one channel's FLOPs times its group's scale: the same for every group
    for g in lapp.groups:
        one_less = Plan({**full.kept, g.name: np.arange(1, g.size)})
        saved = lapp.cost.base_flops - lapp.cost.predict(one_less)[0]
        balanced.append(saved * scale[g.name])
    assert max(balanced) == pytest.approx(min(balanced), rel=0.05)


def test_group_balance_on_ranks_gives_every_threshold_the_same_flops_push():
    """With "group" each threshold's FLOPs gradient is the group's whole cost times its
    scale: equal across groups once every soft mask has the same slope (ranks, all
    thresholds at the same share)."""
    grads = {}
    for balance in ("none", "group"):
        _, lapp, _ = _setup(target=0.1, balance=balance, normalise="rank")
        lapp.step = lapp.prune_steps
        with torch.no_grad():
            for t in lapp.thresholds.values():
                t.fill_(0.5)
        lapp.penalty().backward()
        grads[balance] = [-float(t.grad) for t in lapp.thresholds.values()]
    assert min(grads["none"]) > 0 and min(grads["group"]) > 0  # raising every threshold
    assert max(grads["none"]) > 2 * min(grads["none"])  # unbalanced: streams pushed hardest
    assert max(grads["group"]) == pytest.approx(min(grads["group"]), rel=0.15)


def test_rank_scores_spread_each_group_evenly_and_a_threshold_is_the_share_pruned():
    _, lapp, _ = _setup(normalise="rank")
    g = lapp.groups[0]
    gamma, modules = torch.zeros(g.size), dict(lapp.model.named_modules())
    for norm, idxs, channels in g.norms:
        gamma.index_add_(0, channels, modules[norm].weight.detach()[idxs].abs())
    expected = torch.empty(g.size)
    expected[torch.argsort(gamma)] = torch.arange(1, g.size + 1, dtype=torch.float32)
    torch.testing.assert_close(lapp.scores(g), expected / (g.size + 1))
    with torch.no_grad():
        lapp.thresholds[g.name].fill_(0.5)
    assert int(lapp.hard()[g.name].sum()) == max(g.floor, g.size - (g.size + 1) // 2)


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="lapp.target_flops_ratio"):
        _setup(target=0.0)
    with pytest.raises(ValueError, match="lapp.bypass"):
        _setup(bypass="sometimes")
    with pytest.raises(ValueError, match="max_ratio"):
        _setup(max_ratio=1.0)
    with pytest.raises(ValueError, match="lapp.balance"):
        _setup(balance="fair")
    with pytest.raises(ValueError, match="lapp.normalise"):
        _setup(normalise="mean")


def test_a_fixed_criterion_keeps_each_groups_top_channels_by_that_criterion():
    base, _, x = _setup()
    gm = GroupMap(base, x[:2])
    rng = np.random.default_rng(3)
    scores = {g.name: rng.random(g.size) for g in gm}  # unrelated to the BN scales
    lapp = LAPP(base, gm, CostModel(base, gm, x[:2]), target_flops_ratio=0.5, prune_steps=8,
                scores=scores)
    y = torch.randint(0, 10, (4,))
    train(lapp.model, [(x, y)] * 4, epochs=3, lr=0.05, warmup_epochs=0.0, hooks=lapp)
    assert lapp.frozen is not None and 0.48 <= lapp.flops_ratio() <= 0.5
    pruned = 0
    for g in lapp.groups:
        kept = np.flatnonzero(lapp.frozen[g.name].cpu().numpy())
        assert set(kept) == set(np.argsort(-scores[g.name])[:len(kept)]), g.name
        pruned += len(kept) < g.size
    assert pruned >= 3
