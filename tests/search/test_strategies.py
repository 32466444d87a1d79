"""Contract tests over every strategy, plus NSGA specifics, on a toy problem."""

import dataclasses
import json

import numpy as np
import pytest
from optuna.trial import TrialState

import search
from search.config import load_config
from search.pareto import Objectives, hypervolume
from search.strategy import Problem, RandomSearch, Strategy, create_strategy, get_strategy

ALGORITHMS = search.list_strategies()
SEEDED = [n for n in ALGORITHMS if get_strategy(n).seeds]


class FirstCorner(Strategy):
    """A user's strategy outside the registry: the lower corner, then uniform draws."""

    accepts_seeds = True

    def __init__(self, problem):
        super().__init__(problem)
        self.inner = RandomSearch(problem)

    def _propose(self):
        return list(self.problem.lower) if self.suggested == 0 else self.inner._propose()

    def get_state(self):
        return {**super().get_state(), "inner": self.inner.get_state()}

    def set_state(self, state):
        super().set_state(state)
        self.inner.set_state(state["inner"])


def toy_problem(population=6, generations=3, seeds=()):
    # 3 "alphas" in [0,1] and 2 "ratios" in [0,0.8]
    return Problem((0.0,) * 5, (1.0, 1.0, 1.0, 0.8, 0.8), Objectives(("accuracy", "flops"), 0.6),
                   population, generations, seed=1, seeds=tuple(seeds))


def toy_result(genome):
    """Accuracy falls and FLOPs fall with the ratios; alpha 0 helps a little."""
    r = np.mean(genome[3:])
    return {"status": "ok", "accuracy": 0.9 - 0.5 * r ** 2 + 0.05 * genome[0],
            "flops_ratio": (1 - r) ** 2}


def drive(strategy, workers=2):
    """Run a strategy to its budget with `workers` concurrent trials; returns the genomes."""
    running, done, n = [], [], 0
    while not strategy.finished or running:
        while len(running) < workers:
            g = strategy.suggest(f"t{n}")
            if g is None:
                break
            running.append((f"t{n}", g))
            n += 1
        assert running, "strategy stalled with no running trial"
        tid, g = running.pop(0)
        strategy.on_trial_complete(tid, toy_result(g))
        done.append(g)
    return done


@pytest.mark.parametrize("name", [*ALGORITHMS, "tests.search.test_strategies:FirstCorner"])
def test_budget_is_exact_and_genomes_in_bounds(name):
    p = toy_problem()
    genomes = drive(create_strategy(name, p))
    assert len(genomes) == p.budget
    arr = np.array(genomes)
    assert np.all(arr >= np.array(p.lower)) and np.all(arr <= np.array(p.upper))


def test_unknown_algorithm_is_named():
    with pytest.raises(ValueError, match="search.algorithm: unknown algorithm 'cmaes'"):
        create_strategy("cmaes", toy_problem())


def test_registry_lists_the_builtin_strategies_and_what_they_accept():
    assert ALGORITHMS == ["deap-nsga2", "deap-steady", "optuna-nsga2", "optuna-tpe", "random"]
    assert SEEDED == ["deap-nsga2", "deap-steady", "optuna-tpe"]


def test_a_strategy_outside_the_registry_is_reached_as_module_class():
    name = "tests.search.test_strategies:FirstCorner"
    assert load_config(None, [f"search.algorithm={name}"]).search.algorithm == name
    spec = get_strategy(name)
    assert spec.load() is FirstCorner and spec.seeds
    genomes = drive(create_strategy(name, toy_problem()))
    assert genomes[0] == [0.0] * 5 and len(genomes) == toy_problem().budget


def test_registering_a_strategy_twice_or_with_a_colon_is_refused():
    with pytest.raises(ValueError, match="algorithm 'random' is already registered"):
        search.register_strategy("random", RandomSearch)
    with pytest.raises(ValueError, match="reserved for module:attr"):
        search.register_strategy("my:random", RandomSearch)


@pytest.mark.parametrize("name", SEEDED)
def test_seeds_are_generation_zero(name):
    seeds = [(1.0, 0, 0, 0.3, 0.3), (0, 1.0, 0, 0.3, 0.3), (0, 0, 1.0, 0.3, 0.3)]
    s = create_strategy(name, toy_problem(seeds=seeds))
    first = [s.suggest(f"t{i}") for i in range(6)]
    assert [tuple(g) for g in first[:3]] == [tuple(map(float, x)) for x in seeds]


@pytest.mark.parametrize("name", SEEDED)
def test_a_resumed_search_proposes_each_seed_once(name):
    seeds = [(1.0, 0, 0, 0.3, 0.3), (0, 1.0, 0, 0.3, 0.3), (0, 0, 1.0, 0.3, 0.3)]
    p = toy_problem(population=4, generations=3, seeds=seeds)
    a = create_strategy(name, p)
    ga = [a.suggest(f"t{i}") for i in range(2)]
    for i, g in enumerate(ga):
        a.on_trial_complete(f"t{i}", toy_result(g))
    b = create_strategy(name, p)
    b.set_state(json.loads(json.dumps(a.get_state())))
    rest = drive(b)
    assert len(rest) == p.budget - 2
    assert [sum(g == list(map(float, s)) for g in ga + rest) for s in seeds] == [1, 1, 1]


def test_seeded_tpe_models_after_the_seeds_and_a_quarter_population_of_random_trials():
    seeds = [(1.0, 0, 0, 0.3, 0.3), (0, 1.0, 0, 0.3, 0.3), (0, 0, 1.0, 0.3, 0.3)]
    seeded = create_strategy("optuna-tpe", toy_problem(population=8, seeds=seeds))
    assert seeded.startup_trials == 3 + 2
    assert create_strategy("optuna-tpe", toy_problem(population=8)).startup_trials == 8


@pytest.mark.parametrize("halving", [1, 3])
def test_seeds_past_the_population_are_all_generation_zero(halving):
    # 7 seeds, population 4: generation 0 evaluates all 7 before selecting 4 of them; the
    # budget (12) stays exact, so generations 1 and 2 take the 5 left (4 + 1).
    seeds = [(i / 10, 0, 0, 0.1 * (i % 4), 0.1 * (i % 4)) for i in range(7)]
    problem = dataclasses.replace(toy_problem(population=4, generations=3, seeds=seeds),
                                  options={"halving": halving})
    s = create_strategy("deap-nsga2", problem)
    gen0 = [s.suggest(f"t{i}") for i in range(7)]
    assert [tuple(g) for g in gen0] == [tuple(map(float, x)) for x in seeds]
    assert s.suggest("t7") is None and not any(s.is_cheap(f"t{i}") for i in range(7))
    for i, g in enumerate(gen0[:6]):
        s.on_trial_complete(f"t{i}", toy_result(g))
    assert s.generation == 0  # 6 of 7 reported: no selection yet
    s.on_trial_complete("t6", toy_result(gen0[6]))
    assert s.generation == 1 and len(s.population) == 4
    cheap = 3 * 5 if halving > 1 else 0  # halving scores 3x the 5 cheaply first
    assert len(drive(s)) == 5 + cheap and s.suggested == 12
    assert [s.generation_of(i) for i in range(12)] == [0] * 7 + [1] * 4 + [2]
    restored = create_strategy("deap-nsga2", problem)
    restored.set_state(json.loads(json.dumps(s.get_state())))
    assert restored.generation_of(6) == 0 and restored.generation_of(7) == 1


def test_generational_waits_for_the_generation():
    s = create_strategy("deap-nsga2", toy_problem(population=4, generations=2))
    gen0 = [s.suggest(f"t{i}") for i in range(4)]
    assert s.suggest("t4") is None  # generation 1 is bred only after 0 reports
    for i, g in enumerate(gen0[:3]):
        s.on_trial_complete(f"t{i}", toy_result(g))
    assert s.suggest("t4") is None
    s.on_trial_complete("t3", toy_result(gen0[3]))
    assert s.suggest("t4") is not None and s.generation == 1


def test_steady_state_keeps_population_size():
    s = create_strategy("deap-steady", toy_problem(population=5, generations=4))
    drive(s, workers=3)
    assert len(s.population) == 5


def _hv(genomes, objectives):
    results = [toy_result(g) for g in genomes]
    pts = np.array([objectives.values(r) for r in results if objectives.feasible(r)])
    return hypervolume(pts, objectives.weights, (0.0, 1.0)) if len(pts) else 0.0


def test_evolution_breeds_children_better_than_random_generation_zero():
    # The last generation's *children* (not the population, which elitism would keep at
    # least as good as generation 0 whatever breeding does) against the random genomes
    # of generation 0, over 5 seeds. Breeding uniform random children gives a median
    # gain of -0.026; children copied from one dominated genome give 0 hypervolume.
    gains = []
    for seed in range(5):
        base = toy_problem(population=8, generations=6)
        p = Problem(base.lower, base.upper, base.objectives, 8, 6, seed=seed)
        genomes = drive(create_strategy("deap-nsga2", p))
        gains.append(_hv(genomes[-8:], p.objectives) - _hv(genomes[:8], p.objectives))
    assert float(np.median(gains)) > 0.01, gains


@pytest.mark.parametrize("name", [*ALGORITHMS, "tests.search.test_strategies:FirstCorner"])
def test_state_round_trips_and_continues_identically(name):
    p = toy_problem(population=4, generations=4)
    a = create_strategy(name, p)
    ga = [a.suggest(f"t{i}") for i in range(4)]
    for i, g in enumerate(ga[:3]):
        a.on_trial_complete(f"t{i}", toy_result(g))
    state = json.loads(json.dumps(a.get_state()))  # must survive JSON
    b = create_strategy(name, p)
    b.set_state(state)
    # the genome that was running when the state was saved is re-issued first
    assert b.suggest("r0") == ga[3]
    a_next, b_next = [], []
    a.on_trial_complete("t3", toy_result(ga[3]))
    b.on_trial_complete("r0", toy_result(ga[3]))
    for i in range(4):
        a_next.append(a.suggest(f"n{i}"))
        b_next.append(b.suggest(f"n{i}"))
    if hasattr(a, "study"):  # Optuna's sampler RNG is not part of the state; its history is
        def told(s):
            return sorted((tuple(t.params.values()), tuple(t.values))
                          for t in s.study.get_trials(states=(TrialState.COMPLETE,)))

        assert len(told(a)) == 4 and told(b) == told(a)
        assert all(g is not None and p.clip(g) == g for g in b_next)
    else:
        assert a_next == b_next


def test_pinned_genes_stay_fixed():
    p = Problem((1.0, 0.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.8, 0.8),
                Objectives(("accuracy", "flops"), 0.6), 4, 3, seed=2)
    genomes = drive(create_strategy("deap-nsga2", p))
    assert all(g[:3] == [1.0, 0.0, 0.0] for g in genomes)
    assert len({tuple(g[3:]) for g in genomes}) > 4


def test_children_avoid_already_seen_plans():
    # The "plan" only depends on the ratios rounded to 0.1: many genomes share one.
    def key(g):
        return tuple(round(v, 1) for v in g[3:])

    base = toy_problem(population=6, generations=4)
    p = Problem(base.lower, base.upper, base.objectives, 6, 4, seed=3, key=key)
    genomes = drive(create_strategy("deap-nsga2", p))
    keys = [key(g) for g in genomes]
    plain = drive(create_strategy("deap-nsga2", base))
    assert len(set(keys)) > len({key(g) for g in plain})


def cheap_result(genome):
    """The cheap rung ranks by something the full score ignores (genome[1])."""
    return {**toy_result(genome), "accuracy": genome[1]}


def halving_problem(seeds=()):
    base = toy_problem(population=4, generations=3, seeds=seeds)
    return Problem(base.lower, base.upper, base.objectives, 4, 3, seed=5, seeds=base.seeds,
                   options={"halving": 3}, stratum=lambda g: g[3] > 0.4)


def drive_halving(strategy, workers=3):
    """Like `drive`, scoring cheap trials with `cheap_result`; (cheap, full) genomes."""
    running, cheap, full, n = [], [], [], 0
    while not strategy.finished or running:
        while len(running) < workers:
            g = strategy.suggest(f"t{n}")
            if g is None:
                break
            running.append((f"t{n}", g, strategy.is_cheap(f"t{n}")))
            n += 1
        assert running, "strategy stalled with no running trial"
        tid, g, is_cheap = running.pop(0)
        strategy.on_trial_complete(tid, cheap_result(g) if is_cheap else toy_result(g))
        (cheap if is_cheap else full).append(g)
    return cheap, full


def test_halving_scores_eta_times_cheaply_and_evaluates_the_best_of_each_target_in_full():
    seeds = [(1.0, 0, 0, 0.3, 0.3), (0, 1.0, 0, 0.6, 0.6)]
    s = create_strategy("deap-nsga2", halving_problem(seeds))
    cheap, full = drive_halving(s)
    assert len(full) == 12  # the budget counts full evaluations only
    assert len(cheap) == 3 * 2 + 3 * 4 + 3 * 4  # generation 0's seeds skip the cheap rung
    assert [tuple(g) for g in full[:2]] == [tuple(map(float, x)) for x in seeds]
    # Generation 2: 12 cheap children, then the 4 full ones, two from each target, each
    # the best of its target by the cheap score (genome[1]).
    last_cheap, last_full = cheap[-12:], full[-4:]
    for side in (False, True):
        group = sorted((g for g in last_cheap if (g[3] > 0.4) == side), key=lambda g: -g[1])
        promoted = [g for g in last_full if (g[3] > 0.4) == side]
        assert sorted(promoted) == sorted(group[:len(promoted)])
    assert sum(g[3] > 0.4 for g in last_full) == 2


def test_halving_state_round_trips_with_cheap_trials_running():
    p = halving_problem()
    a = create_strategy("deap-nsga2", p)
    started = [a.suggest(f"t{i}") for i in range(5)]  # 12 cheap in generation 0
    assert all(a.is_cheap(f"t{i}") for i in range(5))
    for i in range(3):
        a.on_trial_complete(f"t{i}", cheap_result(started[i]))
    b = create_strategy("deap-nsga2", p)
    b.set_state(json.loads(json.dumps(a.get_state())))
    # the two cheap trials that were running are scored again first, still cheap
    assert [b.suggest("r0"), b.suggest("r1")] == started[3:5]
    assert b.is_cheap("r0") and b.is_cheap("r1")
    for tid, g in (("t3", started[3]), ("t4", started[4])):
        a.on_trial_complete(tid, cheap_result(g))
    for tid, g in (("r0", started[3]), ("r1", started[4])):
        b.on_trial_complete(tid, cheap_result(g))
    assert drive_halving(a) == drive_halving(b)
