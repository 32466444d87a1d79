"""Bad input: exit 2 (or 1 for an unreachable tracking server), one line naming the field,
and nothing written anywhere."""

import os

import numpy as np
import pytest
import torch

from pruning import create_model
from search.cli import main


@pytest.fixture
def clean_cwd(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("BLENDPRUNE_CACHE", str(tmp_path / "cache"))
    return work


@pytest.fixture(scope="module")
def resnet32_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "resnet32.pt"
    torch.save(create_model("resnet32", 10, 1).state_dict(), path)
    return str(path)


def broken_net(num_classes: int, in_channels: int) -> torch.nn.Module:
    """A user's model whose second conv expects the wrong width."""
    return torch.nn.Sequential(torch.nn.Conv2d(in_channels, 8, 3), torch.nn.Conv2d(4, 8, 1),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(8, num_classes))


class _RunsCode:
    """A pickled object that would create a file if its checkpoint were ever unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    torch.save(create_model("resnet20", 10, 1).state_dict(), d / "good.pt")
    raw = (d / "good.pt").read_bytes()
    (d / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    torch.save({"conv.weight": _RunsCode(str(d / "code-ran"))}, d / "objects.pt")
    x, y = np.zeros((40, 8, 8), np.uint8), np.zeros(40, np.int64)
    np.savez(d / "missing.npz", x_train=x, y_train=y, x_test=x)
    np.savez(d / "shape.npz", x_train=np.zeros((40, 5), np.uint8), y_train=y, x_test=x,
             y_test=y)
    np.savez(d / "labels.npz", x_train=x, y_train=y[:39], x_test=x, y_test=y)
    (d / "garbage.npz").write_bytes(b"this is not a zip archive")
    return d


NPZ = ["search", "--set", "data.dataset=npz", "--set"]
CASES = {
    "malformed yaml": (["search", "bad.yaml"], "bad.yaml is not valid YAML"),
    "unknown key": (["search", "--set", "search.popsize=8"], "search.popsize: unknown key"),
    "dcff rates count": (["train", "--method", "dcff", "--set", "dcff.rates=[0.5,0.5]"],
                         "dcff.rates: 2 rates for 12 channel groups"),
    "dcff rate range": (["train", "--method", "dcff", "--set", "dcff.rates=[0.5,1.2]"],
                        "dcff.rates: every rate must be in [0, 1), got 1.2"),
    "dcff preset": (["train", "--method", "dcff", "--set", "dcff.preset=vgg16"],
                    "dcff.preset: vgg16 has 13 rates; this model has 12 conv channel groups"),
    "cdp delta": (["train", "--method", "cdp", "--set", "cdp.delta=-0.1"],
                  "cdp.delta: Input should be greater than or equal to 0 (got -0.1)"),
    "cdp target": (["train", "--method", "cdp", "--set", "cdp.target_flops_ratio=1.5"],
                   "cdp.target_flops_ratio: Input should be less than or equal to 1 (got 1.5)"),
    "final method": (["search", "--set", "final.method=prune"],
                     "final.method: must be finetune or one of ['cdp', 'dcff', 'lapp'], got "
                     "'prune'"),
    "seed plan file": (["search", "--set", "search.seed_plans=[nothing.json]"],
                       "search.seed_plans: cannot read nothing.json"),
    "lapp target": (["train", "--method", "lapp", "--set", "lapp.target_flops_ratio=0"],
                    "lapp.target_flops_ratio: Input should be greater than 0 (got 0)"),
    "lapp criterion": (["train", "--method", "lapp", "--set", "lapp.criterion=l7"],
                       "lapp.criterion: unknown criterion 'l7'"),
    "unknown arch": (["search", "--set", "model.arch=resnet21"],
                     "model.arch: unknown arch 'resnet21'"),
    "untraceable model": (["search", "--set",
                           "model.arch=tests.search.test_cli_errors:broken_net"],
                          "does not run on digits images (1, 8, 8): model: tracing module "
                          "'1' fails (RuntimeError: "),
    "unknown criterion": (["search", "--set", "criteria.pool=[l1,l7]"],
                          "criteria.pool: unknown criterion 'l7'"),
    "ratio out of range": (["search", "--set", "genome.max_ratio=1.5"],
                           "genome.max_ratio: Input should be less than 1 (got 1.5)"),
    "population < 4": (["search", "--set", "search.population=2"],
                       "search.population: Input should be greater than or equal to 4 (got 2)"),
    "missing dataset root": (["search", "--set", "data.dataset=cifar10",
                              "--set", "data.root=/nonexistent/cifar"],
                             "data.root: '/nonexistent/cifar' does not exist"),
    "dataset needs root": (["search", "--set", "data.dataset=fashion-mnist"],
                           "data.root: dataset 'fashion-mnist' needs data.root"),
    "wrong checkpoint": (["search", "--set", "model.checkpoint=CKPT"],
                         "model.checkpoint: CKPT does not match the arch"),
    "non-numeric set": (["search", "--set", "evaluation.lr=fast"],
                        "evaluation.lr: Input should be a valid number"),
    "negative workers": (["search", "--set", "search.workers=-2"],
                         "search.workers: Input should be greater than or equal to 1 (got -2)"),
    "unreachable budget": (["search", "--set", "constraints.max_flops_ratio=0.001"],
                           "constraints.max_flops_ratio: 0.001 is below the smallest reachable"),
    "targets not ascending": (["search", "--set", "constraints.flops_targets=[0.5,0.3]"],
                              "constraints.flops_targets: must be ascending and distinct"),
    "target over budget": (["search", "--set", "constraints.max_flops_ratio=0.4",
                            "--set", "constraints.flops_targets=[0.3,0.5]"],
                           "constraints.flops_targets: every target must be in (0, "
                           "max_flops_ratio=0.4]"),
    "targets and range": (["search", "--set", "constraints.flops_targets=[0.3]",
                           "--set", "constraints.min_flops_ratio=0.2"],
                          "constraints.min_flops_ratio: give flops_targets or min_flops_ratio"),
    "halving elsewhere": (["search", "--set", "search.algorithm=random",
                           "--set", "search.halving=3"],
                          "search.halving: needs search.algorithm deap-nsga2 on executor "
                          "actors, not random on actors"),
    "unreachable target": (["search", "--set", "constraints.flops_targets=[0.001,0.5]"],
                           "constraints.flops_targets: 0.001 is below the smallest reachable"),
    "unknown preset": (["search", "cifar11"], "preset: unknown preset 'cifar11'"),
    "bad set syntax": (["search", "--set", "search.workers"], "--set: expected key=value"),
    "unknown run": (["front", "runs/nowhere"], "run: 'runs/nowhere' is not a blendprune run"),
    "truncated checkpoint": (["search", "--set", "model.checkpoint=BAD/truncated.pt"],
                             "model.checkpoint: cannot read BAD/truncated.pt (PytorchStream"),
    "checkpoint with objects": (["search", "--set", "model.checkpoint=BAD/objects.pt"],
                                "model.checkpoint: BAD/objects.pt holds pickled Python objects"),
    "npz missing key": (NPZ + ["data.root=BAD/missing.npz"],
                        "data.root: BAD/missing.npz lacks key 'y_test'"),
    "npz wrong shape": (NPZ + ["data.root=BAD/shape.npz"],
                        "data.root: BAD/shape.npz has image shape (40, 5)"),
    "npz label count": (NPZ + ["data.root=BAD/labels.npz"],
                        "data.root: BAD/labels.npz has 39 labels for 40 images"),
    "not an npz": (NPZ + ["data.root=BAD/garbage.npz"],
                   "data.root: cannot read BAD/garbage.npz as .npz"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_and_writes_nothing(case, clean_cwd, capsys, resnet32_checkpoint,
                                              bad_files):
    argv, message = CASES[case]
    fill = {"CKPT": resnet32_checkpoint, "BAD": str(bad_files)}
    for key, value in fill.items():
        argv = [a.replace(key, value) for a in argv]
        message = message.replace(key, value)
    if case == "malformed yaml":
        (clean_cwd / "bad.yaml").write_text("search: {population: 8\n")
    before = set(os.listdir(clean_cwd))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert set(os.listdir(clean_cwd)) == before  # no mlflow.db, no runs/
    assert not (bad_files / "code-ran").exists()  # weights_only never ran pickled code


def test_unreachable_tracking_uri_exits_1_before_compute(clean_cwd, capsys):
    assert main(["search", "--tracking-uri", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "tracking.uri: cannot reach http://127.0.0.1:9" in err
    assert os.listdir(clean_cwd) == []
    assert not (clean_cwd.parent / "cache" / "base").exists()  # no base model trained


def test_help_explains_every_command(capsys):
    for cmd in ("search", "resume", "train", "front", "export", "presets"):
        with pytest.raises(SystemExit) as ex:
            main([cmd, "--help"])
        assert ex.value.code == 0
        assert "usage: blendprune " + cmd in capsys.readouterr().out


def test_presets_lists_the_default(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") >= 7 and "digits" in out and "cifar10-resnet56" in out
