"""Clustering criteria that agree, and blending them with calibration factors.

Blending Pruning Criteria (He, Huang et al., arXiv 2107.05033), design §2.3-2.4: per
group, rank-normalise each criterion, cluster criteria by Spearman correlation
(average linkage on 1 - rho), condense each cluster to its members' mean, and weight each
cluster by the mean calibration factor of its members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from scipy.stats import rankdata

from .scores import ScoreTable

__all__ = ["Blender", "GroupClustering", "cluster_group", "rank_normalise"]


def rank_normalise(scores: np.ndarray) -> np.ndarray:
    """z = rank / (n - 1) in [0, 1] per row; ties share their average rank."""
    scores = np.atleast_2d(scores)
    n = scores.shape[1]
    ranks: np.ndarray = (rankdata(scores, axis=1) - 1.0) / max(n - 1, 1)
    return ranks


def _spearman(z: np.ndarray) -> np.ndarray:
    """Spearman rho between rows of rank-normalised scores (Pearson on ranks).

    A constant row (e.g. bn_gamma where a group has no BN) carries no ranking and gets
    rho = 0 with every other row.
    """
    centred = z - z.mean(1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1)
    safe = np.where(norm > 0, norm, 1.0)
    rho = (centred @ centred.T) / np.outer(safe, safe)
    rho[norm == 0, :] = 0.0
    rho[:, norm == 0] = 0.0
    np.fill_diagonal(rho, 1.0)
    clipped: np.ndarray = np.clip(rho, -1.0, 1.0)
    return clipped


@dataclass(frozen=True)
class GroupClustering:
    """How the criteria of one group agree: what users plot and the blender uses."""

    criteria: tuple[str, ...]
    rho: np.ndarray  # (K, K) Spearman correlation
    labels: np.ndarray  # (K,) cluster id per criterion, 0-based
    z: np.ndarray  # (K, n) rank-normalised scores

    @property
    def clusters(self) -> list[list[str]]:
        return [[c for c, lab in zip(self.criteria, self.labels) if lab == k]
                for k in range(int(self.labels.max()) + 1)]

    def condensed(self) -> np.ndarray:
        """(clusters, n): each cluster's mean rank-normalised score."""
        return np.stack([self.z[self.labels == k].mean(0)
                         for k in range(int(self.labels.max()) + 1)])


def _labels(rho: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage clusters of 1 - rho cut at `threshold`, numbered by first member."""
    if len(rho) == 1:
        return np.zeros(1, dtype=np.int64)
    dist = squareform(1.0 - rho, checks=False)
    tree = linkage(np.clip(dist, 0.0, None), method="average")
    raw = fcluster(tree, t=threshold, criterion="distance")
    order = {lab: i for i, lab in enumerate(dict.fromkeys(raw))}
    return np.array([order[lab] for lab in raw], dtype=np.int64)


def cluster_group(scores: np.ndarray, criteria: Sequence[str],
                  threshold: float = 0.1) -> GroupClustering:
    """Cluster the K criteria of one group; `scores` is (K, n)."""
    if not 0.0 <= threshold <= 2.0:
        raise ValueError(f"criteria.cluster_threshold must be in [0, 2], got {threshold}")
    z = rank_normalise(scores)
    rho = _spearman(z)
    labels = _labels(rho, threshold)
    return GroupClustering(tuple(criteria), rho, labels, z)


class Blender:
    """Blended importance of every group for a vector of calibration factors.

    Precomputes, per group, the condensed cluster scores and the membership matrix, so
    `blend(alpha)` is two small matrix products per group.
    """

    def __init__(self, table: ScoreTable, threshold: float = 0.1) -> None:
        self.criteria, self.threshold = tuple(table.criteria), threshold
        self.clusterings = {g: cluster_group(table.matrix(g), table.criteria, threshold)
                            for g in table.groups}
        self._membership: dict[str, np.ndarray] = {}
        self._condensed: dict[str, np.ndarray] = {}
        for g, cl in self.clusterings.items():
            m = np.zeros((int(cl.labels.max()) + 1, len(self.criteria)))
            m[cl.labels, np.arange(len(self.criteria))] = 1.0
            self._membership[g] = m / m.sum(1, keepdims=True)  # rows average member alphas
            self._condensed[g] = cl.condensed()

    def model_clusters(self) -> list[list[int]]:
        """Criteria that agree over the whole model (criterion indices, by first member):
        the same clustering on the per-group rho averaged with channel-count weights."""
        sizes = np.array([cl.z.shape[1] for cl in self.clusterings.values()], dtype=np.float64)
        rho = sum(w * cl.rho for w, cl in zip(sizes, self.clusterings.values())) / sizes.sum()
        labels = _labels(np.asarray(rho), self.threshold)
        return [[int(i) for i in np.flatnonzero(labels == k)] for k in range(labels.max() + 1)]

    def blend(self, alpha: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
        """group -> b = sum_c w_c z_c / sum_c w_c, w_c the mean alpha of cluster c.

        All-zero weights in a group fall back to equal weights (a plain average).
        """
        a = np.asarray(alpha, dtype=np.float64)
        if a.shape != (len(self.criteria),):
            raise ValueError(f"alpha needs {len(self.criteria)} values, got {a.shape}")
        if np.any(a < 0) or not np.all(np.isfinite(a)):
            raise ValueError(f"alpha must be finite and >= 0, got {a.tolist()}")
        out = {}
        for g, m in self._membership.items():
            w = m @ a
            total = w.sum()
            if total <= 0:
                w, total = np.ones_like(w), float(len(w))
            out[g] = (w @ self._condensed[g]) / total
        return out
