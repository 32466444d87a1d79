"""`blendprune train --method dcff`: train a plan's compact network by DCFF.

The plan's per-group rates come from `dcff.rates`, a published preset, or the one
uniform rate that meets `dcff.target_flops_ratio`; DCFF picks which channels (its KL
importance at the start temperature, then again every epoch). From a search, the front
member's plan is the start. `search.training_mode` runs it.
"""

from __future__ import annotations

import torch

from pruning import DCFF, CostModel, GroupMap, Plan, compute_scores
from pruning.dcff_rates import published_rates
from pruning.targets import top_plan, uniform_plan

from .config import Config, ConfigError
from .prepare import Inputs
from .training_mode import Mode, Session, start_model

__all__ = ["MODE", "initial_plan", "plan_rates"]


def plan_rates(cfg: Config, model: torch.nn.Module, gm: GroupMap) -> dict[str, float] | None:
    """Rate per channel group from `dcff.rates` or a preset; None: the uniform target."""
    d = cfg.dcff
    order = gm.in_model_order(model)
    if d.rates is not None:
        if len(d.rates) != len(order):
            raise ConfigError(f"dcff.rates: {len(d.rates)} rates for {len(order)} channel "
                              "groups")
        return dict(zip(order, d.rates))
    if d.preset is not None:
        try:
            return published_rates(d.preset, model, gm)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return None


def initial_plan(cfg: Config, inputs: Inputs, cost: CostModel) -> Plan:
    """The rates' counts (or the uniform rate meeting `dcff.target_flops_ratio`), kept
    channels the base model's top L1 filters (DCFF then picks its own)."""
    gm = inputs.group_map
    rates = plan_rates(cfg, inputs.model, gm)
    table = compute_scores(inputs.model, gm, ["l1"])
    scores = {g.name: table.scores[g.name]["l1"] for g in gm}
    if rates is not None:
        return top_plan(scores, rates)
    target = cfg.dcff.target_flops_ratio

    def ratio(plan: Plan) -> float:
        return cost.predict(plan)[0] / cost.base_flops

    plan = uniform_plan(scores, ratio, target)
    if ratio(plan) > target:
        raise ConfigError(f"dcff.target_flops_ratio: {target} is below the smallest "
                          f"reachable at one rate, {ratio(plan):.3f}")
    return plan


def build(cfg: Config, inputs: Inputs, plan: Plan | None, epochs: int, lr: float,
          steps_per_epoch: int) -> Session:
    d = cfg.dcff
    cost = CostModel(inputs.model, inputs.group_map, inputs.example_input)
    if plan is None:
        plan = initial_plan(cfg, inputs, cost)
    t_start = d.t_start or (None if d.init == "base" else 1.0)  # None: from the base's filters
    dcff = DCFF(start_model(cfg, inputs, d.init), inputs.group_map, plan, epochs,
                distance=d.distance, score_update=d.score_update, t_start=t_start,
                t_end=d.t_end)
    flops_ratio = cost.predict(plan)[0] / cost.base_flops
    return Session(
        dcff.model, dcff, epochs, lr,
        f"{len(dcff.groups)} fused channel groups, FLOPs ratio {flops_ratio:.3f}, "
        f"from {d.init}, T {dcff.temperature(0):.3g} -> {d.t_end:.3g}",
        lambda epoch: {"temperature": dcff.temperature(epoch - 1),
                       "kept_changed": float(sum(dcff.churn.values()))},
        lambda: (dcff.to_compact(), dcff.kept_plan()),
        {"plan": plan.to_dict()})


def check(cfg: Config, inputs: Inputs) -> None:
    initial_plan(cfg, inputs, CostModel(inputs.model, inputs.group_map, inputs.example_input))


MODE = Mode(build, check, lambda cfg: cfg.dcff.init, lambda cfg: (cfg.dcff.epochs, cfg.dcff.lr))
