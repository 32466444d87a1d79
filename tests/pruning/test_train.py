import copy

import pytest
import torch

from pruning import (
    DivergedError,
    GroupMap,
    TensorLoader,
    adaptive_bn,
    apply_plan,
    evaluate,
    finetune,
)

from .test_surgery import random_plan


def loaders(base):
    kw = {"mean": base["mean"], "std": base["std"]}
    train = TensorLoader(*base["train"], batch_size=128, **kw)
    hold = TensorLoader(*base["holdout"], batch_size=512, shuffle=False, drop_last=False, **kw)
    test = TensorLoader(base["data"].x_test, base["data"].y_test, batch_size=512,
                        shuffle=False, drop_last=False, **kw)
    return train, hold, test


def test_base_recipe_reaches_97_percent_on_digits(digits_base):
    _, _, test = loaders(digits_base)
    assert evaluate(digits_base["model"], test)["accuracy"] >= 0.97


def test_adaptive_bn_raises_accuracy_of_half_pruned_model(digits_base):
    model = digits_base["model"]
    train, hold, _ = loaders(digits_base)
    gm = GroupMap(model, digits_base["train"][0][:1].float())
    pruned = apply_plan(model, gm, random_plan(gm, 0.5, seed=0))
    before = evaluate(pruned, hold)["accuracy"]
    assert adaptive_bn(pruned, train.batches(20)) == 20
    after = evaluate(pruned, hold)["accuracy"]
    assert after > before + 0.05, (before, after)


def test_finetune_improves_and_nan_is_diverged(digits_base):
    model = digits_base["model"]
    train, hold, _ = loaders(digits_base)
    gm = GroupMap(model, digits_base["train"][0][:1].float())
    pruned = apply_plan(model, gm, random_plan(gm, 0.6, seed=1))
    adaptive_bn(pruned, train.batches(10))
    before = evaluate(pruned, hold)["accuracy"]
    finetune(pruned, train.batches(30), 30, lr=0.02)
    assert evaluate(pruned, hold)["accuracy"] > before
    with pytest.raises(DivergedError):
        finetune(copy.deepcopy(pruned), train.batches(30), 30, lr=1e12)


def test_evaluate_counts_correct_predictions():
    class Const(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.tensor([[0.0, 1.0]]).expand(len(x), 2) + self.p

    y = torch.tensor([1, 1, 0, 1])
    assert evaluate(Const(), [(torch.zeros(4, 1), y)])["accuracy"] == 0.75


def test_training_interrupted_and_resumed_ends_where_an_uninterrupted_one_does(tmp_path):
    from pruning import create_model, load_dataset, train

    data = load_dataset("digits")
    mean, std = data.mean_std()
    x, y = data.x_train[:512], data.y_train[:512]

    def fresh():
        torch.manual_seed(0)
        return create_model("resnet20", data.num_classes, data.in_channels)

    def loader():
        return TensorLoader(x, y, batch_size=128, mean=mean, std=std, augment=True, pad=2)

    straight, losses = fresh(), {}
    out = train(straight, loader(), epochs=3, lr=0.1,
                on_epoch=lambda epoch, loss: losses.setdefault(epoch, loss))
    assert list(losses) == [1, 2, 3]
    assert out["loss"] == pytest.approx(sum(losses.values()) / 3)  # equal-sized epochs

    class Stop(Exception):
        pass

    def stop_after_first(epoch, loss):
        if epoch == 1:
            raise Stop

    ckpt = tmp_path / "train.pt"
    resumed = fresh()
    with pytest.raises(Stop):
        train(resumed, loader(), epochs=3, lr=0.1, on_epoch=stop_after_first, checkpoint=ckpt)
    resumed = fresh()  # a new process: only the checkpoint survives
    again: dict[int, float] = {}
    out = train(resumed, loader(), epochs=3, lr=0.1, checkpoint=ckpt,
                on_epoch=lambda epoch, loss: again.setdefault(epoch, loss))
    assert out["steps"] == 2 * 4  # two epochs of 512 / 128 batches were left
    assert again == pytest.approx({2: losses[2], 3: losses[3]})  # each epoch's own loss
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert train(resumed, loader(), epochs=3, lr=0.1, checkpoint=ckpt)["steps"] == 0
    with pytest.raises(ValueError, match="checkpoint: .*another training"):
        train(fresh(), loader(), epochs=4, lr=0.1, checkpoint=ckpt)
