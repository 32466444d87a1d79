"""A stand-in evaluator actor for orchestration benchmarks: it sleeps instead of training.

Set-up sleeps `setup_seconds` (as building a resident model would), each candidate sleeps
`candidate_seconds` scaled by 0.75-1.25 from its genome, so only the pool, the strategy
and the tracking are measured. Imports nothing heavy: 64 of these fit on a laptop.
The timings come from the resident dict (`run_actors` called directly); `CliStubEvaluator`,
which the CLI's own search runs (`benchmarks.sim_driver`), never fetches its resident (the
real model: unpickling it would import torch in each of 64 actors) and uses the class
defaults.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import ray


class StubEvaluator:
    def __init__(self, resident: list[ray.ObjectRef], threads: int = 1,
                 gpu_share: float = 0.0) -> None:
        start = time.perf_counter()
        self.resident = self.timings(resident)
        time.sleep(self.resident["setup_seconds"])
        self.info = {"pid": os.getpid(), "device": "stub", "gpu_ids": ray.get_gpu_ids(),
                     "node": ray.get_runtime_context().get_node_id(),
                     "setup_seconds": time.perf_counter() - start}

    def timings(self, resident: list[ray.ObjectRef]) -> dict[str, float]:
        given: dict[str, float] = ray.get(resident[0])
        return given

    def ready(self) -> dict[str, Any]:
        return self.info

    def evaluate(self, genome: list[float], finetune_steps: int | None = None,
                 seed: int | None = None) -> dict[str, Any]:
        u = int(hashlib.sha256(repr(genome).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        seconds = self.resident["candidate_seconds"] * (0.75 + 0.5 * u)
        time.sleep(seconds)
        size = sum(genome) / len(genome)
        return {"accuracy": 0.5 + 0.4 * size - 0.1 * u, "flops": int(1e6 * size),
                "params": int(1e4 * size), "flops_ratio": size, "params_ratio": size,
                "plan": {}, "timings": {"total": seconds}, "status": "ok", "reason": "",
                "latency": None, "bn_accuracy": None,
                "worker": {k: self.info[k] for k in ("pid", "node", "gpu_ids")}}


class CliStubEvaluator(StubEvaluator):
    """The stub for the CLI's search: 5 s set-up, ~2 s candidates, resident left alone."""

    def timings(self, resident: list[ray.ObjectRef]) -> dict[str, float]:
        return {"setup_seconds": 5.0, "candidate_seconds": 2.0}
