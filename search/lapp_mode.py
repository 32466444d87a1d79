"""`blendprune train --method lapp`: learnt per-layer widths down to a FLOPs target.

The target is `lapp.target_flops_ratio`, or, from a search, the front member's FLOPs
ratio. `search.training_mode` runs it; the widths it learns are plotted by layer and
epoch, and its compact model's plan can seed a search (`search.seed_plans`).
"""

from __future__ import annotations

from pathlib import Path

from pruning import CostModel, Plan, compute_scores
from pruning.lapp import LAPP

from .config import Config
from .plots import plot_widths
from .prepare import Inputs
from .training_mode import Mode, Session, start_model, target_of

__all__ = ["MODE"]


def build(cfg: Config, inputs: Inputs, plan: Plan | None, epochs: int, lr: float,
          steps_per_epoch: int) -> Session:
    c = cfg.lapp
    gm = inputs.group_map
    cost = CostModel(inputs.model, gm, inputs.example_input)
    target = target_of(cost, plan, c.target_flops_ratio)
    scores = None
    if c.criterion != "bn_gamma":
        table = compute_scores(inputs.model, gm, [c.criterion])
        scores = {g.name: table.scores[g.name][c.criterion] for g in gm}
    lapp = LAPP(start_model(cfg, inputs, c.init), gm, cost, target_flops_ratio=target,
                prune_steps=round(min(c.prune_epochs, epochs) * steps_per_epoch), lam=c.lam,
                temperature=c.temperature, bypass=c.bypass, scores=scores,
                max_ratio=c.max_ratio, min_channels=c.min_channels, balance=c.balance,
                normalise=c.normalise)

    def plots(folder: Path) -> list[Path]:
        path = folder / "widths.png"
        order = [g for g in gm.in_model_order(inputs.model) if g in lapp.thresholds]
        history = [{g: h[g] for g in order} for h in lapp.history_until(epochs)]
        plot_widths(history, {g.name: g.size for g in lapp.groups}, path,
                    f"LAPP widths, {cfg.model.arch} on {cfg.data.dataset}, FLOPs target "
                    f"{target:.2f}")
        return [path]

    return Session(
        lapp.model, lapp, epochs, lr,
        f"{len(lapp.groups)} channel groups with learnt thresholds, FLOPs target "
        f"{target:.3f}, from {c.init}, bypass {c.bypass}",
        lambda epoch: lapp.metrics(),
        lambda: (lapp.to_compact(), lapp.kept_plan()),
        {"target_flops_ratio": target}, plots)


def check(cfg: Config, inputs: Inputs) -> None:
    """Nothing beyond the config's own bounds."""


MODE = Mode(build, check, lambda cfg: cfg.lapp.init, lambda cfg: (cfg.lapp.epochs, cfg.lapp.lr))
