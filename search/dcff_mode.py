"""`blendprune train --method dcff`: train a plan's compact network by DCFF, tracked.

The plan's per-group rates come from `dcff.rates`, a published preset, or the one
uniform rate that meets `dcff.target_flops_ratio`; its initial kept channels are the
base model's top L1 filters (DCFF re-chooses them every epoch). Training checkpoints
every epoch in a folder named after the config, so the same command after a kill resumes
from its last epoch, in the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pruning import (
    DCFF,
    CostModel,
    GroupMap,
    Plan,
    compute_scores,
    count_cost,
    create_model,
    evaluate,
    keep_count,
    save_pruned,
    train,
)

from .config import Config, ConfigError
from .prepare import Inputs
from .tracking import ROLE, Tracker

__all__ = ["PRESETS", "group_order", "plan_rates", "run_dcff"]

# The DCFF paper's published CIFAR-10 rates (github.com/lmbxmu/DCFF README): VGG-16's
# thirteen convs; ResNet-56's 27 block-internal convs. A preset maps the conv channel
# groups, in model order, to rates; every other group stays whole.
_VGG16 = [0.5] * 2 + [0.4] * 2 + [0.35] * 3 + [0.85] * 6
_RESNET56 = ([0.7] * 2 + [0.5] * 3 + [0.3] * 2 + [0.4] + [0.8]
             + [0.7] * 2 + [0.8] * 4 + [0.4] + [0.2] * 2
             + [0.7] + [0.3] + [0.8] + [0.4] * 2 + [0.7] + [0.3] + [0.4] + [0.8])


def _vgg16(convs: list[str]) -> dict[str, float]:
    if len(convs) != len(_VGG16):
        raise ConfigError(f"dcff.preset: vgg16 has {len(_VGG16)} rates; this model has "
                          f"{len(convs)} conv channel groups")
    return dict(zip(convs, _VGG16))


def _resnet56(convs: list[str]) -> dict[str, float]:
    internal = [g for g in convs if g.endswith(".conv1") and g.startswith("layer")]
    if len(internal) != len(_RESNET56):
        raise ConfigError(f"dcff.preset: resnet56 has {len(_RESNET56)} block rates; this "
                          f"model has {len(internal)} blocks")
    return dict(zip(internal, _RESNET56))


PRESETS: dict[str, Callable[[list[str]], dict[str, float]]] = {
    "vgg16": _vgg16, "resnet56": _resnet56}


def group_order(model: Any, group_map: GroupMap) -> list[str]:
    """Channel groups in the order of their first layer in the model."""
    position = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(group_map.names,
                  key=lambda g: min(position[p] for p in group_map[g].producers))


def plan_rates(cfg: Config, model: torch.nn.Module, gm: GroupMap, cost: CostModel
               ) -> dict[str, float]:
    """Rate per channel group: `dcff.rates`, a preset, or the uniform target rate."""
    d = cfg.dcff
    order = group_order(model, gm)
    if d.rates is not None:
        if len(d.rates) != len(order):
            raise ConfigError(f"dcff.rates: {len(d.rates)} rates for {len(order)} channel "
                              "groups")
        return dict(zip(order, d.rates))
    if d.preset is not None:
        modules = dict(model.named_modules())
        convs = [g for g in order
                 if all(isinstance(modules[p], torch.nn.Conv2d) for p in gm[g].producers)]
        return {**dict.fromkeys(order, 0.0), **PRESETS[d.preset](convs)}
    lo, hi = 0.0, 0.95

    def ratio(r: float) -> float:
        plan = Plan({g.name: np.arange(keep_count(g.size, r)) for g in gm})
        return cost.predict(plan)[0] / cost.base_flops

    if ratio(hi) > d.target_flops_ratio:
        raise ConfigError(f"dcff.target_flops_ratio: {d.target_flops_ratio} is below the "
                          f"smallest reachable at one rate, {ratio(hi):.3f}")
    for _ in range(30):  # the smallest uniform rate whose plan meets the target
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio(mid) > d.target_flops_ratio else (lo, mid)
    return dict.fromkeys(order, hi)


def _initial_plan(inputs: Inputs, rates: dict[str, float]) -> Plan:
    """The rates' counts, kept channels the base model's top L1 filters."""
    gm = inputs.group_map
    table = compute_scores(inputs.model, gm, ["l1"])
    return Plan({g.name: np.sort(np.argsort(-table.scores[g.name]["l1"], kind="stable")
                                 [:keep_count(g.size, rates[g.name])]) for g in gm})


def folder_for(cfg: Config, plan: Plan) -> Path:
    payload = {"config": cfg.to_dict(), "plan": plan.to_dict()}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cfg.output_dir) / f"{cfg.name}-dcff-{key}"


def run_dcff(cfg: Config, inputs: Inputs, tracker: Tracker, log: Callable[[str], None] = print,
             plan: Plan | None = None) -> dict[str, Any]:
    """Train, track and export; returns the final metrics. `plan`: a search's front
    member to train (its counts, its kept channels to start from)."""
    d = cfg.dcff
    cost = CostModel(inputs.model, inputs.group_map, inputs.example_input)
    if plan is None:
        plan = _initial_plan(inputs, plan_rates(cfg, inputs.model, inputs.group_map, cost))
    base = inputs.model
    if d.init == "scratch":
        torch.manual_seed(cfg.base_training.seed)
        base = create_model(cfg.model.arch, inputs.data.num_classes, inputs.data.in_channels)
        base.eval()
    dcff = DCFF(base, inputs.group_map, plan, d.epochs, distance=d.distance,
                score_update=d.score_update, t_start=d.t_start, t_end=d.t_end)
    folder = folder_for(cfg, plan)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if "run_id" in state and tracker.has_run(state["run_id"]):
        tracker.attach(state["run_id"])
        log(f"dcff: resuming {folder} (MLflow run {state['run_id']})")
    else:
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        tracker.start(f"{cfg.name}-dcff", cfg.flat(), (folder / "config.yaml").read_text(),
                      tags={ROLE: "train", "blendprune.method": "dcff"})
        state_path.write_text(json.dumps({"run_id": tracker.parent_id}))
    flops_ratio = cost.predict(plan)[0] / cost.base_flops
    log(f"dcff: {len(dcff.groups)} fused channel groups, FLOPs ratio {flops_ratio:.3f}, "
        f"{d.epochs} epochs from {d.init}")
    loader = inputs.loader(inputs.train, train=True, batch_size=cfg.base_training.batch_size,
                           seed=cfg.base_training.seed)
    holdout = inputs.loader(inputs.holdout)
    start = time.perf_counter()

    def before_epoch(epoch: int) -> None:
        dcff.begin_epoch(epoch)
        tracker.metrics({"temperature": dcff.temperature(epoch),
                         "kept_changed": float(sum(dcff.churn.values()))}, step=epoch)

    def on_epoch(epoch: int, loss: float) -> None:
        model = dcff.model
        acc = evaluate(model, holdout)["accuracy"]
        model.train()  # evaluate left it in eval mode; the next epoch trains
        tracker.metrics({"loss": loss, "holdout_accuracy": acc}, step=epoch)
        log(f"  epoch {epoch}/{d.epochs}  loss {loss:.3f}  holdout {acc:.4f}  "
            f"T {dcff.temperature(epoch - 1):.3g}  kept changed "
            f"{sum(dcff.churn.values())}  {time.perf_counter() - start:.0f}s")

    train(dcff.model, loader, epochs=d.epochs, lr=d.lr, before_epoch=before_epoch,
          on_epoch=on_epoch, checkpoint=folder / "train.pt")
    compact = dcff.to_compact().eval()
    kept = dcff.kept_plan()
    flops, params = count_cost(compact, inputs.example_input)
    base_flops, base_params = count_cost(inputs.model, inputs.example_input)
    result = {"test_accuracy": inputs.test_accuracy(compact),
              "flops_ratio": flops / base_flops, "params_ratio": params / base_params,
              "flops": flops, "params": params}
    path = folder / "model.pt"
    save_pruned(compact, path, arch=cfg.model.arch, plan=kept,
                num_classes=inputs.data.num_classes,
                input_shape=tuple(inputs.example_input.shape),
                extra={"method": "dcff", **result, "mean": inputs.mean.tolist(),
                       "std": inputs.std.tolist()})
    tracker.metrics(result)
    tracker.artifacts({"dcff": path})
    tracker.finish()
    log(f"dcff: test accuracy {result['test_accuracy']:.4f}  FLOPs ratio "
        f"{result['flops_ratio']:.3f}  params ratio {result['params_ratio']:.3f}\n"
        f"model: {path}")
    return {**result, "path": str(path)}
