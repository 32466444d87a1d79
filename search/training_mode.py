"""`blendprune train --method M`: the seed methods (DCFF, CDP, ...) as training modes.

A mode turns the config (and, from a search, a front member's plan) into a `Session`: the
model to train, the `TrainHooks` that make it that method, per-epoch metrics and the
compact model at the end. `run_mode` does the rest the same way for every mode: a folder
named after the config and plan, per-epoch checkpoints (the same command after a kill
resumes from the last epoch, in the same MLflow run), MLflow metrics, the export.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

from pruning import (
    CostModel,
    Plan,
    TrainHooks,
    count_cost,
    create_model,
    evaluate,
    save_pruned,
    train,
)
from pruning.registry import Registry

from .config import Config
from .prepare import Inputs
from .tracking import ROLE, Tracker

__all__ = ["MODES", "Mode", "Session", "get_mode", "list_modes", "register_mode",
           "run_mode", "start_model", "target_of"]


@dataclass
class Session:
    """One training by a mode: what `run_mode` trains, reports and exports."""

    model: torch.nn.Module
    hooks: TrainHooks
    epochs: int
    lr: float
    describe: str  # one line printed at the start
    metrics: Callable[[int], dict[str, float]]  # after epoch e (from 1)
    compact: Callable[[], tuple[torch.nn.Module, Plan]]
    key: dict[str, Any]  # what, besides the config, names its folder
    plots: Callable[[Path], list[Path]] | None = None  # written into the folder at the end


class Build(Protocol):
    def __call__(self, cfg: Config, inputs: Inputs, plan: Plan | None, epochs: int,
                 lr: float, steps_per_epoch: int) -> Session: ...


@dataclass(frozen=True)
class Mode:
    build: Build
    check: Callable[[Config, Inputs], None]  # config errors before anything is written
    init: Callable[[Config], str]  # "base" or "scratch": whether a base model is needed
    epochs: Callable[[Config], tuple[int, float]]  # its section's epochs and lr


MODES: Registry[Mode | str] = Registry("training mode", "--method")


def register_mode(name: str, mode: Mode | str) -> None:
    """Make `train --method name` (and `final.method: name`) run `mode` (or the Mode
    a "module:attr" string names, imported on first use)."""
    MODES.add(name, mode)


def list_modes() -> list[str]:
    return MODES.names()


def get_mode(name: str) -> Mode:
    entry = MODES.get(name)
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
    if not isinstance(entry, Mode):
        raise ValueError(f"--method: {name!r} is not a training Mode")
    return entry


def start_model(cfg: Config, inputs: Inputs, init: str) -> torch.nn.Module:
    """The trained base model ("base"), or a fresh one of its arch ("scratch", seeded by
    `base_training.seed`)."""
    if init != "scratch":
        return inputs.model
    torch.manual_seed(cfg.base_training.seed)
    return create_model(cfg.model.arch, inputs.data.num_classes, inputs.data.in_channels).eval()


def target_of(cost: CostModel, plan: Plan | None, default: float) -> float:
    """A front member's FLOPs ratio (the target a mode trains down to), else `default`."""
    return default if plan is None else cost.predict(plan)[0] / cost.base_flops


def folder_for(cfg: Config, name: str, key: dict[str, Any]) -> Path:
    payload = {"config": cfg.to_dict(), **key}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cfg.output_dir) / f"{cfg.name}-{name}-{digest}"


def run_mode(name: str, cfg: Config, inputs: Inputs, tracker: Tracker,
             log: Callable[[str], None] = print, plan: Plan | None = None) -> dict[str, Any]:
    """Train by mode `name`, tracked and resumable; returns the final metrics and the
    model's path. `plan`: a search's front member to start from."""
    mode = get_mode(name)
    epochs, lr = mode.epochs(cfg)
    loader = inputs.loader(inputs.train, train=True, batch_size=cfg.base_training.batch_size,
                           seed=cfg.base_training.seed)
    s = mode.build(cfg, inputs, plan, epochs, lr, len(loader))
    folder = folder_for(cfg, name, s.key)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if "run_id" in state and tracker.has_run(state["run_id"]):
        tracker.attach(state["run_id"])
        log(f"{name}: resuming {folder} (MLflow run {state['run_id']})")
    else:
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        tracker.start(f"{cfg.name}-{name}", cfg.flat(), (folder / "config.yaml").read_text(),
                      tags={ROLE: "train", "blendprune.method": name})
        state_path.write_text(json.dumps({"run_id": tracker.parent_id}))
    log(f"{name}: {s.describe}, {s.epochs} epochs")
    holdout = inputs.loader(inputs.holdout)
    start = time.perf_counter()

    def on_epoch(epoch: int, loss: float) -> None:
        acc = evaluate(s.model, holdout)["accuracy"]
        s.model.train()  # evaluate left it in eval mode; the next epoch trains
        extra = s.metrics(epoch)
        tracker.metrics({"loss": loss, "holdout_accuracy": acc, **extra}, step=epoch)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in extra.items() if "/" not in k)
        log(f"  epoch {epoch}/{s.epochs}  loss {loss:.3f}  holdout {acc:.4f}  {shown}  "
            f"{time.perf_counter() - start:.0f}s")

    train(s.model, loader, epochs=s.epochs, lr=s.lr, on_epoch=on_epoch, hooks=s.hooks,
          checkpoint=folder / "train.pt")
    compact, kept = s.compact()
    compact.eval()
    flops, params = count_cost(compact, inputs.example_input)
    base_flops, base_params = count_cost(inputs.model, inputs.example_input)
    result = {"test_accuracy": inputs.test_accuracy(compact),
              "flops_ratio": flops / base_flops, "params_ratio": params / base_params,
              "flops": flops, "params": params}
    path = folder / "model.pt"
    save_pruned(compact, path, arch=cfg.model.arch, plan=kept,
                num_classes=inputs.data.num_classes,
                input_shape=tuple(inputs.example_input.shape),
                extra={"method": name, **result, "mean": inputs.mean.tolist(),
                       "std": inputs.std.tolist()})
    tracker.metrics(result)
    tracker.artifacts({name: path})
    for plot in s.plots(folder) if s.plots is not None else []:
        tracker.artifacts({name: plot})
    tracker.finish()
    log(f"{name}: test accuracy {result['test_accuracy']:.4f}  FLOPs ratio "
        f"{result['flops_ratio']:.3f}  params ratio {result['params_ratio']:.3f}\n"
        f"model: {path}")
    return {**result, "path": str(path)}


register_mode("dcff", "search.dcff_mode:MODE")
register_mode("cdp", "search.cdp_mode:MODE")
register_mode("lapp", "search.lapp_mode:MODE")
