"""Candidates per GPU-minute with 1, 2 and 4 resident evaluator actors sharing one GPU.

ResNet-56 on CIFAR-10-shaped data (real CIFAR-10 where `--data-root` has it; timings
depend on shapes, not pixels) under the cifar10-resnet56 preset's evaluation settings.
For each packing, W actors at `num_gpus=1/W` evaluate random genomes through the search's
own actor pool (`search.actor_pool.run_actors`). Throughput counts the candidates that
finish after every actor has finished its first, over the time they took, so actor start
and warm-up are left out. Peak memory per actor is the most any actor process held on the
GPU (nvidia-smi, CUDA context included), sampled every 0.2 s.

    python -m benchmarks.gpu_packing                  # on a machine with one GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import DEFAULT_DATA_ROOT, write_result
from benchmarks.candidate_cost import load_cifar
from pruning import GenomeLayout, GroupMap, compute_scores, create_model, holdout_split
from search.config import load_config
from search.pareto import Objectives
from search.resident import Resident, eval_settings
from search.strategy import Problem, RandomSearch

POOL = ["l1", "l2", "fpgm", "bn_gamma"]  # throughput does not depend on the pool


class GpuMemory:
    """Peak GPU memory per process (MiB) and of the whole GPU, sampled by nvidia-smi."""

    def __init__(self, period: float = 0.2) -> None:
        self.per_pid: dict[int, float] = {}
        self.total = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _query(self, *args: str) -> list[list[str]]:
        out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line]

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                for pid, used in self._query("--query-compute-apps=pid,used_memory"):
                    self.per_pid[int(pid)] = max(self.per_pid.get(int(pid), 0.0), float(used))
                for (used,) in self._query("--query-gpu=memory.used"):
                    self.total = max(self.total, float(used))
            except (OSError, ValueError, subprocess.SubprocessError):
                return

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def resident(arch: str, args: argparse.Namespace) -> tuple[Resident, Any]:
    data, source = load_cifar(args.data_root)
    tr, ho = holdout_split(data, args.holdout, seed=0)
    mean, std = data.mean_std()
    torch.manual_seed(0)
    model = create_model(arch, data.num_classes, data.in_channels).eval()
    gm = GroupMap(model, tr.example())
    table = compute_scores(model, gm, POOL, tr.loader(batch_size=64, mean=mean, std=std)
                           .batches(2))
    cfg = load_config("cifar10-resnet56", [f"evaluation.finetune_steps={args.steps}",
                                          f"criteria.pool={POOL}"])
    g = cfg.genome
    layout = GenomeLayout.build(table, gm, granularity=g.granularity, max_ratio=g.max_ratio,
                                min_channels=g.min_channels, round_to=g.round_to)
    return (Resident(model, gm, table, layout, tr, ho, mean, std, data.pad, data.flip,
                     eval_settings(cfg), cfg.criteria.cluster_threshold), (cfg, source))


def run_packing(res: Resident, cfg: Any, actors: int, candidates: int) -> dict[str, Any]:
    from search.actor_pool import run_actors

    lo, hi = res.layout.bounds()
    strategy = RandomSearch(Problem(tuple(lo), tuple(hi), Objectives(("accuracy", "flops")),
                                    population=candidates, generations=1, seed=actors))
    finished: list[float] = []
    failed: list[str] = []
    seconds: list[float] = []

    def on_complete(trial_id: str, genome: list[float], result: dict[str, Any] | None,
                    reason: str) -> None:
        finished.append(time.perf_counter())
        strategy.on_trial_complete(trial_id, result)
        if result is None or result["status"] != "ok":
            failed.append(reason or (result or {}).get("reason", ""))
        else:
            seconds.append(result["timings"]["total"])

    search = cfg.search.model_copy(update={"workers": actors, "gpus_per_trial": 1 / actors,
                                           "executor": "actors"})
    start = time.perf_counter()
    with GpuMemory() as memory:
        stats = run_actors(res, strategy, on_complete, search, num_samples=candidates,
                           log=lambda m: print(m, flush=True))
    steady = finished[actors - 1:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) * 60 if len(steady) > 1 else 0.0
    actor_mem = sorted(memory.per_pid.values())
    return {"actors": actors, "gpus_per_actor": 1 / actors, "candidates": candidates,
            "finished": len(finished), "failed": len(failed), "failures": failed[:3],
            "candidates_per_gpu_minute": rate,
            "seconds_per_candidate_median": statistics.median(seconds) if seconds else None,
            "wall_seconds": time.perf_counter() - start,
            "actors_started": stats.actors_started,
            "actor_setup_seconds_median": statistics.median(stats.setup_seconds),
            "dispatch_ms_median": 1000 * statistics.median(stats.dispatch_seconds),
            "peak_mib_per_actor": actor_mem[-1] if actor_mem else None,
            "peak_mib_per_actor_all": actor_mem, "peak_mib_gpu": memory.total}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--arch", default="resnet56")
    p.add_argument("--packings", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--candidates-per-actor", type=int, default=6)
    p.add_argument("--steps", type=int, default=300, help="fine-tune steps per candidate")
    p.add_argument("--holdout", type=int, default=5000)
    p.add_argument("--name", default="gpu_packing")
    args = p.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    res, (cfg, source) = resident(args.arch, args)
    gpus = 1 if torch.cuda.is_available() else 0
    ray.init(address="local", num_cpus=max(args.packings) + 1,
             num_gpus=gpus or 1, include_dashboard=False, _node_ip_address="127.0.0.1")
    results = []
    for actors in args.packings:
        r = run_packing(res, cfg, actors, actors * args.candidates_per_actor)
        results.append(r)
        print(f"{actors} actor(s)/GPU: {r['candidates_per_gpu_minute']:.1f} candidates/GPU-min, "
              f"{r['seconds_per_candidate_median']:.2f} s/candidate, peak "
              f"{r['peak_mib_per_actor']} MiB/actor, {r['finished']} finished, "
              f"{r['failed']} failed", flush=True)
    ray.shutdown()
    base = results[0]["candidates_per_gpu_minute"] or float("nan")
    for r in results:
        r["speedup_vs_1"] = r["candidates_per_gpu_minute"] / base
    write_result(args.name, {"arch": args.arch, "data": source, "device": "cuda" if gpus
                             else "cpu (fake GPU resource)", "pool": POOL,
                             "settings": eval_settings(cfg).__dict__, "holdout": args.holdout,
                             "results": results})


if __name__ == "__main__":
    main()
