"""What a reviewer reads in MLflow at the end of a search: the parent run's markdown
description and direct links into the UI."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .config import Config

__all__ = ["describe", "links"]


def describe(cfg: Config, rows: list[dict[str, Any]], finals: list[dict[str, Any]],
             base_accuracy: float | None, run_folder: str) -> str:
    """Markdown: the budget, the base model, the front and the final stage, how to load."""
    c = cfg.constraints
    lines = [f"**{cfg.name}**: {cfg.model.arch} on {cfg.data.dataset}, "
             f"{cfg.search.algorithm}, {cfg.search.budget} candidates, FLOPs budget "
             f"{c.max_flops_ratio:.0%}" + (f", targets {c.flops_targets}" if c.flops_targets
                                          else "") + "."]
    if base_accuracy is not None:
        lines.append(f"Base model test accuracy: {base_accuracy:.4f}.")
    lines += ["", "| front rank | candidate | holdout acc. | FLOPs | params | seed |",
              "|---:|---:|---:|---:|---:|---|"]
    for k, r in enumerate(sorted(rows, key=lambda r: -r["accuracy"])):
        lines.append(f"| {k} | {r['index']} | {r['accuracy']:.4f} | {r['flops_ratio']:.1%} | "
                     f"{r['params_ratio']:.1%} | {r.get('seed') or ''} |")
    if finals:
        lines += ["", "Final stage (fine-tuned longer with several seeds, tested once):", "",
                  "| final rank | candidate | test acc. (mean) | seeds' range | FLOPs |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {f['rank']} | {f['index']} | {f['test_accuracy']:.4f} | "
                  f"{min(f['test_accuracies']):.4f}-{max(f['test_accuracies']):.4f} | "
                  f"{f['flops_ratio']:.1%} |" for f in finals]
        lines += ["", "Load the chosen model (rank 0):", "", "```python",
                  "from pruning import load_pruned",
                  f"model, meta = load_pruned('{run_folder}/final/0/model.pt')", "```",
                  "", "or `blendprune export <this run> --rank 0 --out model.pt`."]
    return "\n".join(lines)


def links(base: str, experiment_id: str, parent: str) -> dict[str, str]:
    """The parent run, and the runs table filtered to this search's front, best accuracy
    first, in the UI's model-training workflow."""
    where = quote(f"tags.`blendprune.on_front` = 'true' and tags.`mlflow.parentRunId` = "
                  f"'{parent}'")
    order = quote("metrics.`accuracy`")
    ml = "workflowType=machine_learning"
    return {"run": f"{base}/#/experiments/{experiment_id}/runs/{parent}?{ml}",
            "front": f"{base}/#/experiments/{experiment_id}/runs?searchFilter={where}"
                     f"&orderByKey={order}&orderByAsc=false&{ml}"}
