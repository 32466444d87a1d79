"""DCFF's acceptance checks (seed-methods.md §1)."""

import numpy as np
import pytest
import torch

from pruning import DCFF, FusedConv2d, GroupMap, apply_plan, create_model, fusion_matrix
from pruning.criteria import FPGMCriterion, get_criterion
from pruning.dcff import start_temperature, temperature
from pruning.fusion import kl_importance

from .test_surgery import random_plan


def test_temperature_schedule_end_points_and_published_values():
    ts = [temperature(e, 300) for e in range(301)]
    assert ts[0] == pytest.approx(1.0) and ts[-1] == pytest.approx(1e4)
    assert all(b >= a for a, b in zip(ts, ts[1:])) and ts[30] > ts[20] > ts[10]
    assert ts[1] == pytest.approx(4622, abs=1) and ts[5] == pytest.approx(9866, abs=1)
    short = [temperature(e, 4) for e in range(5)]  # a short schedule still ends at T_end
    assert short[0] == pytest.approx(1.0) and short[-1] == pytest.approx(1e4)


def test_fusion_is_selection_at_high_temperature_and_the_mean_at_zero():
    torch.manual_seed(0)
    rows = torch.randn(6, 5, dtype=torch.float64)
    kept = [1, 4]
    torch.testing.assert_close(fusion_matrix(rows, kept, 1e6) @ rows, rows[kept])
    mean = rows.mean(0, keepdim=True).expand(2, -1)
    torch.testing.assert_close(fusion_matrix(rows, kept, 0.0) @ rows, mean)


def test_exact_kl_ranks_as_fpgm_at_high_temperature():
    torch.manual_seed(1)
    rows = torch.randn(12, 9, dtype=torch.float64)
    criterion = get_criterion("fpgm")  # the registered one
    assert isinstance(criterion, FPGMCriterion)
    fpgm = criterion.score_filters(rows)
    kl = kl_importance(rows, 1e3)
    assert torch.isfinite(kl).all()
    assert torch.argsort(kl).tolist() == torch.argsort(fpgm).tolist()
    assert not torch.isfinite(kl_importance(rows, 1e3, exact=False)).all()  # the official


def _setup(arch, seed=0):
    torch.manual_seed(seed)
    base = create_model(arch, 10, 3).eval()
    for m in base.modules():  # no zero-initialised BN scale cutting a block's gradient
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    x = torch.randn(2, 3, 32, 32)
    gm = GroupMap(base, x)
    return base, gm, random_plan(gm, 0.5, seed=seed), x


@pytest.mark.parametrize("arch", ["resnet20", "resnet56", "vgg16"])
def test_compact_and_one_shot_fused_models_compute_what_the_fused_model_does(arch):
    base, gm, plan, x = _setup(arch)
    dcff = DCFF(base, gm, plan, epochs=10, distance="mean")
    assert any(isinstance(m, FusedConv2d) for m in dcff.model.modules())
    dcff.fuse(5.0)  # its epoch-0 kept sets, at apply_plan's fuse temperature
    with torch.no_grad():
        fused = dcff.model.eval()(x)
        one_shot = apply_plan(base, gm, dcff.kept_plan(), keep="fuse", fuse_temperature=5.0)(x)
        torch.testing.assert_close(fused, one_shot, atol=1e-5, rtol=1e-5)
        dcff.begin_epoch(3)
        torch.testing.assert_close(dcff.to_compact().eval()(x), dcff.model.eval()(x),
                                   atol=1e-5, rtol=1e-5)
    compact = dcff.to_compact()
    assert not any(isinstance(m, FusedConv2d) for m in compact.modules())
    shapes = [p.shape for p in apply_plan(base, gm, dcff.kept_plan()).parameters()]
    assert [p.shape for p in compact.parameters()] == shapes


def test_the_start_is_dcffs_own_epoch_0_pick_so_a_trained_base_survives():
    base, gm, plan, x = _setup("resnet20")
    dcff = DCFF(base, gm, plan, epochs=4, t_start=1e6)  # T(0) high: fusion is selection
    dcff.begin_epoch(0)
    assert sum(dcff.churn.values()) == 0  # nothing re-chosen: the layers after agree
    assert dcff.kept_plan().counts() == plan.counts()
    assert any(not np.array_equal(g.kept, plan.kept[g.name]) for g in dcff.groups)
    with torch.no_grad():  # the same function as plain pruning on those picks
        torch.testing.assert_close(dcff.model.eval()(x),
                                   apply_plan(base, gm, dcff.kept_plan()).eval()(x),
                                   atol=1e-5, rtol=1e-5)


def _perturbed_epochs(dcff, epochs):
    kept = []
    for e in range(epochs):
        dcff.begin_epoch(e)
        kept.append({g.name: g.kept.tolist() for g in dcff.groups})
        with torch.no_grad():  # stands in for an epoch of training moving the filters
            for m in dcff.model.modules():
                if isinstance(m, FusedConv2d):
                    m.bank.add_(torch.randn_like(m.bank))
    return kept


def test_freeze_nonfinite_keeps_the_epoch_0_set_every_epoch_rechooses():
    base, gm, plan, _ = _setup("resnet20")
    frozen = _perturbed_epochs(DCFF(base, gm, plan, 4, score_update="freeze_nonfinite"), 4)
    assert all(k == frozen[0] for k in frozen[1:])
    moving = _perturbed_epochs(DCFF(base, gm, plan, 4), 4)
    assert any(k != moving[0] for k in moving[1:])


def test_unselected_bank_rows_get_no_gradient_when_the_fusion_is_one_hot():
    base, gm, plan, x = _setup("resnet20")
    dcff = DCFF(base, gm, plan, epochs=2)
    dcff.fuse(1e6)
    dcff.model.train()(x).square().sum().backward()
    for group in dcff.groups:
        conv = dcff.model.get_submodule(group.producers[0])
        grads = conv.bank.grad.flatten(1).abs().sum(1)
        dropped = np.setdiff1d(np.arange(len(grads)), group.kept)
        assert (grads[dropped] == 0).all() and (grads[group.kept] > 0).all()


def test_start_temperature_gives_each_filter_the_share_of_its_own_weight():
    rows = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    t = start_temperature([rows], share=0.5)
    own = torch.softmax(-t * torch.cdist(rows, rows), 1).diagonal()
    assert own.median().item() == pytest.approx(0.5, abs=1e-6)
    # by hand: row 0 has the median own weight 1 / (1 + x + x^3), x = e^-t; 0.5 at
    # x + x^3 = 1, x ~ 0.6823, t ~ 0.3822
    assert t == pytest.approx(0.3822, abs=1e-3)
