import itertools

import numpy as np
import pytest

from search.pareto import Objectives, hypervolume, non_dominated

W = (1.0, -1.0)  # maximise accuracy, minimise FLOPs ratio


def test_non_dominated_by_hand():
    pts = np.array([[0.9, 0.5], [0.8, 0.3], [0.85, 0.6], [0.9, 0.5], [0.7, 0.3]])
    assert non_dominated(pts, W).tolist() == [0, 1, 3]


def test_two_d_hypervolume_by_hand():
    pts = np.array([[0.9, 0.5], [0.8, 0.3]])
    # union of [0,0.9]x[0.5,1] and [0,0.8]x[0.3,1]: 0.9*0.5 + 0.8*0.2
    assert hypervolume(pts, W, [0.0, 1.0]) == pytest.approx(0.45 + 0.16)
    assert hypervolume(np.array([[0.9, 1.2]]), W, [0.0, 1.0]) == 0.0


def test_three_d_hypervolume_matches_grid_count():
    rng = np.random.default_rng(0)
    pts = rng.random((6, 3))
    weights = (1.0, -1.0, -1.0)
    hv = hypervolume(pts, weights, [0.0, 1.0, 1.0])
    grid = (np.arange(200) + 0.5) / 200
    inside = 0
    for a, b in itertools.product(grid, grid):
        c = grid[:, None]
        dom = (pts[:, 0] >= a) & (pts[:, 1] <= b)
        inside += int(np.any(dom[None, :] & (pts[None, :, 2] <= c), axis=1).sum())
    assert hv == pytest.approx(inside / 200 ** 3, abs=0.01)


def test_constraint_domination_order():
    obj = Objectives(("accuracy", "flops"), max_flops_ratio=0.5)
    feasible = obj.fitness({"status": "ok", "accuracy": 0.1, "flops_ratio": 0.5})
    slightly = obj.fitness({"status": "ok", "accuracy": 0.99, "flops_ratio": 0.55})
    badly = obj.fitness({"status": "ok", "accuracy": 0.99, "flops_ratio": 0.9})
    failed = obj.fitness({"status": "failed", "accuracy": 0.0, "flops_ratio": 0.1})
    ranked = [feasible, slightly, badly, failed]
    points = np.array(ranked)
    # each point dominates every later one
    for i in range(len(points)):
        assert non_dominated(points[i:], obj.weights).tolist() == [0]
    assert obj.feasible({"status": "ok", "flops_ratio": 0.5})
    assert not obj.feasible({"status": "failed", "flops_ratio": 0.1})
