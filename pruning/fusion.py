"""Filter fusion (DCFF, arXiv 2107.06916): each kept filter becomes a softmax-weighted
average of all the filters of its layer, by their distances, at a temperature T.

p_j = softmax_k(-T d_jk) over the distances of filter j to every filter; the fusion of a
kept set is those rows of p; T -> infinity is plain selection, T -> 0 the mean filter.
A channel group's producers share one fusion (their filters concatenated per channel),
so residual channels stay aligned. DCFF's importance is s_j = sum_k KL(p_j || p_k).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["DISTANCES", "distances", "fusion_matrix", "kl_importance"]

DISTANCES = ("raw", "mean")


def distances(rows: torch.Tensor, distance: str = "raw") -> torch.Tensor:
    """Euclidean distances between `rows` (flattened filters), raw or over their mean."""
    if distance not in DISTANCES:
        raise ValueError(f"dcff.distance: must be one of {DISTANCES}, got {distance!r}")
    d = torch.cdist(rows, rows)
    n = d.shape[0]
    if distance == "mean" and n > 1:
        mean = d.sum() / (n * (n - 1))
        if mean > 0:
            d = d / mean
    return d


def fusion_matrix(rows: torch.Tensor, kept: Sequence[int] | np.ndarray, t: float,
                  distance: str = "raw") -> torch.Tensor:
    """The (kept, n) fusion of `rows` (n flattened filters) at T = t, in float64."""
    d = distances(rows.detach().double(), distance)
    return torch.softmax(-t * d[torch.as_tensor(np.asarray(kept))], dim=1)


def kl_importance(rows: torch.Tensor, t: float, distance: str = "raw", *,
                  exact: bool = True) -> torch.Tensor:
    """s_j = sum_k KL(p_j || p_k). `exact`: through log-softmax, finite at any T; else as
    DCFF's official code computes it, log(p_j / p_k) on float32 probabilities, which is
    NaN once p is one-hot (from its epoch 1)."""
    d = distances(rows.detach().double(), distance)
    if exact:
        logp = torch.log_softmax(-t * d, dim=1)
        p = logp.exp()
        # KL(p_j || p_k) = sum_i p_j,i (log p_j,i - log p_k,i), for every pair at once.
        return ((p * logp).sum(1, keepdim=True) - p @ logp.T).sum(1)
    p = torch.softmax(-t * d, dim=1).float()
    return (p[:, None, :] * torch.log(p[:, None, :] / p[None, :, :])).sum((1, 2)).double()
