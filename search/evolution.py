"""NSGA-II (NSGA-III beyond two objectives) over genomes with DEAP's operators.

Two schedules share the operators: `GenerationalNSGA` evaluates a whole generation
before selecting, `SteadyStateNSGA` breeds one child whenever a worker is free, so a
slow candidate never idles the others (design §2.6).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from typing import Any

from deap import base, tools

from .strategy import Genome, Problem, Strategy

__all__ = ["GenerationalNSGA", "SteadyStateNSGA"]

_RETRIES = 8  # mutations tried before a child with an already-seen plan is accepted
_FITNESS_CLASSES: dict[tuple[float, ...], type] = {}


def _fitness_class(weights: tuple[float, ...]) -> type:
    # DEAP wants weights as a class attribute; one class per objective set, no creator globals.
    if weights not in _FITNESS_CLASSES:
        _FITNESS_CLASSES[weights] = type("Fitness", (base.Fitness,), {"weights": weights})
    return _FITNESS_CLASSES[weights]


class _Individual(list):
    fitness: base.Fitness


class _NSGA(Strategy):
    """Shared machinery: DEAP individuals, variation, selection, and a private RNG.

    DEAP's operators draw from the global `random` module; `_own_rng` swaps this
    strategy's state in around every call, so two strategies never share a stream and
    the state can be saved.
    """

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self._rng_state: Any = random.Random(problem.seed).getstate()
        self._fitness = _fitness_class(problem.objectives.weights)
        n_obj = len(problem.objectives.weights)
        self._ref_points = tools.uniform_reference_points(n_obj, 12) if n_obj >= 3 else None
        self.population: list[_Individual] = []
        self.queue: list[Genome] = []
        opts = problem.options
        self.cx_eta = float(opts.get("crossover_eta", 15.0))
        self.mut_eta = float(opts.get("mutation_eta", 20.0))
        self.cx_prob = float(opts.get("crossover_prob", 0.9))
        self.seen: set[Any] = set()
        with self._own_rng():
            self.queue = self._initial()
            for g in self.queue:
                self._is_new(g)
        self.first = len(self.queue)  # generation 0's full evaluations: every seed

    def _is_new(self, genome: Genome) -> bool:
        """True (and remembered) unless a genome with the same plan was already proposed."""
        if self.problem.key is None:
            return True
        k = self.problem.key(genome)
        if k in self.seen:
            return False
        self.seen.add(k)
        return True

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        outer = random.getstate()
        random.setstate(self._rng_state)
        try:
            yield
        finally:
            self._rng_state = random.getstate()
            random.setstate(outer)

    def _initial(self) -> list[Genome]:
        """Generation 0: every seed (up to the budget, so it may outnumber the population:
        every criterion at every FLOPs target is worth its evaluation), then uniform random
        genomes up to the population."""
        p = self.problem
        seeds = [list(s) for s in p.seeds[: p.budget]]
        while len(seeds) < p.population:
            seeds.append([random.uniform(lo, hi) for lo, hi in zip(p.lower, p.upper)])
        return seeds

    def generation_of(self, index: int) -> int:
        population = self.problem.population
        return 0 if index < self.first else 1 + (index - self.first) // population

    def generation_size(self, generation: int) -> int:
        """Full evaluations in `generation`: every seed at 0, then a population each
        until the budget runs out (the last one may be short)."""
        if generation == 0:
            return self.first
        left = self.problem.budget - self.first - (generation - 1) * self.problem.population
        return max(0, min(left, self.problem.population))

    def _individual(self, genome: Genome, fitness: tuple[float, ...] | None = None
                    ) -> _Individual:
        ind = _Individual(genome)
        ind.fitness = self._fitness()
        if fitness is not None:
            ind.fitness.values = fitness
        return ind

    def _select(self, individuals: list[_Individual], k: int) -> list[_Individual]:
        if self._ref_points is not None:
            return tools.selNSGA3(individuals, k, self._ref_points)
        return tools.selNSGA2(individuals, k)

    def _parents(self, n: int) -> list[_Individual]:
        """Binary crowded tournaments (DEAP's selTournamentDCD wants a multiple of 4)."""
        pool = list(self.population)
        if self._ref_points is not None or len(pool) < 4:
            return [random.choice(pool) for _ in range(n)]
        tools.selNSGA2(pool, len(pool))  # assigns the crowding distances DCD compares
        k = 4 * math.ceil(n / 4)
        out: list[_Individual] = []
        while len(out) < k:
            ext = pool + random.sample(pool, (-len(pool)) % 4)
            out += tools.selTournamentDCD(ext, len(ext))
        return out[:n]

    def _breed(self, n: int) -> list[Genome]:
        p = self.problem
        # Genes with equal bounds are pinned (e.g. a fixed alpha): vary only the free ones.
        free = [i for i, (lo, hi) in enumerate(zip(p.lower, p.upper)) if hi > lo]
        low, up = [p.lower[i] for i in free], [p.upper[i] for i in free]
        children: list[Genome] = []
        parents = self._parents(n + n % 2)
        for a, b in zip(parents[::2], parents[1::2]):
            c1, c2 = [a[i] for i in free], [b[i] for i in free]
            if random.random() < self.cx_prob:
                c1, c2 = tools.cxSimulatedBinaryBounded(c1, c2, self.cx_eta, low, up)
            for parent, c in ((a, c1), (b, c2)):
                indpb = 1.0 / len(c)
                for _ in range(_RETRIES):
                    tools.mutPolynomialBounded(c, self.mut_eta, low, up, indpb=indpb)
                    child = list(parent)
                    for i, v in zip(free, c):
                        child[i] = v
                    child = p.clip(child)
                    if self._is_new(child):
                        break
                    indpb = min(1.0, 2 * indpb)  # a duplicate plan: mutate harder
                children.append(child)
        return children[:n]

    def _propose(self) -> Genome | None:
        return self.queue.pop(0) if self.queue else None

    def get_state(self) -> dict[str, Any]:
        version, internal, gauss = self._rng_state
        return {**super().get_state(), "queue": self.queue, "first": self.first,
                "population": [[list(i), list(i.fitness.values)] for i in self.population],
                "rng": [version, list(internal), gauss]}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.queue = [list(g) for g in state["queue"]]
        self.first = state.get("first", self.problem.population)
        self.population = [self._individual(g, tuple(f)) for g, f in state["population"]]
        version, internal, gauss = state["rng"]
        self._rng_state = (version, tuple(internal), gauss)


class GenerationalNSGA(_NSGA):
    """Classic NSGA-II: evaluate `population` children, select parents + children.
    Generation 0 is every seed, more than `population` where there are more (the budget
    left after it shortens the later generations), or seeds and random genomes.

    With successive halving (`options["halving"]` = eta > 1), each generation breeds eta
    times as many children, scores them all at a cheap rung (`is_cheap`), and evaluates in
    full only the best `population` of them: within each FLOPs target (`Problem.stratum`)
    ranked by cheap accuracy and taken in turn from every target. Only full results enter
    selection. The seeds of generation 0 skip the cheap rung, so the front starts from
    every single criterion's own result.
    """

    name = "deap-nsga2"

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.generation = 0
        self.offspring: list[_Individual] = []
        self.eta = int(problem.options.get("halving", 1))
        self.cheap_queue: list[Genome] = []
        self.cheap_pending: dict[str, Genome] = {}
        self.cheap_scored: list[tuple[Genome, tuple[float, ...]]] = []
        self.to_promote = 0
        if self.eta > 1:  # generation 0: seeds in full, eta x the random rest at the rung
            n_seeds = min(len(problem.seeds), problem.budget)
            rest = self.queue[n_seeds:]
            self.queue = self.queue[:n_seeds]
            self.to_promote = len(rest)
            with self._own_rng():
                while len(rest) < self.eta * self.to_promote:
                    genome = [random.uniform(lo, hi) for lo, hi in
                              zip(problem.lower, problem.upper)]
                    if self._is_new(genome):
                        rest.append(genome)
            self.cheap_queue = rest
            self.first = n_seeds + self.to_promote

    def suggest(self, trial_id: str) -> Genome | None:
        if self.cheap_queue and not self.retry:
            genome = self.cheap_queue.pop(0)
            self.cheap_pending[trial_id] = genome
            return genome
        return super().suggest(trial_id)

    def is_cheap(self, trial_id: str) -> bool:
        return trial_id in self.cheap_pending

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None) -> None:
        if trial_id not in self.cheap_pending:
            super().on_trial_complete(trial_id, result)
            return
        genome = self.cheap_pending.pop(trial_id)
        self.cheap_scored.append((genome, self.problem.objectives.fitness(result)))
        if not self.cheap_queue and not self.cheap_pending:
            self.queue += self._promote(self.cheap_scored, self.to_promote)
            self.cheap_scored = []

    def _promote(self, scored: list[tuple[Genome, tuple[float, ...]]], k: int) -> list[Genome]:
        """The k best cheaply scored genomes, taken in turn from each FLOPs target."""
        if self.problem.stratum is None:
            with self._own_rng():
                chosen = self._select([self._individual(g, f) for g, f in scored], k)
            return [list(c) for c in chosen]
        groups: dict[Any, list[tuple[Genome, tuple[float, ...]]]] = {}
        for genome, fit in scored:
            groups.setdefault(self.problem.stratum(genome), []).append((genome, fit))
        # Within a target the costs are equal by construction: accuracy (first) decides.
        ranked = [sorted(g, key=lambda x: -x[1][0]) for _, g in sorted(
            groups.items(), key=lambda kv: str(kv[0]))]
        order = [r[i][0] for i in range(max(map(len, ranked))) for r in ranked if i < len(r)]
        return order[:k]

    def _learn(self, trial_id: str, genome: Genome, result: dict[str, Any] | None) -> None:
        self.offspring.append(self._individual(genome, self.problem.objectives.fitness(result)))
        if len(self.offspring) < self.generation_size(self.generation):
            return
        with self._own_rng():
            self.population = self._select(self.population + self.offspring,
                                           self.problem.population)
            self.offspring = []
            self.generation += 1
            k = self.generation_size(self.generation)
            if k > 0:
                if self.eta > 1:
                    self.cheap_queue, self.to_promote = self._breed(self.eta * k), k
                else:
                    self.queue = self._breed(k)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "generation": self.generation,
                "offspring": [[list(i), list(i.fitness.values)] for i in self.offspring],
                "cheap_queue": self.cheap_queue, "cheap_pending": dict(self.cheap_pending),
                "cheap_scored": [[g, list(f)] for g, f in self.cheap_scored],
                "to_promote": self.to_promote}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore; cheap trials that were running are scored again first."""
        super().set_state(state)
        self.generation = state["generation"]
        self.offspring = [self._individual(g, tuple(f)) for g, f in state["offspring"]]
        self.cheap_queue = [list(g) for g in (*state.get("cheap_pending", {}).values(),
                                              *state.get("cheap_queue", []))]
        self.cheap_pending = {}
        self.cheap_scored = [(list(g), tuple(f)) for g, f in state.get("cheap_scored", [])]
        self.to_promote = state.get("to_promote", 0)


class SteadyStateNSGA(_NSGA):
    """(mu + 1) NSGA-II: after generation 0, one child per free worker, survival on arrival."""

    name = "deap-steady"

    def _propose(self) -> Genome | None:
        if self.queue:
            return self.queue.pop(0)
        if len(self.population) < 2:
            return None  # not enough parents yet: wait for generation 0 to report
        with self._own_rng():
            return self._breed(1)[0]

    def _learn(self, trial_id: str, genome: Genome, result: dict[str, Any] | None) -> None:
        self.population.append(self._individual(genome,
                                                self.problem.objectives.fitness(result)))
        if len(self.population) > self.problem.population:
            with self._own_rng():
                self.population = self._select(self.population, self.problem.population)
