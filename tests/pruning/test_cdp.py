"""CDP/DTC's acceptance checks (seed-methods.md §2)."""

import math

import numpy as np
import pytest
import torch

from pruning import CDP, CostModel, GroupMap, SkeletonConv2d, count_cost, create_model, train
from pruning.cdp import dtc_thresholds, scratch_init, texture_similarity


def _setup(arch, target=0.5, sparse_steps=6, **kw):
    torch.manual_seed(0)
    base = create_model(arch, 10, 3).eval()
    for m in base.modules():  # no zero-initialised BN scale cutting a block's gradient
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    x = torch.randn(4, 3, 16, 16)
    gm = GroupMap(base, x[:2])
    cdp = CDP(base, gm, CostModel(base, gm, x[:2]), target_flops_ratio=target,
              sparse_steps=sparse_steps, lr=0.05, **kw)
    return base, cdp, x


def test_an_all_ones_skeleton_is_the_plain_model_and_folding_is_exact():
    base, cdp, x = _setup("resnet20")
    assert len(cdp.convs) == 21 and all(isinstance(c, SkeletonConv2d)
                                        for c in cdp.convs.values())
    with torch.no_grad():
        torch.testing.assert_close(cdp.model.eval()(x), base(x), rtol=0, atol=0)
        for c in cdp.convs.values():  # any skeleton: W * S folded into one conv
            c.skeleton.uniform_(-1, 1)
        compact = cdp.to_compact().eval()  # nothing dead: the same architecture
        assert not any(isinstance(m, SkeletonConv2d) for m in compact.modules())
        torch.testing.assert_close(compact(x), cdp.model(x), rtol=1e-5, atol=1e-5)


def test_equal_skeleton_norms_give_the_base_threshold_and_weaker_filters_a_higher_one():
    s = torch.ones(4, 3, 3)
    torch.testing.assert_close(dtc_thresholds(s, 0.01), torch.full((4,), 0.01))
    s[1] *= 0.5  # norms 9, 4.5, 9, 9: mean 7.875
    tau = dtc_thresholds(s, 0.01)
    assert tau[1].item() == pytest.approx(0.01 * 7.875 / 4.5)
    assert tau[0].item() == pytest.approx(0.01 * 7.875 / 9)


def test_texture_similarity_is_one_half_zero_with_finite_gradients():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    sim = texture_similarity(a, b)
    torch.testing.assert_close(sim.detach(), torch.tensor([1.0, 0.5, 0.0]), atol=1e-3,
                               rtol=0)
    sim.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_r_prop_is_twice_the_l1_term_when_the_similarity_is_unchanged():
    _, cdp, _ = _setup("resnet20", prop=1e-3, r_prop="intended")
    for c in cdp.convs.values():
        torch.nn.init.uniform_(c.skeleton, 0.1, 1.0)
    l1 = sum(c.skeleton.abs().sum() for c in cdp.convs.values()).item()
    first = cdp.penalty().item()  # no previous step: the code's 2 prop |S|_1
    second = cdp.penalty().item()  # Sim_t == Sim_t-1: 1 + 1
    assert first == pytest.approx(2e-3 * l1, rel=1e-5)
    assert second == pytest.approx(2e-3 * l1, rel=1e-5)
    with torch.no_grad():  # the similarity changes: the weights move off 2
        for c in cdp.convs.values():
            c.skeleton[::2].mul_(-1)
    assert cdp.penalty().item() > 2e-3 * l1 * 1.01


def test_after_an_update_survivors_exceed_their_threshold_and_masked_entries_are_zero():
    _, cdp, x = _setup("resnet20", target=0.2, sparse_steps=1000, delta=0.3)
    conv = cdp.convs["layer1.0.conv1"]
    with torch.no_grad():
        conv.skeleton.uniform_(0, 1)
    tau = dtc_thresholds(conv.skeleton * conv.mask, 0.3)
    before = conv.skeleton.detach().clone()
    loss = cdp.model.train()(x).square().mean() + cdp.penalty()
    loss.backward()
    cdp.after_backward(0)
    kept = conv.mask
    assert 0 < int(kept.sum()) < kept.numel()
    assert bool((before[kept] > tau.view(-1, 1, 1).expand_as(before)[kept]).all())
    assert bool((conv.skeleton[~kept] == 0).all()) and bool((conv.skeleton.grad[~kept] == 0)
                                                              .all())


@pytest.mark.parametrize("arch", ["resnet20", "vgg16"])
def test_training_meets_the_target_and_removing_dead_channels_changes_nothing(arch):
    base, cdp, x = _setup(arch, target=0.5, sparse_steps=8, prop=1e-3)
    y = torch.randint(0, 10, (4,))
    train(cdp.model, [(x, y)] * 4, epochs=3, lr=0.05, warmup_epochs=0.0, hooks=cdp)
    ratio = cdp.flops_ratio()
    assert cdp.frozen and 0.48 <= ratio <= 0.5
    dead = {n: d for n, d in cdp.dead.items() if d.any()}
    assert dead, "nothing died"
    modules = dict(cdp.model.named_modules())
    for g in cdp.groups:  # a dead channel's norms output nothing
        for norm, idxs, channels in g.norms:
            m = modules[norm]
            sel = torch.as_tensor(idxs[cdp.dead[g.name][channels]])
            assert bool((m.weight[sel] == 0).all()) and bool((m.bias[sel] == 0).all())
    compact = cdp.to_compact().eval()
    with torch.no_grad():
        torch.testing.assert_close(compact(x.contiguous()), cdp.model.eval()(x),
                                   rtol=1e-4, atol=1e-4)
    flops, params = count_cost(compact, x[:2])
    base_flops, base_params = count_cost(base, x[:2])
    assert flops / base_flops == pytest.approx(ratio) and params < base_params


def test_channel_strength_is_the_folded_l1_over_its_layer_mean_averaged_over_producers():
    _, cdp, _ = _setup("resnet20")
    stream = max(cdp.groups, key=lambda g: len(g.producers))  # a residual stream
    assert len(stream.producers) > 2
    rel = {}
    for p in stream.producers:
        l1 = cdp.convs[p.name].weight.detach().abs().sum((1, 2, 3))
        rel[p.name] = (l1 / l1.mean()).numpy()
    by_hand = np.array([np.mean([rel[p.name][f] for p in stream.producers
                                 for f, c in zip(p.filters, p.channels) if c == ch])
                        for ch in range(stream.size)])
    np.testing.assert_allclose(cdp._strength(stream), by_hand, rtol=1e-6)
    with torch.no_grad():  # a filter's scale is moot under BN: so is the strength
        cdp.convs[stream.producers[0].name].weight.mul_(100)
    np.testing.assert_allclose(cdp._strength(stream), by_hand, rtol=1e-5)


class _Killed(Exception):
    pass


def test_a_resumed_training_keeps_the_masks_and_the_controller(tmp_path):
    y = torch.randint(0, 10, (4,))
    runs = []
    for kill in (False, True):
        _, cdp, x = _setup("resnet20", target=0.5, sparse_steps=12, prop=1e-3, adapt_every=2)
        batches = [(x, y)] * 4
        path = tmp_path / f"{kill}.pt"
        if kill:  # stopped right after epoch 2's checkpoint, then a fresh process resumes
            def stop(epoch, loss):
                if epoch == 2:
                    assert 0 < cdp.killed["cut"] and not cdp.frozen
                    raise _Killed

            with pytest.raises(_Killed):
                train(cdp.model, batches, epochs=4, lr=0.05, hooks=cdp, checkpoint=path,
                      on_epoch=stop)
            _, cdp, x = _setup("resnet20", target=0.5, sparse_steps=12, prop=1e-3, adapt_every=2)
        train(cdp.model, batches, epochs=4, lr=0.05, hooks=cdp, checkpoint=path)
        runs.append(cdp)
    a, b = runs
    assert a.killed["cut"] > 0
    assert a.prop == pytest.approx(b.prop) and a.killed == b.killed and a.frozen == b.frozen
    assert all(np.array_equal(a.dead[n], b.dead[n]) for n in a.dead)
    assert all(torch.equal(a.convs[n].mask, b.convs[n].mask) for n in a.convs)


def test_bad_hyperparameters_name_the_field():
    with pytest.raises(ValueError, match="cdp.delta"):
        _setup("resnet20", delta=-0.1)
    with pytest.raises(ValueError, match="cdp.target_flops_ratio"):
        _setup("resnet20", target=1.5)
    assert math.isfinite(_setup("resnet20", target=1.0)[1].flops_ratio())


def test_scratch_init_halves_every_bn_scale_and_touches_nothing_else():
    model = create_model("resnet20", 10, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scratch_init(model)
    scales = [k for k in before if k.endswith(".weight") and before[k].dim() == 1]
    assert len(scales) == 21  # the stem, two per basic block, two projection shortcuts
    for k, v in model.state_dict().items():
        expected = torch.full_like(before[k], 0.5) if k in scales else before[k]
        assert torch.equal(v, expected), k
