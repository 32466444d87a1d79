"""Fractional GPUs on a simulated cluster: each GPU's share of workers lands on one GPU."""

from collections import Counter

import pytest
import ray

from benchmarks.stub_evaluator import StubEvaluator
from search.actor_pool import run_actors
from search.config import SearchConfig
from search.pareto import Objectives
from search.strategy import Problem, create_strategy

from ..helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(monkeypatch):
    from ray.cluster_utils import Cluster

    from search.ray_session import loopback_only

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # workers import the stub evaluator
    loopback_only()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    for _ in range(3):  # 6 fake GPUs for 8 workers at a quarter: 2 GPUs are enough
        c.add_node(num_cpus=4, num_gpus=2, node_ip_address="127.0.0.1")
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.mark.parametrize("share, workers, packed", [(0.25, 8, [4, 4]), (0.3, 6, [3, 3])])
def test_fractional_workers_fill_whole_gpus(cluster, share, workers, packed):
    problem = Problem((0.1,) * 4, (1.0,) * 4, Objectives(("accuracy", "flops")), 8, 2, seed=0)
    strategy = create_strategy("random", problem)
    seen = []

    def on_complete(trial_id, genome, result, reason):
        seen.append(result)
        strategy.on_trial_complete(trial_id, result)

    cfg = SearchConfig(workers=workers, gpus_per_trial=share, max_restarts=0, population=8)
    stats = run_actors({"setup_seconds": 0.0, "candidate_seconds": 0.2}, strategy,
                       on_complete, cfg, num_samples=16, actor=StubEvaluator,
                       log=lambda m: None)
    assert stats.completed == 16 and all(r["status"] == "ok" for r in seen)
    seen_workers = {r["worker"]["pid"]: r["worker"] for r in seen}
    assert len(seen_workers) == workers
    per_gpu = Counter((w["node"], tuple(w["gpu_ids"])) for w in seen_workers.values())
    assert all(len(gpus) == 1 for _, gpus in per_gpu)  # one GPU id per worker
    assert sorted(per_gpu.values()) == packed  # whole GPUs, none split over two
    groups = ray.util.placement_group_table().values()
    assert groups and all(g["state"] == "REMOVED" for g in groups)  # given back at the end
