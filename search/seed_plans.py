"""`search.seed_plans`: plans from elsewhere (a LAPP, CDP or DCFF training, a plan JSON)
that seed the search's first generation with their per-layer widths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pruning import GroupMap, Plan

from .config import Config, ConfigError

__all__ = ["load_seed_plans"]


def _read(path: Path) -> dict[str, list[int]]:
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return data.get("plan", data) if isinstance(data, dict) else data
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["plan"]  # a model file of save_pruned: arch, plan, weights


def load_seed_plans(cfg: Config, group_map: GroupMap) -> list[tuple[str, Plan]]:
    """Every `search.seed_plans` file as (name, plan), checked against the model's groups."""
    out = []
    for name in cfg.search.seed_plans:
        path = Path(name)
        try:
            kept = _read(path)
            if not isinstance(kept, dict):
                raise ValueError("not a plan (group -> kept channels)")
            plan = Plan({g: np.asarray(v, dtype=np.int64) for g, v in kept.items()})
        except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"search.seed_plans: cannot read {name} ({exc})") from None
        for g, idxs in plan.kept.items():
            if g not in group_map.names:
                raise ConfigError(f"search.seed_plans: {name} prunes group {g!r}, which "
                                  "this model does not have")
            if len(idxs) == 0 or idxs.max() >= group_map[g].size:
                raise ConfigError(f"search.seed_plans: {name} keeps {len(idxs)} channels of "
                                  f"group {g!r} (size {group_map[g].size}) outside its range")
        out.append((f"plan:{path.name}", plan))
    return out
