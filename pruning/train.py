"""Train, fine-tune, re-estimate BatchNorm, evaluate: the four things a candidate needs.

Everything runs channels_last (faster convs on CPU and CUDA) and under bf16 autocast on
CUDA. Training steps run under `training_guards`, which route around native CPU kernel
faults that pruned widths reach. The learning-rate schedules decay to zero: a brief
fine-tune at a constant lr is a noisy fitness (design §2.5), a decaying one settles each
candidate before it is scored.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .kernel_guards import training_guards
from .loader import Loader

__all__ = ["DivergedError", "Distill", "TrainHooks", "adaptive_bn", "evaluate", "finetune",
           "memory_format", "train"]

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


def _optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
               extra: list[nn.Parameter] | None = None) -> torch.optim.SGD:
    # No weight decay on BN/bias parameters: decaying BN scales fights channel importance.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1] + list(extra or [])
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=momentum, nesterov=momentum > 0)


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation from a teacher (the unpruned base model, in eval mode): the
    loss becomes (1 - weight) * cross-entropy + weight * T^2 * KL(teacher || student) at
    temperature T (Hinton et al., 2015)."""

    teacher: nn.Module
    weight: float
    temperature: float = 4.0

    def loss(self, x: torch.Tensor, out: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), _autocast(x.device):
            target = self.teacher(x).float()
        t = self.temperature
        soft = F.kl_div(F.log_softmax(out / t, dim=1), F.log_softmax(target / t, dim=1),
                        reduction="batchmean", log_target=True) * t * t
        return (1 - self.weight) * hard + self.weight * soft


class TrainHooks:
    """What a training method (DCFF, CDP, LAPP) adds to plain training. Every hook is
    optional; the state is saved in `train`'s checkpoint, so a resumed method goes on as
    an uninterrupted one would."""

    def begin_epoch(self, epoch: int) -> None:
        """Runs as epoch `epoch` (from 0) starts, a resumed one included."""

    def penalty(self) -> torch.Tensor | None:
        """A term added to the step's loss."""
        return None

    def after_backward(self, step: int) -> None:
        """Runs between the backward pass and the optimizer step (masks, gradients)."""

    def after_step(self, step: int) -> None:
        """Runs after the optimizer step (what momentum must not revive)."""

    def parameters(self) -> list[nn.Parameter]:
        """Learnable parameters of the method itself (LAPP's thresholds): trained with the
        model, without weight decay."""
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def _run_steps(model: nn.Module, batches: Batches, total: int,
               lr_at: Callable[[int], float], opt: torch.optim.Optimizer, *,
               label_smoothing: float, on_epoch: Callable[[int, float], None] | None = None,
               steps_per_epoch: int = 0, channels_last: bool = True, start: int = 0,
               distill: Distill | None = None, hooks: TrainHooks | None = None
               ) -> dict[str, float]:
    """Steps `start`..`total` - 1 of a schedule; `on_epoch` after each whole epoch, with
    that epoch's mean loss. Returns the mean loss over all steps run."""
    device = _device(model)
    model.to(memory_format=memory_format(channels_last))
    model.train()
    loss_sum, seen, step = 0.0, 0, start
    epoch_sum, epoch_seen = 0.0, 0
    with training_guards(model):
        for x, y in batches:
            if step == total:
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with _autocast(device):
                out = model(x)
            loss = F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)
            if distill is not None:
                loss = distill.loss(x, out.float(), loss)
            extra = hooks.penalty() if hooks is not None else None
            if extra is not None:
                loss = loss + extra
            if not torch.isfinite(loss):
                raise DivergedError(f"loss is {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            if hooks is not None:
                hooks.after_backward(step)
            opt.step()
            if hooks is not None:
                hooks.after_step(step)
            epoch_sum += loss.item() * len(y)
            epoch_seen += len(y)
            step += 1
            if steps_per_epoch and step % steps_per_epoch == 0:
                if on_epoch is not None:
                    on_epoch(step // steps_per_epoch, epoch_sum / epoch_seen)
                loss_sum, seen = loss_sum + epoch_sum, seen + epoch_seen
                epoch_sum, epoch_seen = 0.0, 0
    loss_sum, seen = loss_sum + epoch_sum, seen + epoch_seen
    return {"loss": loss_sum / max(seen, 1), "steps": float(step - start)}


def train(model: nn.Module, loader: object, *, epochs: int, lr: float = 0.1,
          momentum: float = 0.9, weight_decay: float = 5e-4, warmup_epochs: float = 1.0,
          label_smoothing: float = 0.1,
          on_epoch: Callable[[int, float], None] | None = None,
          checkpoint: str | os.PathLike[str] | None = None,
          distill: Distill | None = None,
          before_epoch: Callable[[int], None] | None = None,
          hooks: TrainHooks | None = None) -> dict[str, float]:
    """Train from scratch (or longer fine-tune): linear warm-up, then cosine to zero.

    `loader` iterates one epoch at a time (a `Loader`, or a DataLoader). With `checkpoint`,
    the model and optimizer are saved there after every epoch and a later call resumes
    after the last saved epoch: a `Loader` replays the same epochs, so an interrupted
    training ends where an uninterrupted one would (a finished one just loads).
    `before_epoch(e)` runs as epoch e (from 0) starts, a resumed one included, after
    `hooks.begin_epoch(e)`; `hooks` (a training method) is checkpointed with the model.
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

    opt = _optimizer(model, lr_at(0), momentum, weight_decay,
                     hooks.parameters() if hooks is not None else None)
    schedule = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "lr": lr}
    done, before = (_resume(checkpoint, model, opt, schedule, hooks) if checkpoint
                    else (0, 0.0))

    def stream() -> Batches:
        for epoch in range(done, epochs):
            if hooks is not None:
                hooks.begin_epoch(epoch)
            if before_epoch is not None:
                before_epoch(epoch)
            yield from (loader.iter_epoch(epoch) if isinstance(loader, Loader)
                        else loader)  # type: ignore[misc]

    def saved(epoch: int, loss: float) -> None:
        if checkpoint:
            _save(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "epoch": epoch, **schedule,
                               "hooks": hooks.state_dict() if hooks is not None else {},
                               "seconds": before + time.perf_counter() - start})
        if on_epoch is not None:
            on_epoch(epoch, loss)

    start = time.perf_counter()
    out = _run_steps(model, stream(), total, lr_at, opt, label_smoothing=label_smoothing,
                     on_epoch=saved, steps_per_epoch=steps_per_epoch,
                     start=done * steps_per_epoch, distill=distill, hooks=hooks)
    out["seconds"] = time.perf_counter() - start
    out["total_seconds"] = before + out["seconds"]  # all sessions of a resumed training
    return out


def _resume(path: str | os.PathLike[str], model: nn.Module, opt: torch.optim.Optimizer,
            schedule: dict[str, float], hooks: TrainHooks | None) -> tuple[int, float]:
    """Load a training checkpoint if there is one: the epochs it had done, in how long."""
    if not os.path.exists(path):
        return 0, 0.0
    state = torch.load(path, map_location=_device(model), weights_only=True)
    theirs = {k: state.get(k) for k in schedule}
    if theirs != schedule:
        raise ValueError(f"checkpoint: {os.fspath(path)} is of another training ({theirs}, "
                         f"not {schedule}); remove it to start afresh")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if hooks is not None:
        hooks.load_state_dict(state.get("hooks", {}))
    return int(state["epoch"]), float(state["seconds"])


def _save(path: str | os.PathLike[str], state: dict[str, object]) -> None:
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous epoch's checkpoint


def finetune(model: nn.Module, batches: Batches, steps: int, *, lr: float = 0.01,
             momentum: float = 0.9, weight_decay: float = 5e-4, channels_last: bool = True,
             distill: Distill | None = None) -> dict[str, float]:
    """`steps` SGD steps with a cosine decay from `lr` to 0; NaN raises DivergedError.

    `channels_last` is the model's memory format; feed batches in the same format.
    """
    if steps == 0:
        return {"loss": float("nan"), "steps": 0.0}

    def lr_at(step: int) -> float:
        return 0.5 * lr * (1 + math.cos(math.pi * step / steps))

    return _run_steps(model, batches, steps, lr_at,
                      _optimizer(model, lr_at(0), momentum, weight_decay),
                      label_smoothing=0.0, channels_last=channels_last, distill=distill)


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
