"""Candidates as Ray Tune trials: a strategy-backed Searcher and a resident Trainable.

`CandidateTrainable.setup` builds the `Evaluator` (base model, ScoreTable, data on its
device) once per actor; `reset_config` only swaps the genome, so with
`reuse_actors=True` a worker pays the setup once per search, not once per candidate.
The `Resident` state travels through the object store (`tune.with_parameters`), never
through trial configs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import ray
import torch
from ray import tune
from ray.tune.search import Searcher

from .config import SearchConfig
from .resident import Resident
from .strategy import Strategy
from .worker_death import death_reason

__all__ = ["CandidateTrainable", "StrategySearcher", "TrialErrors", "run_trials"]


class CandidateTrainable(tune.Trainable):
    """One Tune trial = one candidate; the actor keeps the Evaluator between trials."""

    def setup(self, config: dict[str, Any], resident: Resident | None = None,
              threads: int = 1) -> None:
        assert resident is not None
        torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        self.evaluator = resident.evaluator(device)

    def step(self) -> dict[str, Any]:
        result = self.evaluator.evaluate(self.config["genome"])
        # The candidate travels as JSON: Tune would flatten a nested plan into many columns.
        return {"accuracy": result.accuracy, "flops_ratio": result.flops_ratio,
                "candidate": json.dumps(result.to_dict()), "done": True}

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.config = new_config
        return True


class TrialErrors(tune.Callback):
    """Why trials failed. Tune tells a Searcher only *that* a trial failed, after writing
    the trial's error file; this callback keeps each started trial so the searcher can read
    that file and turn it into a reason ("SIGABRT: corrupted double-linked list")."""

    def __init__(self) -> None:
        self._trials: dict[str, Any] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trials[trial.trial_id] = trial

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trials.pop(trial.trial_id, None)

    on_trial_error = on_trial_complete  # both come after the searcher has been told

    def reason(self, trial_id: str) -> str:
        trial = self._trials.get(trial_id)
        path = getattr(trial, "error_file", None)
        if not path or not os.path.exists(path):
            return "trial crashed (no error file)"
        with open(path, errors="replace") as f:
            return death_reason(f.read())


class StrategySearcher(Searcher):
    """Adapts a `Strategy` to Tune; every completion goes to `on_complete` first
    (ledger, MLflow, checkpoint), then to the strategy. A failed trial arrives with no
    candidate and the reason it failed."""

    def __init__(self, strategy: Strategy,
                 on_complete: Callable[[str, list[float], dict[str, Any] | None, str], None]
                 ) -> None:
        super().__init__(metric="accuracy", mode="max")
        self.strategy = strategy
        self.on_complete = on_complete
        self.errors = TrialErrors()  # run_trials registers it with Tune

    def suggest(  # type: ignore[override]  # Ray's annotation omits Searcher.FINISHED
            self, trial_id: str) -> dict[str, Any] | str | None:
        genome = self.strategy.suggest(trial_id)
        if genome is None:
            return Searcher.FINISHED if self.strategy.finished and not self.strategy.pending \
                else None
        return {"genome": genome}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.strategy.pending:
            return
        genome = self.strategy.pending[trial_id]
        if not error and result and "candidate" in result:
            self.on_complete(trial_id, genome, json.loads(result["candidate"]), "")
        else:
            self.on_complete(trial_id, genome, None, self.errors.reason(trial_id))

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its searcher into experiment snapshots; the completion callback
        # (the live search: ledger, tracking thread) stays out, as `save` says why.
        return {k: v for k, v in self.__dict__.items() if k != "on_complete"}

    def save(self, checkpoint_path: str) -> None:
        # The authoritative checkpoint is the run folder's state.json (written after every
        # candidate); this copy serves Tune's own experiment snapshots.
        with open(checkpoint_path, "w") as f:
            json.dump(self.strategy.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.strategy.set_state(json.load(f))


def run_trials(resident: Resident, searcher: StrategySearcher, cfg: SearchConfig, *,
               num_samples: int, storage: str, name: str) -> None:
    """Run `num_samples` candidate trials with `cfg.workers` concurrent actors."""
    resources = {"cpu": 1, "gpu": cfg.gpus_per_trial}
    trainable = tune.with_resources(
        tune.with_parameters(CandidateTrainable, resident=resident, threads=1), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=num_samples,
                                    max_concurrent_trials=cfg.workers, reuse_actors=True,
                                    trial_dirname_creator=lambda t: f"candidate_{t.trial_id}"),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=0,
            stop={"training_iteration": 1}, callbacks=[searcher.errors],
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)),
    )
    tuner.fit()
