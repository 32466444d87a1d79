"""Everything a search needs before the first candidate: data, base model, ScoreTable.

`validate` does the cheap checks that turn bad input into exit 2 before anything is
written (dataset path, arch, checkpoint, FLOPs budget). `prepare` then loads or trains
the base model (cached by the content hash of the config that made it) and computes or
loads the ScoreTable (cached the same way).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruning import (
    CostModel,
    Decoder,
    GenomeLayout,
    GroupMap,
    ImageData,
    ScoreTable,
    TensorLoader,
    compute_scores,
    create_model,
    evaluate,
    holdout_split,
    load_checkpoint,
    load_dataset,
    train,
)

from .config import Config, ConfigError

__all__ = ["Workspace", "cache_dir", "prepare", "validate"]

Log = Callable[[str], None]


def cache_dir() -> Path:
    return Path(os.environ.get("BLENDPRUNE_CACHE", Path.home() / ".cache" / "blendprune"))


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Workspace:
    """The resident state of a search: shared by the driver and (via Ray) every worker."""

    config: Config
    data: ImageData
    train: tuple[torch.Tensor, torch.Tensor]
    holdout: tuple[torch.Tensor, torch.Tensor]
    mean: torch.Tensor
    std: torch.Tensor
    model: nn.Module
    group_map: GroupMap
    table: ScoreTable | None = None
    layout: GenomeLayout | None = None
    decoder: Decoder | None = None
    base_accuracy: float | None = None

    @property
    def example_input(self) -> torch.Tensor:
        return self.train[0][:1].float()

    def loader(self, x: torch.Tensor, y: torch.Tensor, *, train: bool = False,
               batch_size: int = 512, seed: int = 0) -> TensorLoader:
        return TensorLoader(x, y, batch_size=batch_size, mean=self.mean, std=self.std,
                            augment=train, pad=self.data.pad, flip=self.data.flip,
                            shuffle=train, drop_last=train, seed=seed)

    def test_accuracy(self, model: nn.Module) -> float:
        return evaluate(model, self.loader(self.data.x_test, self.data.y_test))["accuracy"]


def validate(cfg: Config) -> Workspace:
    """Load data and the (untrained or checkpointed) model; check the budget is reachable.

    Raises ConfigError naming the key for every input problem.
    """
    try:
        data = load_dataset(cfg.data.dataset, cfg.data.root)
        tr, ho = holdout_split(data, cfg.data.holdout, seed=cfg.data.seed)
        model = create_model(cfg.model.arch, data.num_classes, data.in_channels)
        if cfg.model.checkpoint is not None:
            load_checkpoint(model, cfg.model.checkpoint)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    mean, std = data.mean_std()
    model.eval()
    try:
        group_map = GroupMap(model, tr[0][:1].float())
        with torch.no_grad():
            model(tr[0][:2].float())
    except Exception as exc:
        raise ConfigError(f"model.arch: {cfg.model.arch!r} does not run on "
                          f"{cfg.data.dataset} images {tuple(tr[0].shape[1:])}: {exc}") from None
    ws = Workspace(cfg, data, tr, ho, mean, std, model, group_map)
    _check_budget(ws)
    return ws


def _check_budget(ws: Workspace) -> None:
    """Reject a FLOPs budget that even the most aggressive genome cannot meet."""
    cfg = ws.config
    groups = list(ws.group_map)
    table = ScoreTable([g.name for g in groups], ["l1"],
                       {g.name: {"l1": torch.arange(g.size).double().numpy()} for g in groups})
    layout = GenomeLayout.build(table, ws.group_map, granularity=cfg.genome.granularity,
                                encoding=cfg.genome.encoding, max_ratio=cfg.genome.max_ratio,
                                min_channels=cfg.genome.min_channels,
                                round_to=cfg.genome.round_to)
    decoder = Decoder(table, layout, CostModel(ws.model, ws.group_map, ws.example_input))
    floor = decoder.min_flops_ratio()
    if floor > cfg.constraints.max_flops_ratio:
        raise ConfigError(
            f"constraints.max_flops_ratio: {cfg.constraints.max_flops_ratio} is below the "
            f"smallest reachable FLOPs ratio {floor:.3f} (genome.max_ratio="
            f"{cfg.genome.max_ratio}, genome.min_channels={cfg.genome.min_channels})")


def base_key(cfg: Config) -> dict[str, Any]:
    return {"arch": cfg.model.arch, "checkpoint": cfg.model.checkpoint,
            "data": cfg.data.model_dump(), "training": cfg.base_training.model_dump()}


def ensure_base_model(ws: Workspace, log: Log = print) -> str:
    """Train the base model unless a checkpoint was given; cached by config hash."""
    cfg = ws.config
    if cfg.model.checkpoint is not None:
        return cfg.model.checkpoint
    path = cache_dir() / "base" / f"{cfg.model.arch}-{cfg.data.dataset}-{_hash(base_key(cfg))}.pt"
    if path.exists():
        try:
            load_checkpoint(ws.model, str(path))
            log(f"base model: cached {path}")
            return str(path)
        except ValueError:
            log(f"base model: cache {path} unreadable, retraining")
    t = cfg.base_training
    log(f"base model: training {cfg.model.arch} on {cfg.data.dataset} for {t.epochs} epochs")
    torch.manual_seed(t.seed)
    start = time.perf_counter()
    loader = ws.loader(*ws.train, train=True, batch_size=t.batch_size, seed=t.seed)
    every = max(1, t.epochs // 5)

    def on_epoch(epoch: int, loss: float) -> None:
        if epoch % every == 0 or epoch == t.epochs:
            log(f"  epoch {epoch}/{t.epochs}  loss {loss:.3f}  "
                f"{time.perf_counter() - start:.0f}s")

    train(ws.model, loader, epochs=t.epochs, lr=t.lr, on_epoch=on_epoch)
    ws.model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(ws.model.state_dict(), tmp)
    os.replace(tmp, path)
    return str(path)


def score_table(ws: Workspace, checkpoint: str, compute: Callable[..., ScoreTable] | None = None,
                log: Log = print) -> ScoreTable:
    """Load the cached ScoreTable of this base model and pool, or compute and cache it.

    `compute(ws)` lets the caller run the computation elsewhere (a Ray task).
    """
    cfg = ws.config
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
    log(f"score table: {len(cfg.criteria.pool)} criteria x {len(ws.group_map)} groups")
    table = compute(ws) if compute is not None else compute_table(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.save(path)
    return table


def compute_table(ws: Workspace) -> ScoreTable:
    cfg = ws.config
    # The group map was pickled (Ray) or built on this very model: rebuild to be safe.
    group_map = GroupMap(ws.model, ws.example_input)
    loader = ws.loader(*ws.train, train=False, batch_size=64, seed=0)
    batches = loader.batches(cfg.criteria.batches)
    return compute_scores(ws.model, group_map, cfg.criteria.pool, batches)


def prepare(ws: Workspace, *, compute: Callable[..., ScoreTable] | None = None,
            log: Log = print) -> Workspace:
    """Base model, ScoreTable, genome layout and decoder, in place on `ws`."""
    cfg = ws.config
    checkpoint = ensure_base_model(ws, log)
    ws.base_accuracy = evaluate(ws.model, ws.loader(*ws.holdout))["accuracy"]
    log(f"base model: holdout accuracy {ws.base_accuracy:.4f}")
    ws.table = score_table(ws, checkpoint, compute, log)
    g = cfg.genome
    ws.layout = GenomeLayout.build(ws.table, ws.group_map, granularity=g.granularity,
                                   encoding=g.encoding, max_ratio=g.max_ratio,
                                   min_channels=g.min_channels, round_to=g.round_to)
    ws.decoder = Decoder(ws.table, ws.layout, CostModel(ws.model, ws.group_map,
                                                        ws.example_input),
                         cfg.criteria.cluster_threshold)
    return ws
