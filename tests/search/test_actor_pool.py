"""The resident actor pool on a real local Ray: W actors for the whole search (barriers
included), every candidate reported once, dying workers restarted and their genomes
retried, then recorded failed."""

import os

import pytest
import ray

from pruning import Fidelity
from search.actor_pool import ATTEMPTS, ActorPool, EvaluatorActor, run_actors
from search.config import load_config
from search.pareto import Objectives
from search.prepare import prepare, validate
from search.resident import Resident
from search.strategy import Problem, Strategy, create_strategy

from ..helpers import REPO

pytestmark = pytest.mark.slow

QUICK = ["base_training.epochs=2", "criteria.pool=[l1,bn_gamma]", "criteria.batches=1",
         "evaluation.finetune_steps=3", "evaluation.bn_batches=2", "search.workers=2",
         "search.max_restarts=3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("BLENDPRUNE_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("PYTHONPATH", str(REPO))  # workers import this module's actor class
    cfg = load_config("digits", QUICK)
    prepared = prepare(validate(cfg), log=lambda m: None)
    from search.ray_session import init_ray

    init_ray(None, 2)
    try:
        yield cfg, prepared, Resident.of(prepared, cfg)
    finally:
        ray.shutdown()
        mp.undo()


def _problem(prepared, population, generations):
    lo, hi = prepared.layout.bounds()
    return Problem(tuple(lo), tuple(hi), Objectives(("accuracy", "flops")), population,
                   generations, seed=1)


def _run(setup, strategy, n, **kw):
    cfg, _, resident = setup
    seen = []

    def on_complete(trial_id, genome, result, reason):
        seen.append((trial_id, genome, result, reason))
        strategy.on_trial_complete(trial_id, result)

    stats = run_actors(resident, strategy, on_complete, cfg.search, num_samples=n,
                       log=lambda m: None, **kw)
    return seen, stats


def test_w_actors_stay_resident_across_generation_barriers(setup):
    cfg, prepared, _ = setup
    strategy = create_strategy("deap-nsga2", _problem(prepared, 4, 3))
    seen, stats = _run(setup, strategy, 12)
    assert len(seen) == 12 and len({t for t, *_ in seen}) == 12
    assert all(r is not None and r["status"] == "ok" for _, _, r, _ in seen)
    # Two actors built their Evaluator once each, for three generations (two barriers).
    assert (stats.actors_started, len(stats.setup_seconds), stats.restarts) == (2, 2, 0)
    assert stats.completed == 12 and strategy.finished and not strategy.pending
    # The actor scored exactly the genome it was handed.
    _, genome, result, _ = seen[0]
    assert result["flops_ratio"] == pytest.approx(prepared.decoder.flops_ratio(genome))


def test_one_pool_serves_a_cheap_screen_then_a_halving_search_without_new_actors(setup):
    cfg, prepared, resident = setup
    screen = create_strategy("random", _problem(prepared, 4, 1))
    lo, hi = prepared.layout.bounds()
    halving = create_strategy("deap-nsga2", Problem(
        tuple(lo), tuple(hi), Objectives(("accuracy", "flops")), 4, 2, seed=1,
        options={"halving": 2}))
    steps = []

    def learn(strategy):
        def on_complete(trial_id, genome, result, reason):
            steps.append((strategy.is_cheap(trial_id), result["timings"].get("finetune")))
            strategy.on_trial_complete(trial_id, result)
        return on_complete

    with ActorPool(resident, cfg.search, log=lambda m: None) as pool:
        pool.run(screen, learn(screen), num_samples=4, fidelity=Fidelity(finetune_steps=0))
        stats = pool.run(halving, learn(halving), num_samples=8)
    assert (stats.actors_started, len(stats.setup_seconds)) == (2, 2)  # no new actors
    assert stats.completed == 4 + 8 and stats.cheap == 2 * 4 + 2 * 4
    # the screen and the cheap rung ran adaptive BN alone; full candidates fine-tuned
    assert [ft is None for cheap, ft in steps[:4]] == [True] * 4
    assert all((ft is None) == cheap for cheap, ft in steps[4:])
    assert halving.finished and not halving.pending


class DiesOnWideGenomes(EvaluatorActor):
    """Exits (as a native crash would) on genomes whose first gene is above the middle."""

    def evaluate(self, genome, finetune_steps=None, seed=None):
        lo, hi = self.evaluator.layout.bounds()
        if genome[0] > (lo[0] + hi[0]) / 2:
            os._exit(1)
        return super().evaluate(genome, finetune_steps, seed)


def test_a_genome_that_kills_its_worker_is_retried_then_recorded_failed(setup):
    _, prepared, _ = setup
    strategy = create_strategy("random", _problem(prepared, 6, 1))
    seen, stats = _run(setup, strategy, 6, actor=DiesOnWideGenomes)
    lo, hi = prepared.layout.bounds()
    deadly = [s for s in seen if s[1][0] > (lo[0] + hi[0]) / 2]
    assert deadly and len(deadly) < 6, "the seed must give both kinds of genome"
    assert len(seen) == 6 and len({t for t, *_ in seen}) == 6
    assert all(r is None and reason.startswith("worker died") for _, _, r, reason in deadly)
    assert all(r["status"] == "ok" for _, _, r, _ in seen if r is not None)
    assert stats.requeued == len(deadly) * (ATTEMPTS - 1)
    # Every death but the last per worker was followed by a restart before the end.
    assert stats.restarts + stats.replaced >= len(deadly) * ATTEMPTS - 2


class Stalls(Strategy):
    """Never proposes anything and never finishes: a broken strategy."""

    def _propose(self):
        return None

    def suggest(self, trial_id):
        return None


def test_a_strategy_that_proposes_nothing_while_idle_is_an_error(setup):
    _, prepared, _ = setup
    with pytest.raises(RuntimeError, match="proposed nothing while no candidate"):
        _run(setup, Stalls(_problem(prepared, 4, 1)), 4)
