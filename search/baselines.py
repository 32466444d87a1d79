"""Optuna's samplers as baselines, on the same genome, trainable and budget.

Optuna's ask/tell interface maps one-to-one onto suggest/on_trial_complete; the FLOPs
budget is a trial constraint (`Trial.set_constraint`), which Optuna's samplers treat by
constraint-domination. TPE takes the search's seed genomes (every criterion cluster at
every target) first, as enqueued trials (`Study.enqueue_trial`), and models from these
single-criterion baselines instead of rediscovering them. NSGA-II does not take them: its
sampler gives a generation only to trials it samples, so enqueued ones would never be
parents.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from .pareto import RESULT_KEYS
from .strategy import Genome, Problem, Strategy

__all__ = ["OptunaNSGA2", "OptunaTPE"]

optuna.logging.set_verbosity(optuna.logging.WARNING)

_CONSTRAINT = "flops_over_budget"


def _param(i: int) -> str:
    """Gene i's name in the study (zero-padded so that names sort as genes do)."""
    return f"g{i:03d}"


class _Optuna(Strategy):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self._seeds = [list(s) for s in problem.seeds[: problem.budget]]  # proposed first
        directions: list[StudyDirection] = [
            StudyDirection.MAXIMIZE if w > 0 else StudyDirection.MINIMIZE
            for w in problem.objectives.weights]
        self.study = optuna.create_study(directions=directions, sampler=self._sampler())
        self._trials: dict[int, optuna.trial.Trial] = {}
        self._by_genome: dict[tuple[float, ...], int] = {}

    def _sampler(self) -> optuna.samplers.BaseSampler:  # pragma: no cover - abstract
        raise NotImplementedError

    def _propose(self) -> Genome:
        if self._seeds:
            self.study.enqueue_trial({_param(i): v for i, v in enumerate(self._seeds.pop(0))})
        trial = self.study.ask()
        genome = [trial.suggest_float(_param(i), lo, hi)
                  for i, (lo, hi) in enumerate(zip(self.problem.lower, self.problem.upper))]
        self._trials[trial.number] = trial
        self._by_genome[tuple(self.problem.clip(genome))] = trial.number
        return genome

    def _learn(self, trial_id: str, genome: Genome, result: dict[str, Any] | None) -> None:
        number = self._by_genome.pop(tuple(genome), None)
        if number is None:  # a genome re-issued after resume: tell it as a fresh trial
            self._add(genome, result)
            return
        trial = self._trials.pop(number)
        objectives = self.problem.objectives
        if result is None or result.get("status") != "ok":
            self.study.tell(trial, state=TrialState.FAIL)
            return
        trial.set_constraint(_CONSTRAINT, objectives.violation(result))
        self.study.tell(trial, list(objectives.values(result)))

    def _add(self, genome: Genome, result: dict[str, Any] | None) -> None:
        dists: dict[str, BaseDistribution] = {
            _param(i): optuna.distributions.FloatDistribution(lo, hi)
                 for i, (lo, hi) in enumerate(zip(self.problem.lower, self.problem.upper))}
        params = {_param(i): v for i, v in enumerate(genome)}
        objectives = self.problem.objectives
        if result is None or result.get("status") != "ok":
            frozen = optuna.trial.create_trial(params=params, distributions=dists,
                                               state=TrialState.FAIL)
        else:
            frozen = optuna.trial.create_trial(
                params=params, distributions=dists, values=list(objectives.values(result)),
                constraints={_CONSTRAINT: objectives.violation(result)})
        self.study.add_trial(frozen)

    def get_state(self) -> dict[str, Any]:
        done = []
        for t in self.study.get_trials(states=(TrialState.COMPLETE, TrialState.FAIL)):
            genome = [t.params[_param(i)] for i in range(len(self.problem.lower))]
            if t.state == TrialState.COMPLETE:
                violation = t.constraints.get(_CONSTRAINT, 0.0)
                done.append([genome, list(t.values), violation])
            else:
                done.append([genome, None, None])
        return {**super().get_state(), "trials": done}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        del self._seeds[: self.suggested]  # seeds come first: these were proposed already
        names = self.problem.objectives.names
        for genome, values, violation in state["trials"]:
            if values is None:
                self._add(genome, None)
                continue
            result = {"status": "ok", **{RESULT_KEYS[n]: v for n, v in zip(names, values)}}
            if "flops" not in names:
                result["flops_ratio"] = self.problem.objectives.max_flops_ratio + violation
            self._add(genome, result)


class OptunaNSGA2(_Optuna):
    """Optuna's NSGA-II sampler (its own SBX/uniform crossover and mutation)."""

    name = "optuna-nsga2"

    def _sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(population_size=self.problem.population,
                                             seed=self.problem.seed)


class OptunaTPE(_Optuna):
    """Optuna's multi-objective TPE sampler. Its start-up trials are random: a population
    of them, or with seeds, the seeds and a quarter population (uniform-ratio seeds alone
    would centre every ratio gene's density on one value)."""

    name = "optuna-tpe"

    @property
    def startup_trials(self) -> int:
        """Trials before TPE models: the seeds (enqueued) and the random ones after them."""
        p = self.problem
        seeds = min(len(p.seeds), p.budget)
        return seeds + max(1, p.population // 4) if seeds else p.population

    def _sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=self.problem.seed,
                                          n_startup_trials=self.startup_trials)
