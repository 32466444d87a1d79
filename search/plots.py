"""The two pictures users review: the Pareto front and the criteria correlations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: workers, CI and cluster drivers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_correlation", "plot_front"]


def _label(ax: Any, text: str, x: float, y: float, color: str, right_edge: float) -> None:
    """A point's label, turned inwards near the right edge so it stays in the frame."""
    inwards = x > right_edge
    ax.annotate(text, (x, y), fontsize=7, color=color, textcoords="offset points",
                xytext=(-4 if inwards else 4, 4), ha="right" if inwards else "left")


def plot_front(records: Sequence[dict[str, Any]], front: Sequence[int], path: Path, *,
               max_flops_ratio: float, title: str = "", base_accuracy: float | None = None,
               finals: Sequence[dict[str, Any]] = ()) -> Path:
    """Accuracy against FLOPs ratio: all candidates grey, the front highlighted, seeds
    marked, the base model a labelled point; after the final stage, each top-k member's
    test accuracy (mean over its fine-tune seeds, bar from lowest to highest) with its
    candidate index."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    ok = [r for r in records if r["result"]["status"] == "ok"]
    xs = [r["result"]["flops_ratio"] for r in ok] + [1.0]
    edge = min(xs) + 0.8 * (max(xs) - min(xs))
    ax.scatter([r["result"]["flops_ratio"] for r in ok], [r["result"]["accuracy"] for r in ok],
               s=14, c="0.7", label=f"candidates ({len(ok)})")
    seeds = [r for r in ok if r.get("seed")]
    if seeds:
        ax.scatter([r["result"]["flops_ratio"] for r in seeds],
                   [r["result"]["accuracy"] for r in seeds], s=40, marker="x", c="tab:blue",
                   label="seeds")
        for r in seeds:
            _label(ax, r["seed"], r["result"]["flops_ratio"], r["result"]["accuracy"],
                   "tab:blue", edge)
    pts = sorted((records[i]["result"]["flops_ratio"], records[i]["result"]["accuracy"])
                 for i in front)
    if pts:
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", c="tab:red", lw=1)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=30, c="tab:red",
                   label=f"Pareto front ({len(pts)}, holdout)", zorder=3)
    for f in finals:
        accs = f.get("test_accuracies") or [f["test_accuracy"]]
        mean = float(np.mean(accs))
        ax.errorbar([f["flops_ratio"]], [mean], yerr=[[mean - min(accs)], [max(accs) - mean]],
                    fmt="D", c="tab:purple", ms=5, capsize=3, zorder=4,
                    label="final top-k (test, seeds' range)" if f["rank"] == 0 else None)
        _label(ax, f"#{f['index']} (rank {f['rank']})", f["flops_ratio"], mean,
               "tab:purple", edge)
    if max_flops_ratio < 1:
        ax.axvline(max_flops_ratio, ls="--", c="k", lw=0.8, label="FLOPs budget")
    if base_accuracy is not None:
        ax.scatter([1.0], [base_accuracy], s=50, marker="*", c="tab:green", zorder=4,
                   label="base model")
        _label(ax, f"base {base_accuracy:.4f}", 1.0, base_accuracy, "tab:green", edge)
    ax.margins(x=0.06, y=0.08)
    ax.set_xlabel("FLOPs ratio (pruned / base)")
    ax.set_ylabel("accuracy (holdout; final top-k: test)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_correlation(criteria: Sequence[str], rhos: dict[str, np.ndarray], path: Path,
                     clusters: Sequence[Sequence[int]] = ()) -> Path:
    """Mean Spearman correlation between criteria over all groups, plus its spread; the
    criteria ordered by the model-level clusters, each cluster boxed."""
    order = [i for c in clusters for i in c] or list(range(len(criteria)))
    order += [i for i in range(len(criteria)) if i not in order]
    stack = np.stack(list(rhos.values()))[:, order][:, :, order]
    names = [criteria[i] for i in order]
    mean, spread = stack.mean(0), stack.std(0)
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5), dpi=120)
    for ax, m, title, cmap, vmin in ((axes[0], mean, "mean Spearman rho over groups",
                                      "RdBu_r", -1), (axes[1], spread, "std over groups",
                                                      "viridis", 0)):
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        for i in range(len(names)):
            for j in range(len(names)):  # light text on the dark ends of each colour map
                dark = abs(m[i, j]) > 0.6 if vmin < 0 else m[i, j] < 0.5
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if dark else "k")
        start = 0
        for c in clusters:
            ax.add_patch(plt.Rectangle((start - 0.5, start - 0.5), len(c), len(c), fill=False,
                                       ec="k", lw=1.8))
            start += len(c)
        ax.set_title(title + (" (boxes: clusters)" if clusters else ""), fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_widths(history: Sequence[dict[str, int]], sizes: dict[str, int], path: Path,
                title: str) -> None:
    """Kept channels of each group (rows, model order) after each epoch (columns): the
    share kept as colour, the count written in."""
    groups = list(history[0]) if history else []
    share = np.array([[h[g] / sizes[g] for h in history] for g in groups]).reshape(
        len(groups), len(history))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(history) + 3),
                                    max(3.0, 0.3 * len(groups) + 1.5)), dpi=120)
    im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    if len(history) * len(groups) <= 600:
        for i, g in enumerate(groups):
            for j, h in enumerate(history):
                ax.text(j, i, str(h[g]), ha="center", va="center", fontsize=6,
                        color="w" if share[i, j] < 0.6 else "k")
    ax.set_yticks(range(len(groups)), [f"{g} ({sizes[g]})" for g in groups], fontsize=7)
    ax.set_xticks(range(len(history)), [str(e + 1) for e in range(len(history))], fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="share of channels kept")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
