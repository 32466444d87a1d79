"""How the quality benchmarks compare methods: at matched FLOPs, with intervals.

- `pick_at`: a method's best feasible candidate whose FLOPs ratio lies in
  [target - width, target] (picked on the holdout), so no method wins by being bigger.
- `attainment`: hypervolume of (accuracy, FLOPs ratio) over the FLOPs range [lo, hi] only,
  reference (accuracy 0, FLOPs hi), divided by hi - lo: the mean over that range of the
  best accuracy reached at or below each FLOPs level. Points above `hi` are infeasible and
  count nothing; points below `lo` count as if at `lo`, so a useless tiny net cannot buy
  area outside the range that matters.
- `interval` / `paired`: a mean with its 95% Student-t interval, of values or of paired
  differences (the methods share base model, data order and fine-tune seeds).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from search.pareto import hypervolume

__all__ = ["attainment", "interval", "paired", "pick_at"]


def pick_at(records: Sequence[dict[str, Any]], target: float, width: float = 0.02
            ) -> dict[str, Any] | None:
    """The most accurate ok record with FLOPs ratio in [target - width, target]."""
    ok = [r for r in records if r["status"] == "ok"
          and target - width <= r["flops_ratio"] <= target + 1e-9]
    return max(ok, key=lambda r: r["accuracy"]) if ok else None


def attainment(records: Sequence[dict[str, Any]], lo: float, hi: float) -> float:
    """Mean best accuracy over FLOPs levels in [lo, hi] (see the module docstring)."""
    if not 0 <= lo < hi:
        raise ValueError(f"attainment: need 0 <= lo < hi, got {lo}, {hi}")
    pts = np.array([[r["accuracy"], max(lo, r["flops_ratio"])] for r in records
                    if r["status"] == "ok" and r["flops_ratio"] <= hi], dtype=np.float64)
    if len(pts) == 0:
        return 0.0
    return hypervolume(pts, (1, -1), (0.0, hi)) / (hi - lo)


def interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and its Student-t interval (a single value: the interval is that value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "lo": mean, "hi": mean, "n": len(values)}
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) \
        / math.sqrt(len(values))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": len(values)}


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95
           ) -> dict[str, float]:
    """Interval of the mean of a[i] - b[i]."""
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} values against {len(b)}")
    return interval([x - y for x, y in zip(a, b)], confidence)
