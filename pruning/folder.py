"""Image folders streamed from disk: torchvision's ImageFolder behind a seeded DataLoader.

ImageNet-scale data does not fit in memory, so `FolderSplit` holds only the folder and the
indices of its images; `FolderLoader` decodes them in DataLoader worker processes with the
standard ImageNet transforms (random-resized crop and flip for training, resize and centre
crop for evaluation) and normalises on the model's device. Every image's augmentation is
drawn from its own seed, so an epoch is a pure function of (seed, epoch) whatever the
number of workers: candidates still see the same batches (common random numbers).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:  # imported on use: torchvision's import costs each worker about a second
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

from .loader import Batch, Loader, TensorSplit

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "FolderLoader", "FolderSplit", "ImageFolderData"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@cache
def _scan(root: str) -> ImageFolder:
    """The folder's classes and files, listed once per process (a large folder takes a while)."""
    from torchvision.datasets import ImageFolder

    return ImageFolder(root)


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _transform(size: int, augment: bool, flip: bool) -> v2.Compose:
    from torchvision.transforms import v2

    if augment:
        steps: list[Any] = [v2.RandomResizedCrop(size, antialias=True)]
        if flip:
            steps.append(v2.RandomHorizontalFlip())
    else:  # the 0.875 crop of the ImageNet evaluation protocol (256 -> 224)
        steps = [v2.Resize(round(size / 0.875), antialias=True), v2.CenterCrop(size)]
    return v2.Compose([*steps, v2.PILToTensor()])


class _SeededImages(Dataset[tuple[torch.Tensor, int]]):
    """Item (i, seed): image i of the folder, transformed under its own random seed."""

    def __init__(self, root: str, transform: v2.Compose) -> None:
        self.root, self.transform = root, transform

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        folder = _scan(self.root)
        path, target = folder.samples[key[0]]
        image = folder.loader(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key[1])
            return self.transform(image), target


@dataclass(frozen=True)
class FolderSplit:
    """Some images of an `ImageFolder` (`root/<class>/<file>`), streamed at `image_size`."""

    root: str
    index: torch.Tensor  # positions in ImageFolder(root).samples
    targets: torch.Tensor  # their labels, int64
    image_size: int = 224
    workers: int = 0
    device: str = "cpu"

    @classmethod
    def of(cls, root: str, image_size: int = 224, workers: int | None = None) -> FolderSplit:
        folder = _scan(root)
        targets = torch.tensor(folder.targets, dtype=torch.int64)
        return cls(root, torch.arange(len(targets)), targets, image_size,
                   default_workers() if workers is None else workers)

    @property
    def labels(self) -> torch.Tensor:
        return self.targets

    @property
    def classes(self) -> list[str]:
        return list(_scan(self.root).classes)

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: torch.Tensor) -> FolderSplit:
        index = index.cpu()
        return replace(self, index=self.index[index], targets=self.targets[index])

    def to(self, device: torch.device | str) -> FolderSplit:
        return replace(self, device=str(device))

    def with_options(self, image_size: int | None = None, workers: int | None = None
                     ) -> FolderSplit:
        return replace(self, image_size=image_size or self.image_size,
                       workers=self.workers if workers is None else workers)

    def example(self) -> torch.Tensor:
        image, _ = _SeededImages(self.root, _transform(self.image_size, False, False))[
            (int(self.index[0]), 0)]
        return image[None].float().to(self.device)

    def loader(self, *, batch_size: int, mean: torch.Tensor, std: torch.Tensor,
               augment: bool = False, pad: int = 0, flip: bool = False, shuffle: bool = True,
               drop_last: bool = True, seed: int = 0, channels_last: bool = True
               ) -> FolderLoader:
        """`pad` is ignored: streamed images are augmented by random-resized crops."""
        return FolderLoader(self, batch_size=batch_size, mean=mean, std=std, augment=augment,
                            flip=flip, shuffle=shuffle, drop_last=drop_last, seed=seed,
                            channels_last=channels_last)

    def materialize(self) -> TensorSplit:
        """Every image decoded once, with the evaluation transform, into uint8 tensors."""
        images = _SeededImages(self.root, _transform(self.image_size, False, False))
        keys = [(int(i), 0) for i in self.index]
        xs = [x for x, _ in DataLoader(images, batch_size=256, sampler=keys,
                                       num_workers=self.workers)]
        return TensorSplit(torch.cat(xs), self.targets.clone())


class FolderLoader(Loader):
    """Batches of a FolderSplit decoded by DataLoader workers, normalised on its device."""

    def __init__(self, split: FolderSplit, *, batch_size: int, mean: torch.Tensor,
                 std: torch.Tensor, augment: bool = False, flip: bool = False,
                 shuffle: bool = True, drop_last: bool = True, seed: int = 0,
                 channels_last: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.split = split
        self.batch_size = min(batch_size, len(split))
        self.device = torch.device(split.device)
        self.mean = mean.to(self.device).view(1, -1, 1, 1) * 255
        self.std = std.to(self.device).view(1, -1, 1, 1) * 255
        self.images = _SeededImages(split.root, _transform(split.image_size, augment, flip))
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.channels_last = channels_last

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def iter_epoch(self, epoch: int) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = len(self.split)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 2**62, (n,), generator=g)
        keys = list(zip(self.split.index[order].tolist(), seeds.tolist()))
        stream = DataLoader(self.images, batch_size=self.batch_size, sampler=keys,
                            drop_last=self.drop_last, num_workers=self.split.workers,
                            pin_memory=self.device.type == "cuda",
                            prefetch_factor=4 if self.split.workers else None)
        for x, y in stream:
            x = x.to(self.device, non_blocking=True).float()
            x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


@dataclass(frozen=True)
class ImageFolderData:
    """A classification dataset streamed from `train` and `test` image folders."""

    name: str
    train: FolderSplit
    test: FolderSplit
    num_classes: int
    in_channels: int = 3
    pad: int = 0
    flip: bool = True

    @property
    def image_size(self) -> tuple[int, int]:
        return self.train.image_size, self.train.image_size

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """ImageNet's statistics: the standard transforms normalise with them."""
        return torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)

    def train_split(self) -> FolderSplit:
        return self.train

    def test_split(self) -> FolderSplit:
        return self.test

    def with_options(self, image_size: int | None = None, workers: int | None = None
                     ) -> ImageFolderData:
        return replace(self, train=self.train.with_options(image_size, workers),
                       test=self.test.with_options(image_size, workers))
