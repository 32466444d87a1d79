"""Data-free criteria: functions of the filters (and BN scales) alone."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..fusion import kl_importance
from ._base import (
    Criterion,
    group_size,
    norm_layers,
    producer_layers,
    reduce_mean,
    register_criterion,
)

__all__ = ["BNGammaCriterion", "DCFFKLCriterion", "FPGMCriterion", "L1Criterion",
           "L2Criterion", "RandomCriterion", "TextureCriterion"]

FilterScore = Callable[[torch.Tensor], torch.Tensor]  # (n, d) filters -> (n,) scores


def _distances(w: torch.Tensor) -> torch.Tensor:
    return torch.cdist(w, w)


def _fpgm(w: torch.Tensor) -> torch.Tensor:
    # He et al. 2019 (arXiv 1811.00250): a filter near the geometric median is replaceable
    # by the others; the summed distance to all others measures how far from it a filter is.
    return _distances(w).sum(1)


def _texture(w: torch.Tensor) -> torch.Tensor:
    # CDP/DTC's angle similarity to the layer's mean filter, scaled to [0, 1].
    mean = w.mean(0, keepdim=True)
    cos = torch.nn.functional.cosine_similarity(w, mean.expand_as(w), dim=1, eps=1e-12)
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


class _FilterCriterion(Criterion):
    """Applies `score_filters` to each producing layer's filters, flattened to rows."""

    def score_filters(self, w: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, group: Any) -> torch.Tensor:
        parts = []
        for layer, idxs, root_idxs in producer_layers(group):
            w = layer.weight.detach()[idxs].flatten(1).double()
            parts.append((self.score_filters(w), root_idxs))
        return reduce_mean(group, parts)


@register_criterion("l1")
class L1Criterion(_FilterCriterion):
    """L1 norm of each filter (Li et al. 2017, arXiv 1608.08710)."""

    def score_filters(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs().sum(1)


@register_criterion("l2")
class L2Criterion(_FilterCriterion):
    """L2 norm of each filter."""

    def score_filters(self, w: torch.Tensor) -> torch.Tensor:
        norms: torch.Tensor = w.norm(dim=1)
        return norms


@register_criterion("fpgm")
class FPGMCriterion(_FilterCriterion):
    """Filter pruning via geometric median (arXiv 1811.00250): summed distance to others."""

    def score_filters(self, w: torch.Tensor) -> torch.Tensor:
        return _fpgm(w)


@register_criterion("texture")
class TextureCriterion(_FilterCriterion):
    """angle(W_j, mean filter) / pi: filters unlike the layer's mean texture are kept."""

    def score_filters(self, w: torch.Tensor) -> torch.Tensor:
        return _texture(w)


@register_criterion("dcff_kl")
class DCFFKLCriterion(_FilterCriterion):
    """DCFF's KL importance (arXiv 2107.06916).

    p_j = softmax_k(-T * d_jk) over distances normalised by their mean; a filter whose
    similarity distribution diverges from the others' is distinctive: score = sum_k KL(p_j||p_k).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"dcff_kl temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def score_filters(self, w: torch.Tensor) -> torch.Tensor:
        return kl_importance(w, self.temperature, "mean")


@register_criterion("bn_gamma")
class BNGammaCriterion(Criterion):
    """|gamma| of the BatchNorm over each channel (network slimming, arXiv 1708.06519).

    Groups without a BatchNorm score every channel equally.
    """

    def __call__(self, group: Any) -> torch.Tensor:
        parts = [(layer.weight.detach().abs()[idxs], root_idxs)
                 for layer, idxs, root_idxs in norm_layers(group) if layer.affine]
        if not parts:
            return torch.ones(group_size(group), dtype=torch.float64)
        return reduce_mean(group, parts)


@register_criterion("random")
class RandomCriterion(Criterion):
    """Uniform noise: a sanity baseline that no informed criterion should lose to."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None

    def __call__(self, group: Any) -> torch.Tensor:
        if self._generator is None:  # lazily, so copies made before use don't share a stream
            self._generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(group_size(group), generator=self._generator, dtype=torch.float64)
