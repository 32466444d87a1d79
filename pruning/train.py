"""Train, fine-tune, re-estimate BatchNorm, evaluate: the four things a candidate needs.

Everything runs channels_last (faster convs on CPU and CUDA) and under bf16 autocast on
CUDA. Training steps run under `training_guards`, which route around native CPU kernel
faults that pruned widths reach. The learning-rate schedules decay to zero: a brief
fine-tune at a constant lr is a noisy fitness (design §2.5), a decaying one settles each
candidate before it is scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from .kernel_guards import training_guards

__all__ = ["DivergedError", "adaptive_bn", "evaluate", "finetune", "memory_format", "train"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class DivergedError(RuntimeError):
    """The loss became NaN or infinite: the candidate is recorded as failed."""


def _autocast(device: torch.device) -> AbstractContextManager[object]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float
               ) -> torch.optim.SGD:
    # No weight decay on BN/bias parameters: decaying BN scales fights channel importance.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=momentum, nesterov=momentum > 0)


def _run_steps(model: nn.Module, batches: Batches, total: int,
               lr_at: Callable[[int], float], *, momentum: float, weight_decay: float,
               label_smoothing: float, on_epoch: Callable[[int, float], None] | None = None,
               steps_per_epoch: int = 0, channels_last: bool = True) -> dict[str, float]:
    device = _device(model)
    model.to(memory_format=memory_format(channels_last))
    model.train()
    opt = _optimizer(model, lr_at(0), momentum, weight_decay)
    loss_sum, seen, step = 0.0, 0, 0
    with training_guards(model):
        for x, y in batches:
            if step == total:
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with _autocast(device):
                out = model(x)
            loss = F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)
            if not torch.isfinite(loss):
                raise DivergedError(f"loss is {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            opt.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
            step += 1
            if on_epoch is not None and steps_per_epoch and step % steps_per_epoch == 0:
                on_epoch(step // steps_per_epoch, loss_sum / max(seen, 1))
    return {"loss": loss_sum / max(seen, 1), "steps": float(step)}


def train(model: nn.Module, loader: object, *, epochs: int, lr: float = 0.1,
          momentum: float = 0.9, weight_decay: float = 5e-4, warmup_epochs: float = 1.0,
          label_smoothing: float = 0.1,
          on_epoch: Callable[[int, float], None] | None = None) -> dict[str, float]:
    """Train from scratch (or longer fine-tune): linear warm-up, then cosine to zero.

    `loader` iterates one epoch at a time (a `TensorLoader` or a DataLoader).
    """
    if epochs < 1:
        raise ValueError(f"epochs: must be >= 1, got {epochs}")
    steps_per_epoch = len(loader)  # type: ignore[arg-type]
    total = epochs * steps_per_epoch
    warm = max(1, int(warmup_epochs * steps_per_epoch))

    def lr_at(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / warm
        return 0.5 * lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    def stream() -> Batches:
        for _ in range(epochs):
            yield from loader  # type: ignore[misc]

    start = time.perf_counter()
    out = _run_steps(model, stream(), total, lr_at, momentum=momentum,
                     weight_decay=weight_decay, label_smoothing=label_smoothing,
                     on_epoch=on_epoch, steps_per_epoch=steps_per_epoch)
    out["seconds"] = time.perf_counter() - start
    return out


def finetune(model: nn.Module, batches: Batches, steps: int, *, lr: float = 0.01,
             momentum: float = 0.9, weight_decay: float = 5e-4, channels_last: bool = True
             ) -> dict[str, float]:
    """`steps` SGD steps with a cosine decay from `lr` to 0; NaN raises DivergedError.

    `channels_last` is the model's memory format; feed batches in the same format.
    """
    if steps == 0:
        return {"loss": float("nan"), "steps": 0.0}

    def lr_at(step: int) -> float:
        return 0.5 * lr * (1 + math.cos(math.pi * step / steps))

    return _run_steps(model, batches, steps, lr_at, momentum=momentum,
                      weight_decay=weight_decay, label_smoothing=0.0,
                      channels_last=channels_last)


@torch.no_grad()
def adaptive_bn(model: nn.Module, batches: Batches) -> int:
    """Re-estimate BatchNorm statistics of a pruned net (EagleEye).

    Resets running stats and uses a cumulative average (momentum=None) over the batches,
    so every batch counts equally. Returns the number of batches seen.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    device = _device(model)
    model.train()
    n = 0
    try:
        for x, _ in batches:
            with _autocast(device):
                model(x)
            n += 1
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
        model.eval()
    return n


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches) -> dict[str, float]:
    """Top-1 accuracy and mean loss over `batches` (eval mode)."""
    device = _device(model)
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for x, y in batches:
        with _autocast(device):
            out = model(x).float()
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        correct += int((out.argmax(1) == y).sum())
        total += len(y)
    if total == 0:
        raise ValueError("evaluate: no batches")
    return {"accuracy": correct / total, "loss": loss_sum / total}
