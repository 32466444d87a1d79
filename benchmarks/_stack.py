"""The full search stack (Ray actors or Tune + strategy + MLflow + run folder) and the
plain loop it is compared with, on the same genomes. Shared by `overhead` and `scaling`."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from search.config import Config, load_config
from search.pipeline import Search, prepare_workspace
from search.prepare import Prepared, validate
from search.ray_session import init_ray
from search.resident import Resident
from search.rundir import RunDir
from search.tracking import Tracker


def digits_config(population: int, generations: int, steps: int, workers: int,
                  algorithm: str = "deap-nsga2", executor: str = "actors") -> Config:
    """The embedded digits preset with a chosen budget, candidate cost, worker count,
    algorithm and executor."""
    return load_config("digits", [f"search.population={population}",
                                  f"search.generations={generations}",
                                  f"evaluation.finetune_steps={steps}",
                                  f"search.workers={workers}", f"search.algorithm={algorithm}",
                                  f"search.executor={executor}", "final.top_k=0"])


def workspace(cfg: Config) -> Prepared:
    init_ray(None, 2)
    return prepare_workspace(validate(cfg), on_ray=True)


def run_stack(cfg: Config, prepared: Prepared, stats: dict[str, Any] | None = None
              ) -> tuple[float, list[list[float]], list[float]]:
    """Seconds of `Search.run_search` (the executor, ledger, MLflow, checkpoints), the
    genomes it evaluated and when each finished (seconds since the start). Ray is already
    up and the base model and ScoreTable prepared: both are one-off costs of a search.
    `stats` gets the pool's counts, the driver's CPU seconds and each candidate's own time."""
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(Path(tmp) / "runs", cfg.name, cfg.to_dict())
        tracker = Tracker(f"sqlite:///{tmp}/mlflow.db", "bench")
        tracker.start(cfg.name, cfg.flat(), run.config_path.read_text())
        search = Search(cfg, run, prepared, tracker)
        done: list[float] = []
        record = search.on_complete

        def on_complete(*args: Any) -> None:
            record(*args)
            done.append(time.perf_counter() - t0)

        search.on_complete = on_complete  # type: ignore[method-assign,assignment]
        cpu0, t0 = time.process_time(), time.perf_counter()
        search.run_search()
        seconds = time.perf_counter() - t0
        tracker.finish()
        records = run.records()
        if stats is not None:
            stats.update(vars(search.pool_stats) if search.pool_stats else {})
            stats["driver_cpu_seconds"] = time.process_time() - cpu0
            stats["candidate_seconds"] = [r["result"]["timings"]["total"] for r in records]
    assert len(records) == cfg.search.budget, len(records)
    return seconds, [r["genome"] for r in records], done


def run_plain(cfg: Config, prepared: Prepared, genomes: list[list[float]]
              ) -> tuple[float, list[float]]:
    """The same genomes through one in-process Evaluator (1 thread), built inside the timer
    as a worker builds its own; total seconds and when each candidate finished."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        ev = Resident.of(prepared, cfg).evaluator()
        done = []
        for g in genomes:
            ev.evaluate(g)
            done.append(time.perf_counter() - t0)
        return time.perf_counter() - t0, done
    finally:
        torch.set_num_threads(threads)
