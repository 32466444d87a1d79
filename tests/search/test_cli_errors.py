"""Bad input: exit 2 (or 1 for an unreachable tracking server), one line naming the field,
and nothing written anywhere."""

import os

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


CASES = {
    "malformed yaml": (["search", "bad.yaml"], "bad.yaml is not valid YAML"),
    "unknown key": (["search", "--set", "search.popsize=8"], "search.popsize: unknown key"),
    "unknown arch": (["search", "--set", "model.arch=resnet21"],
                     "model.arch: unknown arch 'resnet21'"),
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
    "unknown preset": (["search", "cifar11"], "preset: unknown preset 'cifar11'"),
    "bad set syntax": (["search", "--set", "search.workers"], "--set: expected key=value"),
    "unknown run": (["front", "runs/nowhere"], "run: 'runs/nowhere' is not a blendprune run"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_and_writes_nothing(case, clean_cwd, capsys, resnet32_checkpoint):
    argv, message = CASES[case]
    argv = [a.replace("CKPT", resnet32_checkpoint) for a in argv]
    message = message.replace("CKPT", resnet32_checkpoint)
    if case == "malformed yaml":
        (clean_cwd / "bad.yaml").write_text("search: {population: 8\n")
    before = set(os.listdir(clean_cwd))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert set(os.listdir(clean_cwd)) == before  # no mlflow.db, no runs/


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
