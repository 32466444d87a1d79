"""Batches from uint8 image tensors, normalised and augmented on their own device.

The tensors live on the model's device; normalisation and augmentation (pad-and-crop,
flip) happen per batch there, as in airbench, with no DataLoader worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = ["TensorLoader"]


class TensorLoader:
    """Batches of normalised float images from uint8 tensors, augmented on their device.

    Iteration is a pure function of (seed, epoch): the same loader gives every candidate
    the same batches in the same order (common random numbers). `epoch` advances after
    each full pass; `batches(n)` streams n batches across epochs from a given start.
    """

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
        self.epoch = 0

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

    def iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = self._generator(epoch)
        n = len(self.x)
        order = (torch.randperm(n, device=self.x.device, generator=g) if self.shuffle
                 else torch.arange(n, device=self.x.device))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self._prepare(self.x[idx], g), self.y[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from self.iter_epoch(self.epoch)
        self.epoch += 1

    def batches(self, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Exactly `n` batches, continuing into further epochs as needed (no side effects)."""
        epoch, done = 0, 0
        while done < n:
            for batch in self.iter_epoch(epoch):
                if done == n:
                    return
                yield batch
                done += 1
            epoch += 1
