"""Model registry: CIFAR-style ResNets and VGGs, torchvision nets, and any `module:function`.

The CIFAR ResNets use 1x1-conv shortcuts (option B) rather than zero padding so that
every residual add is visible to torch-pruning's dependency graph; the extra 1x1 convs
cost ~0.3% of ResNet-56's FLOPs.
"""

from __future__ import annotations

import pickle
from typing import Callable, cast

import torch
from torch import nn

from .registry import Registry

__all__ = ["create_model", "get_model", "list_models", "load_checkpoint", "register_model"]

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("arch", "model.arch")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register `fn(num_classes, in_channels) -> nn.Module` under `name`."""
    return MODELS.register(name)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)


def get_model(name: str) -> ModelFactory:
    """The factory registered as `name`, or the function a `module:function` names."""
    return MODELS.get(name)


def create_model(arch: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build `arch`: a registered name or `package.module:function`.

    A `module:function` is called with `num_classes` and `in_channels` when it accepts
    them, else with no arguments.
    """
    fn = get_model(arch)
    if arch in MODELS:
        return fn(num_classes=num_classes, in_channels=in_channels)
    try:
        model = fn(num_classes=num_classes, in_channels=in_channels)
    except TypeError:
        model = fn()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model.arch: {arch!r} returned {type(model).__name__}, not a Module")
    return model


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        y: torch.Tensor = self.relu(out + self.shortcut(x))
        return y


class CifarResNet(nn.Module):
    """He et al. 2016 CIFAR ResNet-(6n+2): three stages of 16/32/64 channels."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each block: each block starts as identity, which
        # makes short from-scratch training (the digits default) converge much faster.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        y: torch.Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return y


_VGG_CFG = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512],
}


class CifarVGG(nn.Module):
    """VGG with BatchNorm in the CIFAR layout of HRank/DCFF (313.7M FLOPs, 15.0M params)."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in _VGG_CFG[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v),
                           nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(c, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.classifier(torch.flatten(self.pool(self.features(x)), 1))
        return y


def _set_stem(model: nn.Module, attr_path: str, in_channels: int) -> nn.Module:
    """Swap the first conv of a torchvision net when the data is not RGB."""
    if in_channels == 3:
        return model
    parent = model
    *path, last = attr_path.split(".")
    for p in path:
        parent = getattr(parent, p)
    old = getattr(parent, last)
    assert isinstance(old, nn.Conv2d)
    setattr(parent, last, nn.Conv2d(in_channels, old.out_channels,
                                    cast(tuple[int, int], old.kernel_size),
                                    cast(tuple[int, int], old.stride),
                                    cast("str | tuple[int, int]", old.padding),
                                    bias=old.bias is not None))
    return model


def _register_cifar() -> None:
    for depth in (20, 32, 56, 110):
        register_model(f"resnet{depth}")(
            lambda num_classes=10, in_channels=3, _d=depth: CifarResNet(_d, num_classes,
                                                                        in_channels))
    for depth in (16, 19):
        register_model(f"vgg{depth}")(
            lambda num_classes=10, in_channels=3, _d=depth: CifarVGG(_d, num_classes,
                                                                     in_channels))


def _register_torchvision() -> None:
    def make(fn_name: str, stem: str) -> ModelFactory:
        def build(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
            # Imported on use: torchvision's import costs each worker process about a second.
            from torchvision import models as tvm

            return _set_stem(getattr(tvm, fn_name)(num_classes=num_classes), stem, in_channels)

        return build

    register_model("resnet18")(make("resnet18", "conv1"))
    register_model("resnet50")(make("resnet50", "conv1"))
    register_model("mobilenet_v2")(make("mobilenet_v2", "features.0.0"))


_register_cifar()
_register_torchvision()


def load_checkpoint(model: nn.Module, path: str) -> nn.Module:
    """Load a state dict (weights_only) into `model`, naming the file on any mismatch."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"model.checkpoint: file not found: {path}") from None
    except pickle.UnpicklingError:  # weights_only refused an object: never run its code
        raise ValueError(f"model.checkpoint: {path} holds pickled Python objects, not only "
                         "tensors; refused (checkpoints load with weights_only=True)") from None
    except Exception as exc:  # truncated/corrupt files raise a zoo of pickle/zip errors
        reason = str(exc).splitlines()[0].split(". ")[0]
        raise ValueError(f"model.checkpoint: cannot read {path} ({reason})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"model.checkpoint: {path} does not hold a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0:2]
        raise ValueError(
            f"model.checkpoint: {path} does not match the arch ({' '.join(first)})"
        ) from None
    return model
