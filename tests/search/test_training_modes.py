"""`blendprune train --method dcff|cdp` on digits: trains, tracks every epoch in MLflow,
exports a loadable compact model, and resumes in the same run after a SIGKILL; a search's
final stage and a front member train by either mode."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search.cli import main

from ..helpers import mlflow_runs

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


# per mode: the metrics it logs every epoch besides loss and holdout accuracy
EPOCH_METRICS = {"dcff": ["temperature", "kept_changed"],
                 "cdp": ["flops_ratio_live", "dead_channels", "channels_cut", "prop",
                         "penalty_l1"],
                 "lapp": ["flops_ratio_live", "loss_flops", "threshold/layer1.0.conv1",
                          "width/layer1.0.conv1"]}


@pytest.mark.parametrize("mode", ["dcff", "cdp", "lapp"])
def test_a_mode_trains_tracks_exports_and_resumes_after_a_kill(mode, tmp_path, monkeypatch,
                                                                capsys):
    monkeypatch.setenv("BLENDPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["train", "--method", mode, "--set", "base_training.epochs=12",
            "--set", f"{mode}.epochs=3", "--set", f"output_dir={tmp_path / 'runs'}",
            "--tracking-uri", uri]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(["unshare", "--fork", "--kill-child", "--pid", "--mount-proc",
                             sys.executable, "-m", "search.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    seen = []
    for line in proc.stdout:  # killed right after its first epoch
        seen.append(line)
        if "epoch 1/3" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert any("epoch 1/3" in line for line in seen), "".join(seen)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{mode}: resuming" in out and "epoch 1/3" not in out and "epoch 3/3" in out
    client, runs, _ = mlflow_runs(uri, role="train")
    (run,) = runs
    for key in ["loss", "holdout_accuracy", *EPOCH_METRICS[mode]]:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [1, 2, 3], key
    # DCFF: the uniform rate meeting 0.5; CDP: trained down to it, within 2%
    assert 0.48 <= run.data.metrics["flops_ratio"] <= 0.5
    from pruning import load_pruned

    model, meta = load_pruned(Path(client.download_artifacts(run.info.run_id,
                                                             f"{mode}/model.pt")))
    assert model.eval()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert meta["extra"]["method"] == mode
    if mode == "lapp":  # the widths by layer and epoch, plotted
        assert "lapp/widths.png" in [a.path for a in client.list_artifacts(run.info.run_id,
                                                                            "lapp")]


@pytest.mark.parametrize("mode", ["dcff", "cdp", "lapp"])
def test_a_search_finishes_with_a_mode_and_a_front_member_trains_from_the_run(
        mode, tmp_path, monkeypatch, capsys):
    from .test_end_to_end import FAST

    monkeypatch.setenv("BLENDPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["search", *FAST, "--set", f"final.method={mode}", "--tracking-uri", uri,
                 "--output-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert f"after 1 epochs of {mode}" in out
    (folder,) = (tmp_path / "runs").iterdir()
    front = json.loads((folder / "pareto" / "front.json").read_text())["front"]
    member = max(front, key=lambda r: r["accuracy"])
    assert main(["train", "--method", mode, "--from", str(folder), "--rank", "0",
                 "--set", f"{mode}.epochs=1", "--tracking-uri", uri]) == 0
    client, runs, _ = mlflow_runs(uri, role="train")
    (run,) = runs
    if mode == "dcff":  # DCFF keeps the member's channel counts: the same FLOPs
        assert run.data.metrics["flops"] == member["flops"]
    else:  # CDP and LAPP train their own channels to the member's FLOPs ratio
        ratio = member["flops_ratio"]
        assert ratio - 0.02 <= run.data.metrics["flops_ratio"] <= ratio + 1e-9
    assert main(["train", "--method", mode, "--from", str(folder), "--rank", "99"]) == 2
    assert "--rank: 99 is not on the front" in capsys.readouterr().err


@pytest.mark.parametrize("preset, arch, pruned", [("vgg16", "vgg16", 13),
                                                  ("resnet56", "resnet56", 27)])
def test_published_presets_map_onto_the_models_conv_groups(preset, arch, pruned):
    from pruning import GroupMap, create_model
    from search.config import load_config
    from search.dcff_mode import plan_rates

    cfg = load_config(None, [f"model.arch={arch}", f"dcff.preset={preset}"])
    model = create_model(arch, 10, 3).eval()
    x = torch.randn(1, 3, 32, 32)
    gm = GroupMap(model, x)
    rates = plan_rates(cfg, model, gm)
    assert sorted(rates) == sorted(gm.names) and sum(r > 0 for r in rates.values()) == pruned


def test_a_lapp_plan_seeds_the_first_generation_of_a_search(tmp_path, monkeypatch):
    from .test_end_to_end import FAST

    monkeypatch.setenv("BLENDPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["train", "--method", "lapp", "--set", "lapp.epochs=3",
                 "--set", "lapp.target_flops_ratio=0.5", "--set", "base_training.epochs=12",
                 "--set", f"output_dir={tmp_path / 'lapp'}", "--out", str(tmp_path / "lapp.pt"),
                 "--tracking-uri", uri]) == 0
    assert main(["search", *FAST, "--set", f"search.seed_plans=[{tmp_path / 'lapp.pt'}]",
                 "--tracking-uri", uri, "--output-dir", str(tmp_path / "runs")]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    from search.rundir import RunDir

    records = RunDir(folder).records()
    assert sum(r["result"]["status"] == "ok" for r in records) == 16
    (seeded,) = [r for r in records if r["seed"] == "plan:lapp.pt"]
    from pruning import load_pruned

    _, meta = load_pruned(tmp_path / "lapp.pt")
    learnt = {g: len(k) for g, k in meta["plan"].items()}
    got = {g: len(k) for g, k in seeded["result"]["plan"].items()}
    # the LAPP widths, repaired onto the budget (0.6 of the FLOPs) by one shift: each
    # group keeps at least LAPP's width
    assert all(got[g] >= learnt[g] for g in learnt)
