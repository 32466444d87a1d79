import pytest
import torch

from pruning import count_cost, create_model, list_models, load_checkpoint


def test_reference_costs_within_three_percent():
    x = torch.randn(1, 3, 32, 32)
    flops, params = count_cost(create_model("resnet56"), x)
    assert abs(flops / 125e6 - 1) < 0.03 and abs(params / 0.85e6 - 1) < 0.03
    flops, _ = count_cost(create_model("vgg16"), x)
    assert abs(flops / 313e6 - 1) < 0.03


@pytest.mark.parametrize("arch", ["resnet20", "resnet32", "vgg19", "resnet18"])
def test_registered_models_run_on_gray_input(arch):
    m = create_model(arch, num_classes=7, in_channels=1).eval()
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert arch in list_models()


def test_module_function_arch():
    m = create_model("torch.nn:Identity")
    assert isinstance(m, torch.nn.Identity)


def test_unknown_arch_is_named():
    with pytest.raises(ValueError, match="model.arch: unknown arch 'resnet21'"):
        create_model("resnet21")
    with pytest.raises(ValueError, match="model.arch: cannot import"):
        create_model("no_such_module:f")


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    a = create_model("resnet20")
    path = tmp_path / "m.pt"
    torch.save(a.state_dict(), path)
    b = load_checkpoint(create_model("resnet20"), str(path))
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    with pytest.raises(ValueError, match="model.checkpoint: .* does not match the arch"):
        load_checkpoint(create_model("resnet32"), str(path))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.checkpoint: cannot read"):
        load_checkpoint(create_model("resnet20"), str(path))
    with pytest.raises(ValueError, match="model.checkpoint: file not found"):
        load_checkpoint(a, str(tmp_path / "missing.pt"))
