"""The narrow interface every search algorithm implements, its registry, and random search.

A strategy proposes genomes (`suggest`) and learns their results (`on_trial_complete`);
it never runs anything. The budget is counted here, so every algorithm gets exactly
`population * generations` evaluations. State round-trips through plain dicts
(`get_state` / `set_state`) so a search can resume after its driver dies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .pareto import Objectives

__all__ = ["Problem", "RandomSearch", "Strategy", "create_strategy"]

Genome = list[float]


@dataclass(frozen=True)
class Problem:
    """What a strategy needs to know: gene bounds, seeds, objectives and the budget."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    objectives: Objectives
    population: int
    generations: int
    seed: int = 0
    seeds: tuple[tuple[float, ...], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    # genome -> identity of what it decodes to (its plan); lets strategies avoid
    # spending budget on a genome whose plan was already evaluated.
    key: Callable[[Sequence[float]], Hashable] | None = None

    @property
    def budget(self) -> int:
        return self.population * self.generations

    def clip(self, genome: Sequence[float]) -> Genome:
        return [float(min(max(g, lo), hi)) for g, lo, hi in zip(genome, self.lower, self.upper)]


class Strategy:
    """Base class. Subclasses implement `_propose` and may override `_learn`.

    `suggest(trial_id)` is called whenever a worker is free; it returns a genome, or None
    to make the worker wait (e.g. until a generation completes). `on_trial_complete` is
    called once per suggested trial with its result dict (None when the trial crashed).
    """

    name = "base"

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.suggested = 0
        self.pending: dict[str, Genome] = {}
        self.retry: list[Genome] = []  # pending genomes of a resumed search, re-issued first

    @property
    def finished(self) -> bool:
        return self.suggested >= self.problem.budget and not self.retry

    def suggest(self, trial_id: str) -> Genome | None:
        if self.retry:
            genome = self.retry.pop(0)
        else:
            if self.suggested >= self.problem.budget:
                return None
            genome = self._propose()
            if genome is None:
                return None
            genome = self.problem.clip(genome)
            self.suggested += 1
        self.pending[trial_id] = genome
        return genome

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None) -> None:
        genome = self.pending.pop(trial_id)
        self._learn(trial_id, genome, result)

    def _propose(self) -> Genome | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _learn(self, trial_id: str, genome: Genome, result: dict[str, Any] | None) -> None:
        """Hook: a result arrived (default: nothing to learn)."""

    def get_state(self) -> dict[str, Any]:
        return {"suggested": self.suggested, "pending": dict(self.pending),
                "retry": list(self.retry)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore; genomes that were running when the state was saved are re-issued."""
        self.suggested = state["suggested"]
        self.retry = list(state.get("retry", [])) + list(state["pending"].values())
        self.pending = {}


class RandomSearch(Strategy):
    """Uniform genomes within the bounds; the reference baseline."""

    name = "random"

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self._rng: np.random.Generator | None = None

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:  # lazily, so copies made before use don't share a stream
            self._rng = np.random.default_rng(self.problem.seed)
        return self._rng

    def _propose(self) -> Genome:
        return self.rng.uniform(self.problem.lower, self.problem.upper).tolist()

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.rng.bit_generator.state = state["rng"]


# name -> "module:Class", imported on first use so `deap`/`optuna` load only when chosen.
_STRATEGIES = {
    "deap-nsga2": "search.evolution:GenerationalNSGA",
    "deap-steady": "search.evolution:SteadyStateNSGA",
    "optuna-nsga2": "search.baselines:OptunaNSGA2",
    "optuna-tpe": "search.baselines:OptunaTPE",
    "random": "search.strategy:RandomSearch",
}


def create_strategy(name: str, problem: Problem) -> Strategy:
    if name not in _STRATEGIES:
        raise ValueError(f"search.algorithm: unknown algorithm {name!r}; known: "
                         f"{', '.join(_STRATEGIES)}")
    module, _, cls = _STRATEGIES[name].partition(":")
    return getattr(importlib.import_module(module), cls)(problem)
