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


def test_distillation_loss_matches_the_hand_computed_value():
    from pruning import Distill

    class Teacher(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[2.0, 0.0]]).expand(len(x), 2)

    x, student = torch.zeros(3, 1), torch.zeros(3, 2)
    # T = 2: teacher softmax([1, 0]) = (0.7311, 0.2689) against uniform; KL = 0.11101,
    # times T^2 = 0.44403; weight 0.25 on it and 0.75 on a hard loss of 1.0
    loss = Distill(Teacher(), 0.25, temperature=2.0).loss(x, student, torch.tensor(1.0))
    assert loss.item() == pytest.approx(0.75 + 0.25 * 0.44403, abs=1e-4)


def test_distillation_pulls_a_pruned_student_towards_its_teacher(digits_base):
    from pruning import Distill

    model = digits_base["model"]
    train, hold, _ = loaders(digits_base)
    gm = GroupMap(model, digits_base["train"][0][:1].float())
    pruned = apply_plan(model, gm, random_plan(gm, 0.6, seed=1))
    adaptive_bn(pruned, train.batches(10))

    def gap(student):  # mean KL(teacher || student) on the holdout
        student.eval()
        with torch.no_grad():
            return sum(torch.nn.functional.kl_div(
                torch.log_softmax(student(x), 1), torch.log_softmax(model(x), 1),
                reduction="sum", log_target=True).item() for x, _ in hold)

    plain, taught = copy.deepcopy(pruned), copy.deepcopy(pruned)
    finetune(plain, train.batches(100), 100, lr=0.02)
    finetune(taught, train.batches(100), 100, lr=0.02, distill=Distill(model.eval(), 0.5))
    assert gap(taught) < 0.8 * gap(plain), (gap(taught), gap(plain))  # measured 26 vs 45
