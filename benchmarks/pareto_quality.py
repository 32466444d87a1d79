"""Pareto quality on real data: blendprune's searches against every single criterion,
random search and Optuna, at matched FLOPs and equal budget.

The base model is the committed ResNet-20 of `benchmarks.base_models`. Every candidate of
every method is pruned onto one of the FLOPs `--targets` (the product's target repair),
scored on the holdout after adaptive BN and a brief fine-tune, with common random numbers,
and recorded with its BN-only accuracy and its wall time. Methods:

  optuna-tpe-seeded   the product's default search (search.algorithm=optuna-tpe):
                 Optuna's TPE over blended criteria and ratio profiles, started from every
                 criterion cluster at every target (enqueued trials), then a quarter
                 population of random start-up trials
  deap-nsga2-seeded    NSGA-II (search.algorithm=deap-nsga2) over the same genome, its
                 generation 0 every criterion cluster at every target (the default
                 until the results below)
  deap-nsga2-halving   the same with successive halving (search.halving=3): each
                 generation scores 3x the children after adaptive BN alone and fine-tunes
                 the best of each target; fewer generations for the same compute
  ratios-only    ablation: NSGA-II with one criterion, picked inside its own budget by
                 screening each cluster's uniform plan at the middle target
  tpe-ratios-only  the same one-criterion screen, then the seeded TPE over ratios alone
                 (fewer genes for TPE's density model; the product's search.screen with
                 search.screen_margin=0)
  random, optuna-nsga2, optuna-tpe   the same genome and repair, unseeded
  single         each criterion at uniform ratios at each target (a baseline, no search)
  dcff, cdp, lapp   the training modes at each target instead of a pick's final
                 fine-tune, as long (whole epochs nearest `--final-steps`): DCFF on the
                 uniform L1 plan, CDP and LAPP from the base model down to the target
                 (`--modes`)
  dcff-searched  DCFF on the default search's pick at each target, with that pick's
                 search and fine-tune seeds, so it pairs with the pick's plain fine-tune

Every search gets the same number of candidates per search seed, duplicates of an
evaluated plan skipped as in the product; a plan that the single-criterion sweep or
another search already evaluated takes that stored record (a result depends on the plan
alone) and its seconds count as spent. At each target, the best holdout candidate of
each (method, search seed) within [t - 0.02, t], and the single criterion best on the
holdout there, are fine-tuned longer and scored on the test split: `--final-seeds`
fine-tune seeds per search seed, and the single criterion with every one of them, so each
difference pairs two models fine-tuned on the very same batches. The result's `summary`
holds test accuracy at matched FLOPs (mean and 95% interval), each method (the default
one singled out) minus the best single criterion paired by fine-tune seed, the attainment
hypervolume over [lowest target, budget] (`benchmarks.matched`) and the compute seconds
(a candidate's wall time; one over 5x its search's median was a paused process and counts
at the median; a training mode's CPU time).
A pick whose plan another pick shares is fine-tuned once per seed. Searches and final
fine-tunes are kept in `benchmarks/progress/` as they finish, keyed by the settings and
the base model's weights, so a run stopped midway resumes where it was, across sessions
once that file is committed, and a retrained base starts afresh; `--status` prints the
tables of what is stored so far.

    python -m benchmarks.pareto_quality --dataset fashion-mnist --seeds 0 1 2 --jobs 2
    python -m benchmarks.pareto_quality --dataset fashion-mnist --status
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import (
    CACHE,
    DEFAULT_DATA_ROOT,
    PROGRESS,
    RESULTS,
    candidate_settings,
    write_progress,
    write_result,
)
from benchmarks.base_models import (
    HOLDOUT,
    base_model,
    load,
    test_accuracy,
    weights,
    weights_digest,
)
from benchmarks.matched import attainment, interval, paired, pick_at
from benchmarks.report import pareto_table
from pruning import (
    CDP,
    DCFF,
    LAPP,
    CostModel,
    Distill,
    Evaluator,
    Fidelity,
    GenomeLayout,
    GroupMap,
    Plan,
    ScoreTable,
    Targets,
    TensorLoader,
    apply_plan,
    compute_scores,
    finetune,
    holdout_split,
    train,
)
from pruning.targets import uniform_plan
from search.pareto import Objectives, non_dominated
from search.strategy import Problem, create_strategy

DEFAULT = "optuna-tpe-seeded"  # the method that search.algorithm's default runs
WIDTH = 0.02  # a pick at target t has FLOPs in [t - WIDTH, t]
# A candidate's wall time over this many times its search's median was a paused process
# (SIGSTOP while the machine ran something else): it counts at that median.
PAUSED = 5.0
# What a search's result depends on (the cache key); finals are keyed by their steps too.
SEARCH_SETTINGS = ("dataset", "targets", "pool", "budget", "population", "steps",
                   "bn_batches")


class Bench:
    """Base model, ScoreTable and evaluator of one dataset, built once per process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data = load(args.dataset, args.data_root)
        self.tr, self.ho = holdout_split(self.data, HOLDOUT, seed=0)
        self.mean, self.std = self.data.mean_std()
        self.model = base_model(args.dataset, self.data)
        self.gm = GroupMap(self.model, self.tr.x[:1].float())
        self.digest = weights_digest(self.model)
        table_path = CACHE / "bench" / f"resnet20-{args.dataset}-{self.digest}.scores.npz"
        if table_path.exists():
            self.table = ScoreTable.load(table_path)
        else:
            batches = TensorLoader(*self.tr, batch_size=64, mean=self.mean,
                                   std=self.std).batches(8)
            self.table = compute_scores(self.model, self.gm, args.pool, batches)
            table_path.parent.mkdir(parents=True, exist_ok=True)
            self.table.save(table_path)
        self.layout = GenomeLayout.build(self.table, self.gm, granularity="group",
                                         max_ratio=0.8, min_channels=4,
                                         targets=Targets(tuple(args.targets)))
        self.evaluator = self.make_evaluator(seed=0)

    def make_evaluator(self, seed: int, distill: float = 0.0) -> Evaluator:
        s = candidate_settings(seed, bn_batches=self.args.bn_batches,
                               finetune_steps=self.args.steps, lr=0.02, batch_size=128,
                               distill=distill)
        return Evaluator(self.model, self.gm, self.table, self.layout, self.tr, self.ho,
                         mean=self.mean, std=self.std, pad=self.data.pad, flip=self.data.flip,
                         settings=s)

    def uniform(self, k: int, target: float) -> list[float]:
        """Criterion k alone at uniform ratios, repaired onto `target`."""
        return self.layout.make(np.eye(len(self.layout.criteria))[k], 0.5, target)


_BENCH: Bench | None = None
PlanKey = tuple[tuple[int, ...], ...]


def plan_key(plan: dict[str, list[int]]) -> PlanKey:
    """A plan as a hashable key: the kept channels, group by group (in the model's order)."""
    return tuple(tuple(v) for v in plan.values())


def _init(args: argparse.Namespace) -> None:
    global _BENCH
    torch.set_num_threads(1)
    _BENCH = Bench(args)


def _bench() -> Bench:
    assert _BENCH is not None
    return _BENCH


def _record(genome: list[float], res: Any) -> dict[str, Any]:
    return {"genome": [float(g) for g in genome], "accuracy": res.accuracy,
            "bn_accuracy": res.bn_accuracy, "flops_ratio": res.flops_ratio,
            "params_ratio": res.params_ratio, "status": res.status, "plan": res.plan,
            "seconds": res.timings.get("total", 0.0)}


@dataclass(frozen=True)
class Method:
    """How one searching method runs: its strategy, whether it is seeded with every
    criterion cluster at every target, whether it first picks one criterion (the
    ratios-only ablation), successive halving's eta, and its generations (None: the
    budget / population). Halving's cheap rung (adaptive BN alone, ~1.1 s against ~6.4 s
    for a full candidate on Fashion-MNIST) buys eta x population cheap scores per
    generation, so it runs fewer generations: after generation 0's seeds in full (every
    cluster at every target: 24 on Fashion-MNIST), 36 full + 36 cheap ~ 0.9x the seconds of
    48 full."""

    algorithm: str
    seeded: bool = False
    one_criterion: bool = False
    halving: int = 1
    generations: int | None = None


METHODS = {
    DEFAULT: Method("optuna-tpe", seeded=True),
    "deap-nsga2-seeded": Method("deap-nsga2", seeded=True),
    "deap-nsga2-halving": Method("deap-nsga2", seeded=True, halving=3, generations=3),
    "ratios-only": Method("deap-nsga2", seeded=True, one_criterion=True),
    "tpe-ratios-only": Method("optuna-tpe", seeded=True, one_criterion=True),
    "random": Method("random"),
    "optuna-nsga2": Method("optuna-nsga2"),
    "optuna-tpe": Method("optuna-tpe"),
}


# Each one-criterion ablation and the blended search it takes the blend out of: their
# paired difference is what the blend itself adds (the summary's `blend_gain`).
ABLATIONS = {"ratios-only": "deap-nsga2-seeded", "tpe-ratios-only": DEFAULT}


def run_search(job: tuple[str, int]) -> dict[str, Any]:
    """One (method, search seed): `budget` candidates with the evaluator in this process."""
    name, seed = job
    method = METHODS[name]
    b = _bench()
    args, ev = b.args, b.evaluator
    lo, hi = b.layout.bounds()
    objectives = Objectives(("accuracy", "flops"), max(args.targets))
    records: list[dict[str, Any]] = []
    cheap: list[dict[str, Any]] = []
    seeds: list[tuple[float, ...]] = []
    population = args.population
    t0 = time.perf_counter()

    def genome_key(genome: Any) -> tuple[tuple[int, ...], ...]:
        return plan_key(ev.decode(genome).to_dict())

    known = evaluated(Store(args, b.digest, quiet=True).data)

    def full(genome: list[float]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The full-fidelity record of `genome` and the result the strategy reads."""
        hit = known.get(genome_key(genome))
        if hit is not None:
            rec = {**hit, "genome": [float(g) for g in genome], "reused": True}
            return rec, rec
        res = ev.evaluate(genome)
        return _record(genome, res), res.to_dict()

    if method.seeded:
        criteria: list[int] | None = None
        if method.one_criterion:  # screen one uniform plan per cluster, keep the best
            middle = args.targets[len(args.targets) // 2]
            reps = [c[0] for c in ev.decoder.blender.model_clusters()]
            for k in reps:
                genome = b.uniform(k, middle)
                records.append(full(genome)[0])
            best = reps[int(np.argmax([r["accuracy"] for r in records]))]
            criteria = [best]
            n_a = b.layout.n_alpha
            pinned = b.layout.make(np.eye(len(b.layout.criteria))[best], 0.0, middle)[:n_a]
            lo, hi = [*pinned, *lo[n_a:]], [*pinned, *hi[n_a:]]
        screened = {genome_key(r["genome"]) for r in records}
        seeds = [tuple(g) for _, g in ev.decoder.target_seeds(population - population // 4,
                                                              criteria)
                 if genome_key(g) not in screened]  # as `blendprune search` seeds
    left = args.budget - len(records)
    generations = method.generations or -(-left // population)
    left = min(left, generations * population)

    problem = Problem(tuple(lo), tuple(hi), objectives, population, generations, seed,
                      tuple(seeds), {"halving": method.halving}, key=genome_key,
                      stratum=b.layout.target)
    strategy = create_strategy(method.algorithm, problem)
    rung = Fidelity(finetune_steps=0)
    n = 0
    while len(records) < args.budget and n < left and not strategy.finished:
        tid = f"t{len(records)}-{len(cheap)}"
        proposed = strategy.suggest(tid)
        assert proposed is not None  # one worker: a generation always completes in order
        genome = list(proposed)
        if strategy.is_cheap(tid):
            res = ev.evaluate(genome, rung)
            strategy.on_trial_complete(tid, res.to_dict())
            cheap.append(_record(genome, res))
            continue
        rec, result = full(genome)
        strategy.on_trial_complete(tid, result)
        records.append(rec)
        n += 1
    print(f"  {name} seed {seed}: {len(records)} candidates"
          + f" ({sum('reused' in r for r in records)} stored already)"
          + (f" and {len(cheap)} cheap" if cheap else "")
          + f" in {time.perf_counter() - t0:.0f} s", flush=True)
    return {"method": name, "seed": seed, "records": records, "cheap": cheap}


def evaluated(data: dict[str, Any]) -> dict[PlanKey, dict[str, Any]]:
    """Plan -> its stored full-fidelity record, from the singles and every search. A
    candidate's result is a function of its plan alone (one evaluator seed for all: common
    random numbers; 348 repeated plans in the two datasets' stores agree to the digit), so
    a search that proposes a stored plan takes that record and is charged its seconds."""
    out: dict[PlanKey, dict[str, Any]] = {}
    for found in [*data.get("singles", []), *data["searches"].values()]:
        for r in found["records"]:
            if "plan" in r:
                out.setdefault(plan_key(r["plan"]), r)
    return out


def run_single(k: int) -> dict[str, Any]:
    """Criterion k at uniform ratios at every target."""
    b = _bench()
    records = [_record(g, b.evaluator.evaluate(g))
               for g in (b.uniform(k, t) for t in b.args.targets)]
    return {"method": f"single:{b.layout.criteria[k]}", "seed": 0, "records": records}


def final_accuracy(b: Bench, plan: dict[str, list[int]], seed: int, steps: int,
                   distill: float = 0.0) -> float:
    """Test accuracy of `plan` after a `steps` fine-tune with `seed` (how picks are scored),
    distilled from the base model with weight `distill` (0: off)."""
    torch.manual_seed(seed)
    model = apply_plan(b.model, b.gm, Plan.from_dict(plan))
    loader = TensorLoader(*b.tr, batch_size=128, mean=b.mean, std=b.std, augment=True,
                          pad=b.data.pad, flip=b.data.flip, seed=seed)
    teacher = Distill(b.model, distill) if distill else None  # base_model: eval mode
    finetune(model, loader.batches(steps), steps, lr=0.02, distill=teacher)
    return test_accuracy(model.eval(), b.data)


def run_final(job: tuple[list[str], dict[str, list[int]], int]) -> tuple[list[str], float]:
    """Fine-tune one picked plan longer with one seed; its test accuracy, for every key
    that picked this plan."""
    keys, plan, seed = job
    b = _bench()
    return keys, final_accuracy(b, plan, seed, b.args.final_steps)


def final_jobs(args: argparse.Namespace, chosen: dict[str, dict[str, Any]],
               finals: dict[str, float]
               ) -> tuple[list[tuple[list[str], dict[str, list[int]], int]], dict[str, float]]:
    """The final fine-tunes still to run, one per distinct (plan, fine-tune seed), and the
    finals that an identical (plan, seed) already stored answers. A final is a function of
    plan, seed and steps alone (the same batches, one thread), and searches often pick a
    seed's plan: on Fashion-MNIST 20 of 94 finals repeated one already run, to the digit."""
    groups: dict[tuple[PlanKey, int], list[str]] = {}
    plans: dict[PlanKey, dict[str, list[int]]] = {}
    for key, rec in chosen.items():
        plan = plan_key(rec["plan"])
        plans[plan] = rec["plan"]
        for f in finetune_seeds(args, key):
            groups.setdefault((plan, f), []).append(f"{args.final_steps}:{key}/{f}")
    todo, reused = [], {}
    for (plan, f), keys in groups.items():
        done = [finals[k] for k in keys if k in finals]
        missing = [k for k in keys if k not in finals]
        if done:
            reused.update(dict.fromkeys(missing, done[0]))
        elif missing:
            todo.append((missing, plans[plan], f))
    return todo, reused


MODES = ("dcff", "cdp", "lapp", "dcff-searched")
SEARCHED_MODES = {"dcff-searched": "dcff"}  # a mode on the default search's picks


def run_mode(job: tuple[str, str, float, int, dict[str, list[int]] | None]
             ) -> tuple[str, float, float]:
    """Training mode `mode` at FLOPs target t with one seed, for as many whole epochs as
    are nearest a final fine-tune's steps (same lr, no warm-up), on `plan` where the mode
    takes one (None: the uniform L1 plan); its test accuracy and training seconds."""
    key, mode, t, seed, given = job
    mode = SEARCHED_MODES.get(mode, mode)
    b = _bench()
    torch.manual_seed(seed)
    loader = TensorLoader(*b.tr, batch_size=128, mean=b.mean, std=b.std, augment=True,
                          pad=b.data.pad, flip=b.data.flip, seed=seed)
    epochs = max(1, round(b.args.final_steps / len(loader)))
    cost = CostModel(b.model, b.gm, b.tr.x[:1].float())
    method: DCFF | CDP | LAPP
    if mode == "lapp":
        method = LAPP(b.model, b.gm, cost, target_flops_ratio=t,
                      prune_steps=round(0.5 * epochs * len(loader)))
    elif mode == "dcff":
        plan = Plan.from_dict(given) if given else uniform_plan(
            {g.name: b.table.scores[g.name]["l1"] for g in b.gm},
            lambda p: cost.predict(p)[0] / cost.base_flops, t)
        method = DCFF(b.model, b.gm, plan, epochs, t_start=None)
    else:
        method = CDP(b.model, b.gm, cost, target_flops_ratio=t, lr=0.02,
                     sparse_steps=round(0.5 * epochs * len(loader)))
    start = time.process_time()  # one thread: its CPU time, which a pause does not inflate
    train(method.model, loader, epochs=epochs, lr=0.02, warmup_epochs=0.0,
          label_smoothing=0.0, hooks=method)
    seconds = time.process_time() - start
    return key, test_accuracy(method.to_compact().eval(), b.data), seconds


class Store:
    """Finished searches and final fine-tunes of one setting, kept as they come in."""

    def __init__(self, args: argparse.Namespace, base: str, quiet: bool = False) -> None:
        keep = {"base": base, **{k: v for k, v in vars(args).items() if k in SEARCH_SETTINGS}}
        digest = hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]
        self.path = PROGRESS / f"pareto_quality-{args.dataset}-{digest}.json"
        self.data: dict[str, Any] = {"searches": {}, "finals": {}}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
            if not quiet:
                print(f"resuming from benchmarks/progress/{self.path.name}: "
                      f"{len(self.data['searches'])} searches, "
                      f"{len(self.data['finals'])} final fine-tunes done", flush=True)

    def put(self, kind: str, key: str | None, value: Any) -> None:
        """Store one result (key None: the whole `kind`) into what the file holds now, not
        what it held at start: another process at these settings may have added (or an
        entry been cleared) since. A lock makes each read-modify-write one step."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                self.data = json.loads(self.path.read_text())
            if key is None:
                self.data[kind] = value
            else:
                self.data.setdefault(kind, {})[key] = value
            write_progress(self.path, self.data)


def picks(args: argparse.Namespace, searches: dict[str, dict], singles: list[dict]
          ) -> dict[str, dict[str, Any]]:
    """What gets the final fine-tune: `method/seed/target` -> the picked record."""
    out = {}
    every_single = [r for x in singles for r in x["records"]]
    for t in args.targets:
        for name, found in searches.items():
            rec = pick_at(found["records"], t, WIDTH)
            if rec is not None:
                out[f"{name}/{t}"] = rec
        best = pick_at(every_single, t, WIDTH)
        if best is not None:
            out[f"single/0/{t}"] = best
    return out


def finetune_seeds(args: argparse.Namespace, key: str) -> list[int]:
    """Search seed s's picks get fine-tune seeds s*F .. s*F+F-1; the single criterion (no
    search seed) gets all of them, so each (search seed, fine-tune seed) pairs with the
    single criterion fine-tuned on the very same batches."""
    f = args.final_seeds
    if key.startswith("single/"):
        return [s * f + i for s in args.seeds for i in range(f)]
    seed = int(key.split("/")[1])
    return [seed * f + i for i in range(f)]


def summarize(args: argparse.Namespace, searches: dict[str, dict], singles: list[dict],
              finals: dict[str, float], chosen: dict[str, dict], base_test: float,
              mode_seconds: dict[str, float]) -> dict[str, Any]:
    searching = [m for m in METHODS if m in args.methods]
    methods = [*searching, "single", *args.modes]
    f = args.final_seeds

    def test(m: str, t: float, s: int, fs: int) -> float | None:
        """Single is keyed seed 0, a mode without a search its first seed; both use the
        fine-tune seeds of the search seed they pair with."""
        own = 0 if m == "single" else args.seeds[0] if m in MODES and m not in \
            SEARCHED_MODES else s
        return finals.get(f"{args.final_steps}:{m}/{own}/{t}/{fs}")

    def tests(m: str, t: float) -> list[float]:
        return [a for s in args.seeds for i in range(f)
                if (a := test(m, t, s, s * f + i)) is not None]

    def versus(m: str, other: str, t: float) -> dict[str, float] | None:
        """m minus other, paired by fine-tune seed."""
        pairs = [(a, b) for s in args.seeds for i in range(f)
                 if (a := test(m, t, s, s * f + i)) is not None
                 and (b := test(other, t, s, s * f + i)) is not None]
        return paired([a for a, _ in pairs], [b for _, b in pairs]) if pairs else None

    matched: dict[str, dict[str, Any]] = {}
    vs_single: dict[str, dict[str, Any]] = {}
    for t in args.targets:
        matched[str(t)] = {m: interval(v) for m in methods if (v := tests(m, t))}
        vs_single[str(t)] = {m: d for m in methods
                             if m != "single" and (d := versus(m, "single", t))}
    blend_gain = [{"blended": blended, "ablation": ablation,
                   "targets": {str(t): d for t in args.targets
                               if (d := versus(blended, ablation, t))}}
                  for ablation, blended in ABLATIONS.items()
                  if ablation in searching and blended in searching]
    lo, hi = min(args.targets), max(args.targets)
    every_single = [r for s in singles for r in s["records"]]
    hv = {m: statistics.median(attainment(s["records"], lo, hi) for s in searches.values()
                               if s["method"] == m) for m in searching
          if any(s["method"] == m for s in searches.values())}
    hv["single"] = attainment(every_single, lo, hi)
    paused = 0

    def spent(*kinds: list[dict[str, Any]]) -> float:
        nonlocal paused
        total = 0.0
        for records in kinds:
            if records:
                typical = statistics.median(r["seconds"] for r in records)
                total += sum(typical if r["seconds"] > PAUSED * typical else r["seconds"]
                             for r in records)
                paused += sum(r["seconds"] > PAUSED * typical for r in records)
        return total

    seconds = {m: statistics.median(spent(s["records"], s.get("cheap", []))
                                    for s in searches.values() if s["method"] == m)
               for m in hv if m != "single"}
    seconds["single"] = spent(every_single)
    for m in args.modes:  # a mode has no search: its training is all its compute
        trained = [v for k, v in mode_seconds.items() if k.split(":")[1].startswith(f"{m}/")]
        if trained:
            seconds[m] = statistics.median(trained)
    counts = {m: statistics.median(len(s["records"]) for s in searches.values()
                                   if s["method"] == m) for m in hv if m != "single"}
    counts["single"] = len(every_single)
    cheap = {m: statistics.median(len(s.get("cheap", [])) for s in searches.values()
                                  if s["method"] == m)
             for m in seconds if METHODS.get(m, METHODS[DEFAULT]).halving > 1}
    every = [r for x in [*searches.values(), *singles] for r in x["records"]
             if r["status"] == "ok" and r["bn_accuracy"] is not None]
    rungs = {str(t): _spearman([(r["bn_accuracy"], r["accuracy"]) for r in every
                                if t - WIDTH <= r["flops_ratio"] <= t]) for t in args.targets}

    return {"base_test_accuracy": base_test, "default_method": DEFAULT,
            "targets": list(args.targets), "matched": matched,
            "paired_vs_best_single": {t: v[DEFAULT] for t, v in vs_single.items()
                                      if DEFAULT in v},
            "paired_vs_single": vs_single, "blend_gain": blend_gain, "hypervolume": hv,
            "compute_seconds": seconds,
            "candidates": counts, "cheap_candidates": cheap, "paused_candidates": paused,
            "single_picked": {str(t): chosen[f"single/0/{t}"].get("criterion")
                              for t in args.targets if f"single/0/{t}" in chosen},
            # does adaptive BN alone rank candidates as the brief fine-tune does? (rung 0)
            "bn_vs_finetuned_spearman": rungs,
            "hypervolume_range": [lo, hi]}


def _spearman(pairs: list[tuple[float, float]]) -> float | None:
    """Rank correlation of the pairs; None with fewer than 3 or no spread."""
    from scipy.stats import spearmanr

    if len(pairs) < 3:
        return None
    rho = float(spearmanr(*zip(*pairs)).statistic)
    return rho if np.isfinite(rho) else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["fashion-mnist", "cifar10"], default="fashion-mnist")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES,
                   help="training modes at each target, with the first search seed's "
                        "fine-tune seeds")
    p.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.3, 0.4, 0.5])
    p.add_argument("--pool", nargs="+", default=["l1", "l2", "fpgm", "bn_gamma", "dcff_kl",
                                                  "texture", "taylor", "hrank", "apoz"])
    p.add_argument("--budget", type=int, default=48, help="candidates per search")
    p.add_argument("--population", type=int, default=12)
    p.add_argument("--steps", type=int, default=40, help="brief fine-tune steps")
    p.add_argument("--bn-batches", type=int, default=10)
    p.add_argument("--final-steps", type=int, default=800)
    p.add_argument("--final-seeds", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--status", action="store_true",
                   help="print what the progress file holds so far and exit (trains nothing)")
    p.add_argument("--searches-only", action="store_true",
                   help="stop once the searches are stored (seed_methods' searched plans)")
    return p


def searched_plan(dataset: str, base: str, seed: int, target: float,
                  method: str = DEFAULT) -> dict[str, list[int]] | None:
    """The plan search `method`/`seed` of the default setting on the base model of digest
    `base` picked at `target` (best holdout accuracy with FLOPs in [target - WIDTH,
    target]), if that search is done."""
    store = Store(parser().parse_args(["--dataset", dataset]), base)
    found = store.data["searches"].get(f"{method}/{seed}")
    rec = pick_at(found["records"], target, WIDTH) if found else None
    return rec["plan"] if rec else None


def gathered(args: argparse.Namespace, store: Store
             ) -> tuple[dict[str, dict], list[dict], dict[str, dict[str, Any]]]:
    """The stored searches and singles of these settings, and what each picked."""
    searches = {k: v for k, v in store.data["searches"].items()
                if v["method"] in args.methods and v["seed"] in args.seeds}
    singles = store.data.get("singles", [])
    for s in singles:
        for r in s["records"]:
            r["criterion"] = s["method"].split(":")[1]
    return searches, singles, picks(args, searches, singles)


def status(args: argparse.Namespace, store: Store, base_test: float) -> str:
    """What the progress file holds so far, in the result's table (`benchmarks.report`).
    Trains nothing; for a run that spans sessions."""
    searches, singles, chosen = gathered(args, store)
    finals = store.data["finals"]
    summary = summarize(args, searches, singles, finals, chosen, base_test,
                        store.data.get("mode_seconds", {}))
    return (f"{store.path.name}: {len(searches)} of {len(args.methods) * len(args.seeds)} "
            f"searches, {len(finals)} finals\n\n"
            + pareto_table({"summary": summary, "settings": vars(args)}))


def main() -> None:
    p = parser()
    args = p.parse_args()
    args.targets = sorted(set(args.targets))
    if len(args.targets) < 2:
        p.error("--targets: need at least two (the hypervolume spans lowest to highest)")
    t_start = time.perf_counter()
    main_bench = Bench(args)  # loads the base model and ScoreTable before the pool forks
    store = Store(args, main_bench.digest)
    if args.status:
        base = json.loads(weights(args.dataset).with_suffix(".json").read_text())
        print(status(args, store, base["test_accuracy"]))
        return
    base_test = test_accuracy(main_bench.model, main_bench.data)
    print(f"base ResNet-20 on {args.dataset}: test {base_test:.4f}", flush=True)
    criteria = list(main_bench.layout.criteria)
    todo = [(m, s) for s in args.seeds for m in args.methods
            if f"{m}/{s}" not in store.data["searches"]]
    with mp.get_context("spawn").Pool(args.jobs, initializer=_init, initargs=(args,)) as pool:
        if "singles" not in store.data:
            store.put("singles", None, pool.map(run_single, range(len(criteria))))
        for result in pool.imap_unordered(run_search, todo):
            store.put("searches", f"{result['method']}/{result['seed']}", result)
        if args.searches_only:
            print(f"{len(store.data['searches'])} searches stored in {store.path.name}")
            return
        searches, singles, chosen = gathered(args, store)
        jobs, reused = final_jobs(args, chosen, store.data["finals"])
        for key, acc in reused.items():
            store.put("finals", key, acc)
        print(f"{len(jobs)} final fine-tunes to run ({len(reused)} answered by the same plan "
              "and seed already run)", flush=True)
        for keys, acc in pool.imap_unordered(run_final, jobs):
            for key in keys:
                store.put("finals", key, acc)
        first = args.seeds[0]
        modes = [(f"{args.final_steps}:{m}/{first}/{t}/{f}", m, t, f, None)
                 for m in args.modes if m not in SEARCHED_MODES
                 for t in args.targets for f in finetune_seeds(args, f"{m}/{first}")]
        modes += [(f"{args.final_steps}:{m}/{key.split('/', 1)[1]}/{f}", m,
                   float(key.rsplit("/", 1)[1]), f, rec["plan"])
                  for m in args.modes if m in SEARCHED_MODES
                  for key, rec in chosen.items() if key.startswith(f"{DEFAULT}/")
                  for f in finetune_seeds(args, key)]
        modes = [job for job in modes if job[0] not in store.data["finals"]]
        for key, acc, seconds in pool.imap_unordered(run_mode, modes):
            store.put("mode_seconds", key, seconds)
            store.put("finals", key, acc)
    finals = store.data["finals"]
    summary = summarize(args, searches, singles, finals, chosen, base_test,
                        store.data.get("mode_seconds", {}))
    png = plot(args, searches, singles, summary)
    for s in [*searches.values(), *singles]:
        for r in s["records"]:
            r.pop("plan", None)
    write_result(f"pareto_quality_{args.dataset}", {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summary, "plot": png.name,
        "picks": {k: {"flops_ratio": r["flops_ratio"], "holdout_accuracy": r["accuracy"]}
                  for k, r in chosen.items()},
        "finals": finals,
        "searches": list(searches.values()), "singles": singles,
        "wall_seconds_this_run": time.perf_counter() - t_start})
    print(json.dumps({k: summary[k] for k in ("matched", "paired_vs_best_single",
                                                 "hypervolume")}, indent=1))


COLORS = {DEFAULT: "tab:red", "deap-nsga2-seeded": "magenta", "deap-nsga2-halving": "tab:pink",
          "ratios-only": "tab:orange", "random": "tab:gray", "optuna-nsga2": "tab:blue",
          "optuna-tpe": "tab:purple", "tpe-ratios-only": "goldenrod", "single": "k",
          "dcff": "tab:green", "dcff-searched": "tab:cyan", "cdp": "tab:brown",
          "lapp": "tab:olive"}


def plot(args: argparse.Namespace, searches: dict[str, dict], singles: list[dict],
         summary: dict[str, Any]) -> Path:
    """Left: each method's holdout front (first search seed); right: test accuracy at
    each target with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=120)
    for m, c in COLORS.items():
        runs = [s for s in searches.values() if s["method"] == m and s["seed"] == args.seeds[0]]
        recs = [r for s in (runs or ([{"records": [r for x in singles for r in x["records"]]}]
                                     if m == "single" else [])) for r in s["records"]
                if r["status"] == "ok"]
        if not recs:
            continue
        pts = np.array([[r["accuracy"], r["flops_ratio"]] for r in recs])
        front = pts[non_dominated(pts, (1, -1))]
        front = front[np.argsort(front[:, 1])]
        ax.step(front[:, 1], front[:, 0], where="post", c=c, label=m)
        ax.scatter(pts[:, 1], pts[:, 0], s=6, c=c, alpha=0.3)
    ax.set_xlabel("FLOPs ratio")
    ax.set_ylabel("holdout accuracy (brief fine-tune)")
    ax.set_title("holdout fronts (search seed %d)" % args.seeds[0])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    width = 0.8 / len(COLORS)
    for i, (m, c) in enumerate(COLORS.items()):
        xs: list[float] = []
        ys: list[float] = []
        err: list[list[float]] = [[], []]
        for j, t in enumerate(args.targets):
            r = summary["matched"].get(str(t), {}).get(m)
            if r:
                xs.append(j + (i - len(COLORS) / 2 + 0.5) * width)
                ys.append(r["mean"])
                err[0].append(r["mean"] - r["lo"])
                err[1].append(r["hi"] - r["mean"])
        if xs:
            bx.errorbar(xs, ys, yerr=err, fmt="o", c=c, ms=4, capsize=2, label=m)
    bx.axhline(summary["base_test_accuracy"], c="0.5", ls="--", lw=0.8, label="base model")
    bx.set_xticks(range(len(args.targets)), [f"≤ {t:g}" for t in args.targets])
    bx.set_xlabel("FLOPs target")
    bx.set_ylabel("test accuracy after the final fine-tune")
    bx.set_title("matched FLOPs: mean and 95% interval")
    bx.grid(alpha=0.3, axis="y")
    bx.legend(fontsize=7)
    fig.suptitle(f"ResNet-20 on {args.dataset}: {args.budget} candidates per search")
    fig.tight_layout()
    path = RESULTS / f"pareto_quality_{args.dataset}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
