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


def plot_front(records: Sequence[dict[str, Any]], front: Sequence[int], path: Path, *,
               max_flops_ratio: float, title: str = "", base_accuracy: float | None = None
               ) -> Path:
    """Accuracy against FLOPs ratio: all candidates grey, the front highlighted,
    single-criterion seeds marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ok = [r for r in records if r["result"]["status"] == "ok"]
    ax.scatter([r["result"]["flops_ratio"] for r in ok], [r["result"]["accuracy"] for r in ok],
               s=14, c="0.7", label=f"candidates ({len(ok)})")
    seeds = [r for r in ok if r.get("seed")]
    if seeds:
        ax.scatter([r["result"]["flops_ratio"] for r in seeds],
                   [r["result"]["accuracy"] for r in seeds], s=40, marker="x", c="tab:blue",
                   label="single-criterion seeds")
        for r in seeds:
            ax.annotate(r["seed"], (r["result"]["flops_ratio"], r["result"]["accuracy"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points", color="tab:blue")
    pts = sorted((records[i]["result"]["flops_ratio"], records[i]["result"]["accuracy"])
                 for i in front)
    if pts:
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", c="tab:red", lw=1)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=30, c="tab:red",
                   label=f"Pareto front ({len(pts)})", zorder=3)
    if max_flops_ratio < 1:
        ax.axvline(max_flops_ratio, ls="--", c="k", lw=0.8, label="FLOPs budget")
    if base_accuracy is not None:
        ax.axhline(base_accuracy, ls=":", c="tab:green", lw=0.8, label="base model")
    ax.set_xlabel("FLOPs ratio (pruned / base)")
    ax.set_ylabel("holdout accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_correlation(criteria: Sequence[str], rhos: dict[str, np.ndarray], path: Path
                     ) -> Path:
    """Mean Spearman correlation between criteria over all groups, plus its spread."""
    stack = np.stack(list(rhos.values()))
    mean, spread = stack.mean(0), stack.std(0)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), dpi=120)
    for ax, m, title, cmap, vmin in ((axes[0], mean, "mean Spearman rho over groups",
                                      "RdBu_r", -1), (axes[1], spread, "std over groups",
                                                      "viridis", 0)):
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=1)
        ax.set_xticks(range(len(criteria)), criteria, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(criteria)), criteria, fontsize=8)
        for i in range(len(criteria)):
            for j in range(len(criteria)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6)
        ax.set_title(title, fontsize=10)
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
