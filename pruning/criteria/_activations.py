"""Data-driven criteria: statistics of each channel's feature map over a few batches.

The site of a group's feature map is its BatchNorm output (the producing conv's output
when there is none). `hrank`, `apoz` and `act_mean` look at it after a ReLU, as the
papers do; `taylor` uses it before, with its gradient.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from ._base import Criterion, norm_layers, producer_layers, reduce_mean, register_criterion

__all__ = ["APoZCriterion", "ActivationMeanCriterion", "HRankCriterion", "TaylorCriterion"]

_SITES = (nn.modules.batchnorm._BatchNorm, nn.Conv2d, nn.Linear)


class ActivationCriterion(Criterion):
    """Accumulates a per-channel statistic of every site's output while recording.

    Subclasses implement `statistic(act)` -> per-channel *sums* over the batch's samples.
    """

    requires_data = True

    def __init__(self) -> None:
        self._sums: dict[nn.Module, torch.Tensor] = {}
        self._counts: dict[nn.Module, int] = {}

    def statistic(self, act: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _accumulate(self, module: nn.Module, value: torch.Tensor, samples: int) -> None:
        value = value.detach().double().cpu()
        if module in self._sums:
            self._sums[module] += value
        else:
            self._sums[module] = value
        self._counts[module] = self._counts.get(module, 0) + samples

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        with torch.no_grad():
            self._accumulate(module, self.statistic(output.detach()), output.shape[0])

    @contextlib.contextmanager
    def recording(self, model: nn.Module) -> Iterator[None]:
        """Record statistics of every forward pass run inside; earlier records are dropped."""
        self._sums.clear()
        self._counts.clear()
        # In-place ReLUs would overwrite the recorded BN outputs (and their autograd
        # versions); switch them off for the duration.
        relus = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6)) and m.inplace]
        for m in relus:
            m.inplace = False
        hooks = [m.register_forward_hook(self._hook) for m in model.modules()
                 if isinstance(m, _SITES)]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
            for m in relus:
                m.inplace = True

    def __call__(self, group: Any) -> torch.Tensor:
        sites: list[tuple[nn.Module, list[int], list[int]]] = [
            *norm_layers(group)] or [*producer_layers(group)]
        parts = [((self._sums[m] / self._counts[m])[idxs], root_idxs)
                 for m, idxs, root_idxs in sites if m in self._sums]
        if not parts:
            raise RuntimeError(f"{self.name}: no activations recorded for this group; "
                               "run batches inside `with criterion.recording(model):` first")
        return reduce_mean(group, parts)


def _channels_last_flat(act: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C, positions); (N, C) -> (N, C, 1)."""
    return act.reshape(act.shape[0], act.shape[1], -1)


@register_criterion("act_mean")
class ActivationMeanCriterion(ActivationCriterion):
    """Mean post-ReLU activation of each channel."""

    def statistic(self, act: torch.Tensor) -> torch.Tensor:
        return _channels_last_flat(act.relu()).mean(2).sum(0)


@register_criterion("apoz")
class APoZCriterion(ActivationCriterion):
    """1 - average percentage of zeros after ReLU (Hu et al. 2016, arXiv 1607.03250)."""

    def statistic(self, act: torch.Tensor) -> torch.Tensor:
        return (_channels_last_flat(act) > 0).double().mean(2).sum(0)


@register_criterion("hrank")
class HRankCriterion(ActivationCriterion):
    """Mean rank of each channel's post-ReLU feature map (Lin et al. 2020, arXiv 2002.10179).

    A 1-D activation (after a Linear) has rank 1 when non-zero.
    """

    def statistic(self, act: torch.Tensor) -> torch.Tensor:
        a = act.relu().float()
        if a.dim() < 4:
            return (a.reshape(a.shape[0], a.shape[1]) != 0).double().sum(0)
        ranks: torch.Tensor = torch.linalg.matrix_rank(a).double().sum(0)
        return ranks


@register_criterion("taylor")
class TaylorCriterion(ActivationCriterion):
    """First-order Taylor estimate of the loss change when a channel is removed
    (Molchanov et al. 2019, arXiv 1906.10771): per sample, (sum over positions of
    activation * gradient)^2, averaged over samples.
    """

    requires_grad = True

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if not output.requires_grad:
            return
        act = output.detach()

        def on_grad(grad: torch.Tensor) -> None:
            contrib = _channels_last_flat(act * grad).sum(2)
            self._accumulate(module, contrib.pow(2).sum(0), act.shape[0])

        output.register_hook(on_grad)  # type: ignore[no-untyped-call]
