"""The final stage: the front's top-k fine-tuned longer, tested once, exported for loading.

The test split is touched here and nowhere else in a search (AMC's protocol): candidates
were chosen on the holdout.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from pruning import Distill, Plan, adaptive_bn, apply_plan, count_cost, save_pruned, train

from .config import Config
from .prepare import Prepared
from .rundir import RunDir
from .tracking import Tracker
from .training_mode import get_mode

__all__ = ["final_stage", "registered_name"]


def registered_name(cfg: Config, tracker: Tracker) -> str | None:
    """The registered model a search's final models are versions of."""
    if cfg.final.registered_model is None:
        return None
    return cfg.final.registered_model or f"{cfg.name}-{(tracker.parent_id or 'run')[:8]}"


def final_stage(cfg: Config, prepared: Prepared, run: RunDir, tracker: Tracker,
                rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fine-tune the top-k of the front longer, report test accuracy, export the models."""
    ws = prepared.inputs
    if cfg.final.top_k == 0 or not rows:
        return []
    picks = sorted(rows, key=lambda r: -r["accuracy"])[: cfg.final.top_k]
    records = {r["index"]: r for r in run.records()}
    base_flops = count_cost(ws.model, ws.example_input)[0]
    out = []
    for rank, row in enumerate(picks):
        start = Plan.from_dict(records[row["index"]]["result"]["plan"])
        trained = [_finish(cfg, prepared, start, cfg.search.seed + rank + 1000 * k)
                   for k in range(cfg.final.seeds)]
        accuracies = [ws.test_accuracy(m) for m, _ in trained]
        model, plan = trained[0]  # the first seed's model is the one exported
        test_acc = float(np.mean(accuracies))
        folder = run.path / "final" / str(rank)
        folder.mkdir(parents=True, exist_ok=True)
        save_pruned(model, folder / "model.pt", arch=cfg.model.arch, plan=plan,
                    num_classes=ws.data.num_classes,
                    input_shape=tuple(ws.example_input.shape),
                    extra={"index": row["index"], "test_accuracy": accuracies[0],
                           "mean": ws.mean.tolist(), "std": ws.std.tolist()})
        (folder / "README.md").write_text(_LOAD_NOTE.format(rank=rank))
        # counted on the model: a training mode (cdp) may end on other channels
        flops, params = count_cost(model, ws.example_input)
        result = {"rank": rank, "index": row["index"], "holdout_accuracy": row["accuracy"],
                  "test_accuracy": test_acc, "test_accuracies": accuracies,
                  "exported_test_accuracy": accuracies[0], "flops": flops,
                  "flops_ratio": flops / base_flops, "params": params}
        (folder / "metrics.json").write_text(json.dumps(result, indent=1))
        tracker.artifacts({f"final/{rank}": folder / "model.pt"})
        tracker.artifacts({f"final/{rank}": folder / "README.md"})
        result["model_uri"] = tracker.log_model(model, ws.example_input, rank=rank,
                                                index=row["index"],
                                                registered=registered_name(cfg, tracker))
        tracker.metrics({f"final_{rank}_test_accuracy": test_acc,
                         f"final_{rank}_candidate": float(row["index"]),
                         f"final_{rank}_test_accuracy_min": min(accuracies),
                         f"final_{rank}_test_accuracy_max": max(accuracies),
                         f"final_{rank}_flops_ratio": result["flops_ratio"]})
        spread = (f" (seeds {min(accuracies):.4f}-{max(accuracies):.4f})"
                  if len(accuracies) > 1 else "")
        print(f"final {rank}: candidate {row['index']}  holdout {row['accuracy']:.4f}  "
              f"test {test_acc:.4f}{spread} after {cfg.final.epochs} epochs of "
              f"{cfg.final.method}  FLOPs ratio {result['flops_ratio']:.3f}", flush=True)
        out.append(result)
    base = ws.test_accuracy(ws.model)
    for result in out:
        result["base_test_accuracy"] = base
    tracker.metrics({"base_test_accuracy": base})
    tracker.log_dict({"final": out}, "final/summary.json")
    return out


def _finish(cfg: Config, prepared: Prepared, plan: Plan, seed: int
            ) -> tuple[torch.nn.Module, Plan]:
    """One front member trained longer with one seed: (model in eval mode, its plan)."""
    ws = prepared.inputs
    loader = ws.loader(ws.train, train=True, batch_size=cfg.evaluation.batch_size, seed=seed)
    distill = Distill(ws.model, cfg.final.distill) if cfg.final.distill else None
    torch.manual_seed(seed)
    if cfg.final.method != "finetune" and cfg.final.epochs:
        s = get_mode(cfg.final.method).build(cfg, ws, plan, cfg.final.epochs, cfg.final.lr,
                                             len(loader))
        train(s.model, loader, epochs=s.epochs, lr=s.lr, warmup_epochs=0.0,
              label_smoothing=0.0, distill=distill, hooks=s.hooks)
        model, plan = s.compact()
        return model.eval(), plan
    model = apply_plan(ws.model, ws.group_map, plan, keep=cfg.genome.keep)
    # As the candidate was scored: BatchNorm statistics re-estimated first, so a short
    # fine-tune does not end with running statistics half the unpruned net's.
    bn = ws.train.loader(batch_size=cfg.evaluation.batch_size, mean=ws.mean, std=ws.std,
                         seed=cfg.search.seed + 1)
    adaptive_bn(model, bn.batches(cfg.evaluation.bn_batches))
    if cfg.final.epochs:
        train(model, loader, epochs=cfg.final.epochs, lr=cfg.final.lr, warmup_epochs=0.0,
              label_smoothing=0.0, distill=distill)
    return model.eval(), plan


_LOAD_NOTE = """# Pruned model (rank {rank} of the final stage)

`model.pt` holds the arch, the pruning plan and the pruned weights as plain tensors
(`torch.load(..., weights_only=True)` reads it). To get a runnable module:

```python
from pruning import load_pruned
model, meta = load_pruned("model.pt")   # rebuilds the arch, applies the plan, loads weights
# inputs: float images normalised with meta["extra"]["mean"] / ["std"] (per channel, 0..1)
```
"""
