"""Screening: criterion clusters clearly worse than the best are left out of the search.

Before the evolution, the first member of each criterion cluster prunes alone at uniform
ratios to the middle FLOPs target (or the budget) and is scored after adaptive BN only:
no fine-tune, so the whole screen costs about as much as a few fine-tuned candidates.
Adaptive-BN accuracy ranks pruned nets well (EagleEye, Li et al., ECCV 2020). A cluster
more than `search.screen_margin` below the best gets alpha 0 for the whole search (the
bounds of its genes are pinned), so no budget goes to blends that lean on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pruning import Decoder

from .strategy import Genome, Problem, Strategy

__all__ = ["FixedGenomes", "pinned_genes", "screen_genomes", "screened"]


class FixedGenomes(Strategy):
    """Proposes a given list of genomes, each once, in order."""

    name = "fixed"

    def __init__(self, problem: Problem, genomes: Sequence[Genome]) -> None:
        super().__init__(problem)
        self.genomes = [list(g) for g in genomes]

    def _propose(self) -> Genome | None:
        return self.genomes[self.suggested]


def screen_genomes(decoder: Decoder, budget: float) -> dict[str, list[float]]:
    """Cluster name (its first member) -> that criterion alone at uniform ratios, at the
    middle FLOPs target of the layout, else at `budget`."""
    layout = decoder.layout
    names = layout.criteria
    out = {}
    for members in decoder.blender.model_clusters():
        alpha = np.eye(len(names))[members[0]]
        if layout.targets is not None:
            levels = layout.targets.seeding
            genome = layout.make(alpha, min(0.5, layout.max_ratio), levels[len(levels) // 2])
        else:
            genome = layout.make(alpha, decoder.uniform_value_for(alpha, budget))
        out[names[members[0]]] = genome
    return out


def screened(decoder: Decoder, scores: dict[str, float], margin: float) -> dict[str, Any]:
    """The screen's verdict: scores, the clusters kept and dropped (by first member)."""
    best = max(scores.values())
    dropped = sorted(n for n, s in scores.items() if s < best - margin)
    clusters = {decoder.layout.criteria[m[0]]: [decoder.layout.criteria[i] for i in m]
                for m in decoder.blender.model_clusters()}
    return {"scores": scores, "margin": margin, "clusters": clusters, "dropped": dropped,
            "kept": sorted(set(scores) - set(dropped))}


def pinned_genes(decoder: Decoder, verdict: dict[str, Any]) -> list[int]:
    """Alpha genes whose criteria all belong to dropped clusters: pin these to 0."""
    layout = decoder.layout
    gone = {layout.criteria.index(c) for name in verdict["dropped"]
            for c in verdict["clusters"][name]}
    genes = layout.alpha_genes or tuple((k,) for k in range(len(layout.criteria)))
    return [j for j, members in enumerate(genes) if set(members) <= gone]

