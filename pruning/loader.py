"""Loaders: seeded batch streams over a split, and the on-device one over uint8 tensors.

`Loader` fixes the iteration contract every loader keeps: an epoch is a pure function of
(seed, epoch), so every candidate sees the same batches in the same order (common random
numbers). `TensorLoader` batches uint8 tensors that live on the model's device and
normalises and augments them there (pad-and-crop, flip), as in airbench, with no worker
processes. `TensorSplit` is the (x, y) pair it batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F

__all__ = ["Loader", "Split", "TensorLoader", "TensorSplit"]

Batch = tuple[torch.Tensor, torch.Tensor]


class Loader(ABC):
    """Batches of normalised float images and int64 labels on the model's device."""

    epoch: int = 0  # the epoch plain iteration gives next

    @abstractmethod
    def __len__(self) -> int:
        """Batches per epoch."""

    @abstractmethod
    def iter_epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of `epoch`, the same on every call."""

    def __iter__(self) -> Iterator[Batch]:
        yield from self.iter_epoch(self.epoch)
        self.epoch += 1

    def batches(self, n: int) -> Iterator[Batch]:
        """Exactly `n` batches, continuing into further epochs as needed (no side effects)."""
        epoch, done = 0, 0
        while done < n:
            for batch in self.iter_epoch(epoch):
                if done == n:
                    return
                yield batch
                done += 1
            epoch += 1


class Split(Protocol):
    """Labelled images a loader can batch: tensors in memory or files streamed from disk."""

    @property
    def labels(self) -> torch.Tensor: ...

    def __len__(self) -> int: ...

    def subset(self, index: torch.Tensor) -> Split: ...

    def to(self, device: torch.device | str) -> Split: ...

    def example(self) -> torch.Tensor:
        """One unnormalised float image batch (1, C, H, W): the shape the model sees."""
        ...

    def loader(self, *, batch_size: int, mean: torch.Tensor, std: torch.Tensor,
               augment: bool = False, pad: int = 0, flip: bool = False, shuffle: bool = True,
               drop_last: bool = True, seed: int = 0, channels_last: bool = True) -> Loader: ...


class TensorSplit(NamedTuple):
    """uint8 images (N, C, H, W) and int64 labels, on one device."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def labels(self) -> torch.Tensor:
        return self.y

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> TensorSplit:
        index = index.to(self.x.device)
        return TensorSplit(self.x[index], self.y[index])

    def to(self, device: torch.device | str) -> TensorSplit:
        return TensorSplit(self.x.to(device), self.y.to(device))

    def example(self) -> torch.Tensor:
        return self.x[:1].float()

    def loader(self, *, batch_size: int, mean: torch.Tensor, std: torch.Tensor,
               augment: bool = False, pad: int = 0, flip: bool = False, shuffle: bool = True,
               drop_last: bool = True, seed: int = 0, channels_last: bool = True
               ) -> TensorLoader:
        return TensorLoader(self.x, self.y, batch_size=batch_size, mean=mean, std=std,
                            augment=augment, pad=pad, flip=flip, shuffle=shuffle,
                            drop_last=drop_last, seed=seed, channels_last=channels_last)


class TensorLoader(Loader):
    """Batches of normalised float images from uint8 tensors, augmented on their device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 mean: torch.Tensor, std: torch.Tensor, augment: bool = False, pad: int = 0,
                 flip: bool = False, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 0, channels_last: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = min(batch_size, len(x))
        dev = x.device
        self.mean = mean.to(dev).view(1, -1, 1, 1) * 255
        self.std = std.to(dev).view(1, -1, 1, 1) * 255
        self.augment, self.pad, self.flip = augment, pad, flip
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.channels_last = channels_last

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _generator(self, epoch: int) -> torch.Generator:
        g = torch.Generator(device=self.x.device)
        g.manual_seed(self.seed * 1_000_003 + epoch)
        return g

    def _prepare(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = x.float()
        if self.augment and self.pad > 0:
            # One random crop per image from a reflect-padded copy (airbench's batch_crop).
            n, _, h, w = x.shape
            p = self.pad
            padded = F.pad(x, (p, p, p, p), mode="reflect")
            dx = torch.randint(0, 2 * p + 1, (n,), device=x.device, generator=g)
            dy = torch.randint(0, 2 * p + 1, (n,), device=x.device, generator=g)
            rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
            cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
            x = padded.gather(2, rows.expand(n, x.shape[1], h, w + 2 * p))
            x = x.gather(3, cols.expand(n, x.shape[1], h, w))
        if self.augment and self.flip:
            flips = torch.rand(len(x), device=x.device, generator=g) < 0.5
            x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def iter_epoch(self, epoch: int) -> Iterator[Batch]:
        g = self._generator(epoch)
        n = len(self.x)
        order = (torch.randperm(n, device=self.x.device, generator=g) if self.shuffle
                 else torch.arange(n, device=self.x.device))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self._prepare(self.x[idx], g), self.y[idx]
