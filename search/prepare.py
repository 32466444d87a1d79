"""Everything a search needs before the first candidate, in two frozen phases.

`validate(cfg) -> Inputs` does the cheap checks that turn bad input into exit 2 before
anything is written (dataset path, arch, checkpoint, FLOPs budget). `prepare(inputs) ->
Prepared` then loads or trains the base model (cached by the content hash of the config
that made it; the module in `Inputs.model` is the one trained) and computes or loads the
ScoreTable (cached the same way), its genome layout and decoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruning import (
    Blender,
    CostModel,
    Data,
    Decoder,
    GenomeLayout,
    GroupMap,
    Loader,
    ScoreTable,
    Split,
    Targets,
    compute_scores,
    create_model,
    evaluate,
    holdout_split,
    load_checkpoint,
    load_dataset,
    train,
)
from pruning.prunability import prunability

from .config import Config, ConfigError, CriteriaConfig
from .seed_plans import load_seed_plans

__all__ = ["Inputs", "Prepared", "cache_dir", "prepare", "validate"]

Log = Callable[[str], None]


def cache_dir() -> Path:
    return Path(os.environ.get("BLENDPRUNE_CACHE", Path.home() / ".cache" / "blendprune"))


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Inputs:
    """What `validate` checked: the config, the data and its splits, the model, its groups."""

    config: Config
    data: Data
    train: Split
    holdout: Split
    mean: torch.Tensor
    std: torch.Tensor
    model: nn.Module
    group_map: GroupMap
    prunability: dict[str, str | None] = field(default_factory=dict)  # group -> why not

    @cached_property
    def example_input(self) -> torch.Tensor:
        """One input (a streamed folder decodes an image for it: once)."""
        return self.train.example()

    def loader(self, split: Split, *, train: bool = False, batch_size: int = 512,
               seed: int = 0) -> Loader:
        return split.loader(batch_size=batch_size, mean=self.mean, std=self.std,
                            augment=train, pad=self.data.pad, flip=self.data.flip,
                            shuffle=train, drop_last=train, seed=seed)

    def test_accuracy(self, model: nn.Module) -> float:
        return evaluate(model, self.loader(self.data.test_split()))["accuracy"]


@dataclass(frozen=True)
class Prepared:
    """What `prepare` made of the inputs: a trained base model (`inputs.model`), its
    holdout accuracy, its ScoreTable, the genome layout and decoder."""

    inputs: Inputs
    base_accuracy: float
    table: ScoreTable
    layout: GenomeLayout
    decoder: Decoder


def validate(cfg: Config) -> Inputs:
    """Load data and the (untrained or checkpointed) model; check the budget is reachable.

    Raises ConfigError naming the key for every input problem.
    """
    try:
        d = cfg.data
        data = load_dataset(d.dataset, d.root, in_memory=d.in_memory, image_size=d.image_size,
                            workers=d.workers)
        tr, ho = holdout_split(data, d.holdout, seed=d.seed)
        model = create_model(cfg.model.arch, data.num_classes, data.in_channels)
        if cfg.model.checkpoint is not None:
            load_checkpoint(model, cfg.model.checkpoint)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    mean, std = data.mean_std()
    model.eval()
    example = tr.example()
    try:
        group_map = GroupMap(model, example)
        with torch.no_grad():
            model(example.expand(2, -1, -1, -1))
    except Exception as exc:
        raise ConfigError(f"model.arch: {cfg.model.arch!r} does not run on "
                          f"{cfg.data.dataset} images {tuple(example.shape[1:])}: {exc}") from None
    group_map, report = _prunable(model, group_map, example)
    inputs = Inputs(cfg, data, tr, ho, mean, std, model, group_map, report)
    _check_budget(inputs)
    load_seed_plans(cfg, group_map)  # readable and of this model, before anything runs
    return inputs


def _prunable(model: nn.Module, group_map: GroupMap, example: torch.Tensor
              ) -> tuple[GroupMap, dict[str, str | None]]:
    """The groups that survive a one-channel cut; the others left whole, with why."""
    report = prunability(model, group_map, example)
    bad = {g: why for g, why in report.items() if why}
    print(f"prunability: {len(report) - len(bad)} of {len(report)} channel groups prunable"
          + "".join(f"\n  left whole: {g} ({why})" for g, why in bad.items()), flush=True)
    if not bad:
        return group_map, report
    return GroupMap(model, example, exclude={g: f"not prunable: {why}"
                                             for g, why in bad.items()}), report


def targets(cfg: Config) -> Targets | None:
    """The FLOPs targets candidates are pruned onto, if the constraints name any."""
    c = cfg.constraints
    if c.flops_targets:
        return Targets(tuple(c.flops_targets))
    if c.min_flops_ratio is not None:
        return Targets(span=(c.min_flops_ratio, c.max_flops_ratio))
    return None


def _layout(cfg: Config, table: ScoreTable, group_map: GroupMap) -> GenomeLayout:
    g = cfg.genome
    alpha_genes = None if g.alpha == "criterion" else tuple(
        tuple(c) for c in Blender(table, cfg.criteria.cluster_threshold).model_clusters())
    return GenomeLayout.build(table, group_map, granularity=g.granularity, encoding=g.encoding,
                              max_ratio=g.max_ratio, min_channels=g.min_channels,
                              round_to=g.round_to, levels=g.levels, targets=targets(cfg),
                              alpha_genes=alpha_genes)


def _check_budget(inputs: Inputs) -> None:
    """Reject a FLOPs budget that even the most aggressive genome cannot meet."""
    cfg = inputs.config
    groups = list(inputs.group_map)
    table = ScoreTable([g.name for g in groups], ["l1"],
                       {g.name: {"l1": torch.arange(g.size).double().numpy()} for g in groups})
    decoder = Decoder(table, _layout(cfg, table, inputs.group_map),
                      CostModel(inputs.model, inputs.group_map, inputs.example_input))
    floor = decoder.min_flops_ratio()
    c = cfg.constraints
    lowest = c.flops_targets[0] if c.flops_targets else c.min_flops_ratio
    if lowest is not None and floor > lowest:
        key = "flops_targets" if c.flops_targets else "min_flops_ratio"
        raise ConfigError(
            f"constraints.{key}: {lowest} is below the smallest reachable FLOPs ratio "
            f"{floor:.3f} (genome.max_ratio={cfg.genome.max_ratio}, genome.min_channels="
            f"{cfg.genome.min_channels})")
    if floor > cfg.constraints.max_flops_ratio:
        raise ConfigError(
            f"constraints.max_flops_ratio: {cfg.constraints.max_flops_ratio} is below the "
            f"smallest reachable FLOPs ratio {floor:.3f} (genome.max_ratio="
            f"{cfg.genome.max_ratio}, genome.min_channels={cfg.genome.min_channels})")


def base_key(cfg: Config) -> dict[str, Any]:
    return {"arch": cfg.model.arch, "checkpoint": cfg.model.checkpoint,
            "data": cfg.data.model_dump(), "training": cfg.base_training.model_dump()}


def ensure_base_model(inputs: Inputs, log: Log = print) -> str:
    """Train `inputs.model` in place unless a checkpoint was given; cached by config hash.
    Returns the checkpoint's path."""
    cfg, model = inputs.config, inputs.model
    if cfg.model.checkpoint is not None:
        return cfg.model.checkpoint
    path = cache_dir() / "base" / f"{cfg.model.arch}-{cfg.data.dataset}-{_hash(base_key(cfg))}.pt"
    if path.exists():
        try:
            load_checkpoint(model, str(path))
            log(f"base model: cached {path}")
            return str(path)
        except ValueError:
            log(f"base model: cache {path} unreadable, retraining")
    t = cfg.base_training
    log(f"base model: training {cfg.model.arch} on {cfg.data.dataset} for {t.epochs} epochs")
    torch.manual_seed(t.seed)
    start = time.perf_counter()
    loader = inputs.loader(inputs.train, train=True, batch_size=t.batch_size, seed=t.seed)
    every = max(1, t.epochs // 5)

    def on_epoch(epoch: int, loss: float) -> None:
        if epoch % every == 0 or epoch == t.epochs:
            log(f"  epoch {epoch}/{t.epochs}  loss {loss:.3f}  "
                f"{time.perf_counter() - start:.0f}s")

    train(model, loader, epochs=t.epochs, lr=t.lr, on_epoch=on_epoch)
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return str(path)


ScoreTask = Callable[[nn.Module, Split, torch.Tensor, torch.Tensor, CriteriaConfig,
                      dict[str, str]], ScoreTable]


def score_table(inputs: Inputs, checkpoint: str, compute: ScoreTask | None = None,
                log: Log = print) -> ScoreTable:
    """Load the cached ScoreTable of this base model and pool, or compute and cache it.

    `compute` (same arguments as `compute_table`) lets the caller run the computation
    elsewhere, a Ray task say; it receives the model and the training split only.
    """
    cfg = inputs.config
    with open(checkpoint, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    key = _hash({"model": digest, "pool": cfg.criteria.pool, "batches": cfg.criteria.batches,
                 "data": cfg.data.model_dump()})
    path = cache_dir() / "scores" / f"{key}.npz"
    if path.exists():
        try:
            table = ScoreTable.load(path)
            if table.criteria == list(cfg.criteria.pool):
                log(f"score table: cached {path}")
                return table
        except ValueError as exc:
            log(f"score table: {exc}; recomputing")
    log(f"score table: {len(cfg.criteria.pool)} criteria x {len(inputs.group_map)} groups")
    table = (compute or compute_table)(inputs.model, inputs.train, inputs.mean, inputs.std,
                                       cfg.criteria, inputs.group_map.exclude)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.save(path)
    return table


def compute_table(model: nn.Module, train_split: Split, mean: torch.Tensor,
                  std: torch.Tensor, criteria: CriteriaConfig, exclude: dict[str, str]
                  ) -> ScoreTable:
    """Every criterion of the pool on every group of `model`, from a few training batches."""
    # The group map may have been pickled (Ray): rebuild it on this very model.
    group_map = GroupMap(model, train_split.example(), exclude=exclude)
    loader = train_split.loader(batch_size=64, mean=mean, std=std, shuffle=False,
                                drop_last=False, seed=0)
    return compute_scores(model, group_map, criteria.pool, loader.batches(criteria.batches))


def prepare(inputs: Inputs, *, compute: ScoreTask | None = None, log: Log = print
            ) -> Prepared:
    """Base model, its holdout accuracy, ScoreTable, genome layout and decoder."""
    cfg = inputs.config
    checkpoint = ensure_base_model(inputs, log)
    base_accuracy = evaluate(inputs.model, inputs.loader(inputs.holdout))["accuracy"]
    log(f"base model: holdout accuracy {base_accuracy:.4f}")
    table = score_table(inputs, checkpoint, compute, log)
    layout = _layout(cfg, table, inputs.group_map)
    decoder = Decoder(table, layout, CostModel(inputs.model, inputs.group_map,
                                               inputs.example_input),
                      cfg.criteria.cluster_threshold)
    return Prepared(inputs, base_accuracy, table, layout, decoder)
