import numpy as np
import pytest
import torch
from torch import nn

from pruning import (
    CostModel,
    GroupMap,
    Plan,
    apply_plan,
    count_cost,
    create_model,
    decode_plan,
    fusion_matrix,
    list_models,
    ratio_slots,
)


def random_plan(gm: GroupMap, ratio: float, seed: int = 0) -> Plan:
    rng = np.random.default_rng(seed)
    blended = {g.name: rng.random(g.size) for g in gm}
    _, slot_of = ratio_slots(list(gm), "stage")
    n_slots = max(slot_of) + 1
    return decode_plan(blended, [ratio] * n_slots, slot_of, min_channels=2)


# ImageNet-style nets downsample 32x: give them room.
INPUT = {"resnet18": (1, 3, 64, 64), "resnet50": (1, 3, 64, 64), "mobilenet_v2": (1, 3, 64, 64)}


@pytest.mark.parametrize("arch", list_models())
def test_pruned_model_runs_is_smaller_and_matches_prediction(arch):
    """The contract of every registered model: builds, runs, prunes at 50%, and the
    predicted cost of the plan is the counted cost of the pruned model."""
    shape, ratio = INPUT.get(arch, (1, 3, 32, 32)), 0.5
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10).eval()
    x = torch.randn(*shape)
    gm = GroupMap(model, x)
    plan = random_plan(gm, ratio)
    pruned = apply_plan(model, gm, plan)
    out = pruned(x)
    assert out.shape == (1, 10)
    flops, params = count_cost(pruned, x)
    base_flops, base_params = count_cost(model, x)
    assert flops < 0.8 * base_flops and params < base_params
    assert CostModel(model, gm, x).predict(plan) == (flops, params)
    assert count_cost(model, x) == (base_flops, base_params)  # base untouched


def test_kept_weights_equal_originals_and_residual_widths_match():
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    gm = GroupMap(model, x)
    plan = random_plan(gm, 0.5, seed=1)
    pruned = apply_plan(model, gm, plan)
    kept_in = plan.kept[gm.names[0]] if gm.names[0] == "conv1" else plan.kept["conv1"]
    # layer1.0.conv1: outputs from its own group, inputs from the stem's residual group
    own = plan.kept["layer1.0.conv1"]
    torch.testing.assert_close(pruned.layer1[0].conv1.weight,
                               model.layer1[0].conv1.weight[own][:, kept_in], rtol=0, atol=0)
    widths = {pruned.conv1.out_channels, *(b.conv2.out_channels for b in pruned.layer1)}
    assert widths == {len(kept_in)}
    for layer in (pruned.layer2, pruned.layer3):
        assert len({b.conv2.out_channels for b in layer}) == 1


def test_depthwise_convs_keep_input_equal_output():
    model = create_model("mobilenet_v2", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    gm = GroupMap(model, x)
    pruned = apply_plan(model, gm, random_plan(gm, 0.5))
    for m in pruned.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels


def test_fuse_three_filters():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).view(3, 2, 1, 1)
    flat = w.flatten(1)
    fused = (fusion_matrix(flat, [0, 2], 1.0, "mean").float() @ flat).view(2, 2, 1, 1)
    d = torch.cdist(flat, flat)
    d = d / (d.sum() / 6)
    p = torch.softmax(-d[[0, 2]], dim=1)
    expected = (p @ flat).view(2, 2, 1, 1)
    torch.testing.assert_close(fused, expected)
    # hand check of row 0: distances 0, sqrt2, 1; mean off-diagonal distance (sqrt2 + 2)/3
    m = (2 ** 0.5 + 2) / 3
    e = torch.exp(-torch.tensor([0.0, 2 ** 0.5 / m, 1 / m]))
    e = e / e.sum()
    torch.testing.assert_close(fused[0].flatten(), e @ flat)


def test_apply_plan_fuse_changes_kept_filters_select_does_not():
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    gm = GroupMap(model, x)
    plan = random_plan(gm, 0.5)
    own = torch.as_tensor(plan.kept["layer1.0.conv1"])
    sel = apply_plan(model, gm, plan, keep="select")
    fus = apply_plan(model, gm, plan, keep="fuse")
    assert not torch.equal(fus.layer1[0].conv1.weight, sel.layer1[0].conv1.weight)
    assert fus(x).shape == sel(x).shape == (1, 10)
    assert own.numel() == sel.layer1[0].conv1.out_channels


def test_bad_plans_are_rejected():
    model = create_model("resnet20").eval()
    gm = GroupMap(model, torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="keeps no channel"):
        apply_plan(model, gm, Plan({"conv1": np.array([], dtype=int)}))
    with pytest.raises(ValueError, match="unknown groups"):
        apply_plan(model, gm, Plan({"nope": np.array([0])}))
    with pytest.raises(ValueError, match="keep"):
        apply_plan(model, gm, Plan({}), keep="merge")


def test_group_map_survives_pickling_for_decoding():
    import pickle

    model = create_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    gm = GroupMap(model, x)
    gm2 = pickle.loads(pickle.dumps(gm))
    plan = random_plan(gm, 0.5)
    assert gm2.names == gm.names
    a, b = apply_plan(model, gm2, plan), apply_plan(model, gm, plan)
    assert count_cost(a, x) == count_cost(b, x)
