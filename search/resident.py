"""What every worker holds for a whole search, and the one mapping from config to it.

A worker gets the base model, its channel groups, the ScoreTable, the genome layout, the
train and holdout tensors, their normalisation and the evaluation settings: what
`Evaluator` needs and nothing more (never the test split, never the driver's decoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruning import EvalSettings, Evaluator, GenomeLayout, GroupMap, ScoreTable, Split

from .config import Config
from .prepare import Prepared

__all__ = ["Resident", "eval_settings"]


def eval_settings(cfg: Config) -> EvalSettings:
    """How candidates are evaluated under `cfg`: the only place config becomes settings."""
    e = cfg.evaluation
    return EvalSettings(bn_batches=e.bn_batches, finetune_steps=e.finetune_steps, lr=e.lr,
                        batch_size=e.batch_size, keep=cfg.genome.keep, seed=cfg.search.seed,
                        latency=e.latency, channels_last=e.channels_last, distill=e.distill)


@dataclass(frozen=True)
class Resident:
    model: nn.Module
    group_map: GroupMap
    table: ScoreTable
    layout: GenomeLayout
    train: Split
    holdout: Split
    mean: torch.Tensor
    std: torch.Tensor
    pad: int
    flip: bool
    settings: EvalSettings
    cluster_threshold: float

    @classmethod
    def of(cls, prepared: Prepared, cfg: Config) -> Resident:
        """The resident state of `prepared`, evaluated as `cfg` says (its evaluation,
        genome.keep, search.seed and criteria.cluster_threshold)."""
        i = prepared.inputs
        return cls(i.model, i.group_map, prepared.table, prepared.layout, i.train, i.holdout,
                   i.mean, i.std, i.data.pad, i.data.flip, eval_settings(cfg),
                   cfg.criteria.cluster_threshold)

    def evaluator(self, device: str = "cpu") -> Evaluator:
        """The base model and data moved to `device` once, behind an Evaluator."""
        return Evaluator(self.model.to(device).eval(), self.group_map, self.table,
                         self.layout, self.train.to(device), self.holdout.to(device),
                         mean=self.mean, std=self.std, pad=self.pad, flip=self.flip,
                         settings=self.settings, cluster_threshold=self.cluster_threshold)
