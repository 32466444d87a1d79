"""`pruning.prune`: one call on any CNN, the classifier found by what it produces."""

import pytest
import torch
from torch import nn

from pruning import GroupMap, create_model, prune


class ConvClassifier(nn.Module):
    """SqueezeNet's head: the class scores come from a 1x1 conv, then pooling."""

    def __init__(self, classes: int = 7) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU())
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        return torch.relu(self.head(self.body(x))).mean((2, 3))


def test_a_conv_classifier_is_found_by_its_output_and_left_alone():
    torch.manual_seed(0)
    model, x = ConvClassifier().eval(), torch.randn(1, 3, 12, 12)
    pruned, report = prune(model, x, ratio=0.5)
    assert GroupMap(model, x).classifier == ["head"]
    assert pruned(x).shape == (1, 7)  # before: the head lost 3 of its 7 classes
    assert report.pruned == {"body.0": (16, 8), "body.2": (16, 8)}
    assert "head" in report.left_alone and "classifier" in report.left_alone["head"]
    assert "left alone: head (the classifier" in str(report)


def test_resnet_classifier_and_report_costs():
    model = create_model("resnet20", 10, 3).eval()
    x = torch.randn(1, 3, 32, 32)
    pruned, report = prune(model, x, ratio=0.5)
    assert GroupMap(model, x).classifier == ["fc"] and pruned.fc.out_features == 10
    assert report.flops[1] < 0.35 * report.flops[0] and report.params[1] < report.params[0]


def test_a_model_without_a_classifier_is_refused_and_ignored_overrides_the_default():
    x = torch.randn(1, 3, 12, 12)
    with pytest.raises(ValueError, match="no layer produces the output's channels"):
        GroupMap(nn.Sequential(nn.AvgPool2d(2), nn.Flatten()).eval(), x)
    model = ConvClassifier().eval()
    _, report = prune(model, x, ratio=0.5, ignored=[model.head, model.body[2]])
    assert report.left_alone == {"body.2": "ignored", "head": "ignored"}
    assert report.pruned == {"body.0": (16, 8)}


def test_ratio_or_plan_exactly_one():
    model = ConvClassifier().eval()
    with pytest.raises(ValueError, match="exactly one of ratio and plan"):
        prune(model, torch.randn(1, 3, 12, 12))


def test_a_model_that_fails_to_trace_is_named_in_one_line():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(nn.Conv2d(4, 8, 1)))

        def forward(self, x):
            return self.body(x).mean((2, 3))

    with pytest.raises(ValueError) as err:
        GroupMap(Broken().eval(), torch.randn(1, 3, 8, 8))
    message = str(err.value)
    assert message.startswith("model: tracing module 'body.1.0' fails (RuntimeError: ")
    assert "\n" not in message
