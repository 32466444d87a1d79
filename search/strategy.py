"""The narrow interface every search algorithm implements, its registry, and random search.

A strategy proposes genomes (`suggest`) and learns their results (`on_trial_complete`);
it never runs anything. The budget is counted here, so every algorithm gets exactly
`population * generations` evaluations. State round-trips through plain dicts
(`get_state` / `set_state`) so a search can resume after its driver dies: every strategy
resumes. What differs between strategies is declared when one registers: whether it
takes the search's seed genomes into its first proposals.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pruning.registry import Registry

from .pareto import Objectives

__all__ = ["Problem", "RandomSearch", "Strategy", "StrategySpec", "create_strategy",
           "get_strategy", "list_strategies", "register_strategy"]

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
    # genome -> the FLOPs target it is pruned onto; successive halving promotes the best
    # of each target, so no target loses its share to another's easier accuracy.
    stratum: Callable[[Sequence[float]], Hashable] | None = None

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
    # A `module:Class` strategy outside the registry declares this on the class.
    accepts_seeds: ClassVar[bool] = False

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
            proposed = self._propose()
            if proposed is None:
                return None
            genome = self.problem.clip(proposed)
            self.suggested += 1
        self.pending[trial_id] = genome
        return genome

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None) -> None:
        genome = self.pending.pop(trial_id)
        self._learn(trial_id, genome, result)

    def is_cheap(self, trial_id: str) -> bool:
        """Whether a pending trial is a cheap rung of successive halving: scored at the
        search's cheap fidelity, learnt from, but not counted against the budget."""
        return False

    def generation_of(self, index: int) -> int:
        """The generation of the `index`-th full evaluation, for reports: a block of
        `population` where the strategy has no generations of its own."""
        return index // self.problem.population

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


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: where its class lives and what it accepts.

    `target` is the class or a "module:Class" string imported on first use, so DEAP and
    Optuna load only when their algorithm is chosen. `seeds`: the strategy takes the
    search's seed genomes (single criteria spread over the FLOPs range) as its first
    proposals.
    """

    name: str
    target: type[Strategy] | str
    seeds: bool = False

    def load(self) -> type[Strategy]:
        if isinstance(self.target, str):
            module, _, cls = self.target.partition(":")
            loaded: type[Strategy] = getattr(importlib.import_module(module), cls)
            return loaded
        return self.target


STRATEGIES: Registry[StrategySpec | type[Strategy]] = Registry("algorithm", "search.algorithm")


def register_strategy(name: str, target: type[Strategy] | str, *, seeds: bool = False
                      ) -> StrategySpec:
    """Make `search.algorithm: name` run `target` (a Strategy subclass or "module:Class")."""
    spec = StrategySpec(name, target, seeds)
    STRATEGIES.add(name, spec)
    return spec


def list_strategies(pattern: str = "*") -> list[str]:
    return STRATEGIES.names(pattern)


def get_strategy(name: str) -> StrategySpec:
    """The registered strategy `name`, or a `module:Class` Strategy subclass."""
    entry = STRATEGIES.get(name)
    if isinstance(entry, StrategySpec):
        return entry
    if not (isinstance(entry, type) and issubclass(entry, Strategy)):
        raise ValueError(f"search.algorithm: {name!r} is not a Strategy subclass")
    return StrategySpec(name, entry, entry.accepts_seeds)


def create_strategy(name: str, problem: Problem) -> Strategy:
    return get_strategy(name).load()(problem)


register_strategy("deap-nsga2", "search.evolution:GenerationalNSGA", seeds=True)
register_strategy("deap-steady", "search.evolution:SteadyStateNSGA", seeds=True)
register_strategy("optuna-nsga2", "search.baselines:OptunaNSGA2")
register_strategy("optuna-tpe", "search.baselines:OptunaTPE", seeds=True)
register_strategy("random", RandomSearch)
