"""The prunability report: a group a one-channel cut breaks is left whole, with its
reason, and the search runs on the rest."""

import json

import pytest
import torch
from torch import nn

from pruning import GroupMap
from pruning.prunability import prunability
from search.cli import main

from ..helpers import mlflow_runs


class FixedShift(nn.Module):
    """A custom layer with a fixed channel count that no dependency graph knows about."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("shift", torch.linspace(-1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift.view(1, -1, 1, 1)


def fixed_width_net(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8),
                         nn.ReLU(), FixedShift(8), nn.Conv2d(8, 16, 3, padding=1),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, num_classes))


def test_a_group_a_custom_layer_pins_is_reported_and_the_others_pass():
    model = fixed_width_net(10, 1).eval()
    x = torch.zeros(1, 1, 8, 8)
    report = prunability(model, GroupMap(model, x), x)
    assert report["4"] is None  # the second conv's 16 channels feed only the classifier
    assert report["0"] is not None and "RuntimeError" in report["0"]


@pytest.mark.slow
def test_the_search_leaves_the_group_whole_and_finishes(tmp_path, monkeypatch, capsys):
    from .test_end_to_end import FAST

    monkeypatch.setenv("BLENDPRUNE_CACHE", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["search", *FAST, "--set",
                 "model.arch=tests.search.test_prunability:fixed_width_net",
                 "--set", "constraints.max_flops_ratio=0.9", "--set", "final.top_k=0",
                 "--tracking-uri", uri, "--output-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "prunability: 1 of 2 channel groups prunable" in out and "left whole: 0 (" in out
    client, (parent,), children = mlflow_runs(uri)
    assert sum(c.info.status == "FINISHED" for c in children) == 16
    report = json.loads(open(client.download_artifacts(
        parent.info.run_id, "criteria/prunability.json")).read())
    assert report["left_alone"]["0"].startswith("not prunable: RuntimeError")
    assert all(set(json.loads(open(client.download_artifacts(
        c.info.run_id, "candidate.json")).read())["plan"]) == {"4"} for c in children[:3])
