"""Objectives, constraint-domination, Pareto fronts and hypervolume.

Every strategy ranks candidates through `Objectives.fitness`, so the FLOPs budget acts as
constraint-domination (Deb 2000) everywhere: a feasible candidate beats any infeasible
one, and of two infeasible ones the smaller violation wins. DEAP's `selNSGA2` then
sorts plain fitness tuples; no penalty weights to tune.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RESULT_KEYS", "Objectives", "front_hypervolume", "front_of", "front_rows",
           "hypervolume", "non_dominated"]

# Result keys of each objective; accuracy is maximised, the rest minimised.
RESULT_KEYS = {"accuracy": "accuracy", "flops": "flops_ratio", "params": "params_ratio",
        "latency": "latency"}
_WORST = 1e6


@dataclass(frozen=True)
class Objectives:
    names: tuple[str, ...] = ("accuracy", "flops")
    max_flops_ratio: float = 1.0

    @property
    def weights(self) -> tuple[float, ...]:
        """DEAP weights: +1 maximise accuracy, -1 minimise the costs."""
        return tuple(1.0 if n == "accuracy" else -1.0 for n in self.names)

    def values(self, result: dict[str, Any]) -> tuple[float, ...]:
        return tuple(float(result[RESULT_KEYS[n]]) for n in self.names)

    def violation(self, result: dict[str, Any]) -> float:
        return max(0.0, float(result["flops_ratio"]) - self.max_flops_ratio)

    def feasible(self, result: dict[str, Any]) -> bool:
        return result.get("status") == "ok" and self.violation(result) == 0.0

    def fitness(self, result: dict[str, Any] | None) -> tuple[float, ...]:
        """Fitness for selection; failed candidates get the worst value of all."""
        if result is None or result.get("status") != "ok":
            return tuple(-_WORST if w > 0 else _WORST for w in self.weights)
        v = self.violation(result)
        if v > 0:
            # Infeasible: below every feasible accuracy and above every feasible cost,
            # ordered among themselves by the violation alone.
            return tuple(-1.0 - v if w > 0 else 2.0 + v for w in self.weights)
        return self.values(result)


def non_dominated(points: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Indices of the non-dominated rows of `points` (weights +1 maximise, -1 minimise).

    Duplicated points are all kept (none dominates the other).
    """
    p = np.asarray(points, dtype=np.float64) * np.asarray(weights)  # now all maximised
    keep = []
    for i in range(len(p)):
        dominated = np.any(np.all(p >= p[i], axis=1) & np.any(p > p[i], axis=1))
        if not dominated:
            keep.append(i)
    return np.asarray(keep, dtype=int)


def hypervolume(points: np.ndarray, weights: Sequence[float],
                reference: Sequence[float]) -> float:
    """Hypervolume dominated by `points` up to `reference` (e.g. accuracy 0, FLOPs ratio 1).

    Exact sweep in 2-D; moocore (the library DEAP's indicators use) beyond.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, len(weights))
    w = np.asarray(weights, dtype=np.float64)
    # Minimisation form, reference at the origin's far corner.
    q = -p * w
    ref = -np.asarray(reference, dtype=np.float64) * w
    q = q[np.all(q < ref, axis=1)]
    if len(q) == 0:
        return 0.0
    if q.shape[1] == 2:
        q = q[np.argsort(q[:, 0], kind="stable")]
        hv, best_y = 0.0, ref[1]
        for x, y in q:
            if y < best_y:
                hv += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(hv)
    import moocore

    return float(moocore.hypervolume(q, ref=ref))


def front_of(records: Sequence[dict[str, Any]], objectives: Objectives) -> list[int]:
    """Positions in `records` of the non-dominated feasible candidates."""
    feasible = [i for i, r in enumerate(records) if objectives.feasible(r["result"])]
    if not feasible:
        return []
    pts = np.array([objectives.values(records[i]["result"]) for i in feasible])
    return [feasible[int(k)] for k in non_dominated(pts, objectives.weights)]


def front_hypervolume(records: Sequence[dict[str, Any]], objectives: Objectives) -> float:
    front = front_of(records, objectives)
    if not front:
        return 0.0
    pts = np.array([objectives.values(records[i]["result"]) for i in front])
    ref = [0.0 if w > 0 else 1.0 for w in objectives.weights]
    return hypervolume(pts, objectives.weights, ref)


def front_rows(records: Sequence[dict[str, Any]], front: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for i in sorted(front, key=lambda i: records[i]["result"]["flops_ratio"]):
        r = records[i]
        res = r["result"]
        rows.append({"index": r["index"], "run_id": r.get("run_id"),
                     "accuracy": res["accuracy"], "flops": res["flops"],
                     "params": res["params"], "flops_ratio": res["flops_ratio"],
                     "params_ratio": res["params_ratio"], "latency": res.get("latency"),
                     "seed": r.get("seed"), "genome": r["genome"]})
    return rows
