"""What moves LAPP's thresholds: per group, the task loss's and the FLOPs loss's gradient
on its threshold, summed over windows of steps, through the pruning phase.

Runs `--steps` of the seed_methods LAPP training (same schedule, from the committed
ResNet-20 base) with `--lapp` options and records, every `--window` steps, each group's
threshold, width and the two gradient sums; the plot shows the thresholds and how the
task gradient's size compares with the FLOPs gradient's. A threshold the task loss barely
moves is set by the FLOPs loss and the normalisation's geometry, not by accuracy.

    python -m benchmarks.lapp_gradients --dataset cifar10 --flops 0.4 --steps 600
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import RESULTS, write_result
from benchmarks.seed_methods import Setting, add_training_args, lapp_options, variant
from pruning import LAPP, train


class _Stop(Exception):
    pass


class Recorded(LAPP):
    """LAPP that splits each step's threshold gradient into its FLOPs-loss part (taken
    from the penalty alone) and the rest (the task loss's)."""

    def __init__(self, *args: Any, steps: int, window: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_at, self.window = steps, window
        self.rows: list[dict[str, Any]] = []
        self._flops_now = {n: 0.0 for n in self.thresholds}
        self._sums = {n: [0.0, 0.0] for n in self.thresholds}  # flops, task

    def penalty(self) -> torch.Tensor | None:
        loss = super().penalty()
        self._flops_now = {n: 0.0 for n in self.thresholds}
        if loss is not None and loss.requires_grad:
            grads = torch.autograd.grad(loss, list(self.thresholds.values()),
                                        retain_graph=True, allow_unused=True)
            self._flops_now = {n: 0.0 if g is None else float(g)
                               for n, g in zip(self.thresholds, grads)}
        return loss

    def after_backward(self, step: int) -> None:
        for n, t in self.thresholds.items():
            total = 0.0 if t.grad is None else float(t.grad)
            self._sums[n][0] += self._flops_now[n]
            self._sums[n][1] += total - self._flops_now[n]
        if (step + 1) % self.window == 0:
            self.rows.append({
                "step": step + 1, "flops_ratio": self.flops_ratio(), "widths": self.widths(),
                "thresholds": {n: float(t.detach()) for n, t in self.thresholds.items()},
                "grad_flops": {n: s[0] for n, s in self._sums.items()},
                "grad_task": {n: s[1] for n, s in self._sums.items()}})
            r = self.rows[-1]
            print(f"step {r['step']:5d}  FLOPs {r['flops_ratio']:.3f}  widths "
                  f"{list(r['widths'].values())}", flush=True)
            self._sums = {n: [0.0, 0.0] for n in self.thresholds}
        if step + 1 >= self.stop_at:
            raise _Stop


def task_over_flops(rows: list[dict[str, Any]], order: list[str]) -> dict[str, float]:
    """Per group, the task loss's net push on the threshold over the FLOPs loss's: the
    sizes of their per-window sums, added over the windows (within a window, noise
    cancels; over windows, it does not)."""
    return {g: sum(abs(r["grad_task"][g]) for r in rows)
            / max(sum(abs(r["grad_flops"][g]) for r in rows), 1e-12) for g in order}


def plot(rows: list[dict[str, Any]], order: list[str], title: str, stem: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2), dpi=120)
    for i, g in enumerate(order):
        color = plt.get_cmap("tab20")(i % 20)
        a.plot(steps, [r["thresholds"][g] for r in rows], label=g, color=color)
        b.plot(steps, [abs(r["grad_task"][g]) for r in rows], color=color)
        b.plot(steps, [abs(r["grad_flops"][g]) for r in rows], ls=":", color=color)
    a.set_title("threshold per group")
    b.set_title("|gradient| on each threshold per window: task (solid), FLOPs (dotted)")
    b.set_yscale("log")
    for ax in (a, b):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    a.legend(fontsize=6, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    png = stem.parent / f"{stem.name}.png"
    fig.savefig(png)
    plt.close(fig)
    return png


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(p, dataset="cifar10", flops=0.4)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--window", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(1)
    s = Setting.load(args)
    base, gm = s.base, s.gm
    loader = s.loader(0)
    opts = lapp_options(args.lapp)
    fraction = opts.pop("prune_fraction", 0.5)
    lapp = Recorded(base, gm, s.cost, target_flops_ratio=args.flops,
                    prune_steps=round(fraction * args.epochs * len(loader)),
                    steps=args.steps, window=args.window, **opts)
    torch.manual_seed(0)
    try:
        train(lapp.model, loader, epochs=args.epochs, lr=args.lr, hooks=lapp)
    except _Stop:
        pass
    order = [g for g in gm.in_model_order(base) if g in lapp.thresholds]
    ratio = task_over_flops(lapp.rows, order)
    suffix = "".join(f"_{k}-{v}" for k, v in sorted(lapp_options(args.lapp).items()))
    name = f"lapp_gradients_{args.dataset}_{args.flops:g}{suffix}"
    png = plot(lapp.rows, order, f"{args.dataset} ResNet-20, LAPP to {args.flops:g} FLOPs "
               f"{variant(args)}", RESULTS / name)
    write_result(name, {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "prune_steps": lapp.prune_steps, "plot": png.name,
        "task_over_flops": ratio, "windows": lapp.rows})
    print({g: round(v, 2) for g, v in ratio.items()})


if __name__ == "__main__":
    main()
