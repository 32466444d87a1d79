"""`blendprune train --method cdp`: CDP/DTC sparse training to a FLOPs target.

The target is `cdp.target_flops_ratio`, or, from a search, the front member's FLOPs
ratio (CDP then finds its own channels at that cost). `search.training_mode` runs it.
"""

from __future__ import annotations

from pruning import CDP, CostModel, Plan, scratch_init

from .config import Config
from .prepare import Inputs
from .training_mode import Mode, Session, start_model, target_of

__all__ = ["MODE"]


def build(cfg: Config, inputs: Inputs, plan: Plan | None, epochs: int, lr: float,
          steps_per_epoch: int) -> Session:
    c = cfg.cdp
    cost = CostModel(inputs.model, inputs.group_map, inputs.example_input)
    target = target_of(cost, plan, c.target_flops_ratio)
    base = start_model(cfg, inputs, c.init)
    if c.init == "scratch":
        scratch_init(base)
    cdp = CDP(base, inputs.group_map, cost, target_flops_ratio=target,
              sparse_steps=round(c.sparse_fraction * epochs * steps_per_epoch), lr=lr,
              delta=c.delta, prop=c.prop, var=c.var, var2=c.var2, r_prop=c.r_prop,
              gain=c.gain, adapt_every=c.adapt_every)
    return Session(
        cdp.model, cdp, epochs, lr,
        f"{len(cdp.convs)} skeleton convs in {len(cdp.groups)} channel groups, FLOPs target "
        f"{target:.3f}, from {c.init}",
        lambda epoch: cdp.metrics(),
        lambda: (cdp.to_compact(), cdp.kept_plan()),
        {"target_flops_ratio": target})


def check(cfg: Config, inputs: Inputs) -> None:
    """Nothing beyond the config's own bounds."""


MODE = Mode(build, check, lambda cfg: cfg.cdp.init, lambda cfg: (cfg.cdp.epochs, cfg.cdp.lr))
