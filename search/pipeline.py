"""The search, end to end: prepare -> clustering report -> trials -> front.

`Search` owns the run folder, the tracker and the strategy. Each finished candidate is
appended to the ledger, sent to MLflow and followed by a strategy checkpoint, in that
order, so a driver killed at any point resumes without losing or repeating a candidate.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pruning import CandidateResult, Fidelity

from .config import Config
from .pareto import Objectives, front_hypervolume, front_of, front_rows
from .plots import plot_correlation, plot_front
from .prepare import Inputs, Prepared, compute_table, prepare
from .progress import Progress
from .resident import Resident
from .rundir import RunDir
from .screening import FixedGenomes, pinned_genes, screen_genomes, screened
from .seed_plans import load_seed_plans
from .strategy import Problem, Strategy, create_strategy, get_strategy
from .tracking import Tracker
from .tracking_queue import TrackingQueue

if TYPE_CHECKING:
    from .actor_pool import ActorPool, PoolStats

__all__ = ["Search", "prepare_workspace", "seed_genomes"]


def _log(msg: str) -> None:
    print(msg, flush=True)


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def seed_genomes(prepared: Prepared, cfg: Config, criteria: list[int] | None = None
                 ) -> list[tuple[str, list[float]]]:
    """Generation 0's single-criterion genomes, spread from the budget down the FLOPs range
    (with FLOPs targets: every criterion cluster at every target, even past the population,
    see `target_seeds`).

    Three quarters of the population (at least one seed per criterion where it fits; with
    targets, at least every cluster at every target); the rest stays random for diversity.
    Without a budget (max_flops_ratio = 1) the seeds start at half the base FLOPs, so they
    are real pruning baselines rather than the unpruned model.
    `criteria` limits the seeds to those criteria (the clusters a screen kept). The plans
    of `search.seed_plans` come first, their widths as ratio genes.
    """
    budget = cfg.constraints.max_flops_ratio
    population = cfg.search.population
    count = max(1, population - population // 4)
    decoder = prepared.decoder
    names = decoder.layout.criteria  # a plan's widths, blended as a learnt width's BN scores
    alpha = [float(n == "bn_gamma") for n in names] if "bn_gamma" in names else \
        [1.0] * len(names)
    plans = [(name, decoder.plan_genome(plan, alpha))
             for name, plan in load_seed_plans(cfg, prepared.inputs.group_map)][:count]
    count -= len(plans)
    if decoder.layout.targets is not None:  # every criterion cluster at every target
        return plans + decoder.target_seeds(count, criteria)
    if count == 0:
        return plans
    return plans + decoder.spread_seeds(budget if budget < 1.0 else 0.5, count, criteria)


class Search:
    evaluator_actor: type | None = None  # the worker class if not EvaluatorActor (a stub)

    def __init__(self, cfg: Config, run: RunDir, prepared: Prepared, tracker: Tracker) -> None:
        self.cfg, self.run, self.prepared, self.tracker = cfg, run, prepared, tracker
        self.objectives = Objectives(tuple(cfg.objectives), cfg.constraints.max_flops_ratio)
        self.records: list[dict[str, Any]] = run.records()
        self.finished_trials = {r["trial_id"] for r in self.records}
        self.start_time = time.time()
        self.seeds: dict[tuple[float, ...], str] = {}
        self.strategy: Strategy | None = None
        self.logged_generations = set(run.state().get("logged_generations", []))
        self.sender = TrackingQueue(tracker, run.append)
        self.pool_stats: PoolStats | None = None  # what the actor pool did, once it ran
        self._actors: ActorPool | None = None  # started on first use, kept for the run
        self.screening: dict[str, Any] | None = run.state().get("screening")
        self.progress = Progress(cfg.search.budget, len(self.records))
        self.rungs: list[dict[str, Any]] = run.rung_records()  # successive halving's scores
        self.finished_trials |= {r["trial_id"] for r in self.rungs}

    # -- set-up ------------------------------------------------------------------------
    def problem(self) -> Problem:
        lo, hi = self.prepared.layout.bounds()
        s = self.cfg.search
        decoder = self.prepared.decoder
        kept = None
        if self.screening is not None:  # dropped clusters: alpha pinned to 0, no seeds
            pinned = set(pinned_genes(decoder, self.screening))
            for j in range(decoder.layout.n_alpha):
                if j in pinned:
                    lo[j] = hi[j] = 0.0
                else:  # never all kept genes at 0: the blend would fall back to every cluster
                    lo[j] = 1e-3
            names = decoder.layout.criteria
            kept = [names.index(n) for n in self.screening["kept"]]
        named = seed_genomes(self.prepared, self.cfg, kept)
        self.seeds = {tuple(g): name for name, g in named}  # labels seeds in plots
        seeds = named if get_strategy(s.algorithm).seeds else []

        def plan_key(genome: Any) -> tuple[tuple[int, ...], ...]:
            return tuple(tuple(v) for v in decoder.decode(genome).to_dict().values())

        layout = decoder.layout
        return Problem(tuple(lo), tuple(hi), self.objectives, s.population, s.generations,
                       s.seed, tuple(tuple(g) for _, g in seeds),
                       {"crossover_eta": s.crossover_eta, "mutation_eta": s.mutation_eta,
                        "crossover_prob": s.crossover_prob, "halving": s.halving},
                       key=plan_key,
                       stratum=layout.target if layout.targets is not None else None)

    def report_clusters(self) -> None:
        """criteria/correlation.png and criteria/clusters.json, on the run and the parent."""
        blender = self.prepared.decoder.blender
        rhos = {g: cl.rho for g, cl in blender.clusterings.items()}
        folder = self.run.path / "criteria"
        png = plot_correlation(list(blender.criteria), rhos, folder / "correlation.png",
                               blender.model_clusters())
        clusters = {g: {"size": len(self.prepared.table.scores[g][blender.criteria[0]]),
                        "clusters": cl.clusters,
                        "rho": np.round(cl.rho, 4).tolist()}
                    for g, cl in blender.clusterings.items()}
        payload = {"criteria": list(blender.criteria),
                   "threshold": self.cfg.criteria.cluster_threshold, "groups": clusters}
        (folder / "clusters.json").write_text(json.dumps(payload, indent=1))
        self.tracker.artifacts({"criteria": png})
        self.tracker.log_dict(payload, "criteria/clusters.json")
        prunable = {"groups": self.prepared.inputs.prunability,
                    "left_alone": self.prepared.inputs.group_map.left_alone}
        (folder / "prunability.json").write_text(json.dumps(prunable, indent=1))
        self.tracker.log_dict(prunable, "criteria/prunability.json")
        sizes = [len(c["clusters"]) for c in clusters.values()]
        _log(f"criteria: {len(blender.criteria)} criteria form {min(sizes)}-{max(sizes)} "
             f"clusters per group (threshold {self.cfg.criteria.cluster_threshold})")

    # -- one finished candidate ----------------------------------------------------------
    def on_complete(self, trial_id: str, genome: list[float], result: dict[str, Any] | None,
                    failure: str = "") -> None:
        assert self.strategy is not None
        if trial_id in self.finished_trials:  # reported twice (Ray retried after a result)
            return
        self.finished_trials.add(trial_id)
        if self.strategy.is_cheap(trial_id):
            self.on_cheap(trial_id, genome, result, failure)
            return
        if result is None:  # the trial crashed (after Tune's retries): a failed candidate
            plan = self.prepared.decoder.decode(genome)
            cost = self.prepared.decoder.cost
            flops, params = cost.predict(plan)
            result = CandidateResult(0.0, flops, params, flops / cost.base_flops,
                                     params / cost.base_params, plan.to_dict(),
                                     status="failed",
                                     reason=failure or "trial crashed").to_dict()
        index = len(self.records)
        record = {"index": index, "trial_id": trial_id, "genome": genome,
                  "generation": self.strategy.generation_of(index),
                  "seed": self.seeds.get(tuple(genome)), "result": result, "run_id": None}
        self.run.append(record)                               # 1. durable
        self.records.append(record)
        self.sender.candidate(record)                         # 2. tracked, in the background
        self.strategy.on_trial_complete(trial_id, result)    # 3. learnt and checkpointed
        self.save_state()
        self.progress.update(index, result, self.objectives.feasible(result))
        if result["status"] != "ok":
            self.progress.write(f"  candidate {index} failed: {result['reason']}")
        n = len(self.records)
        if self.strategy.generation_of(n) != self.strategy.generation_of(n - 1) or \
                n == self.cfg.search.budget:
            self.end_generation()

    def on_cheap(self, trial_id: str, genome: list[float], result: dict[str, Any] | None,
                 failure: str) -> None:
        """A cheap-rung score: kept in its own ledger, learnt, checkpointed."""
        assert self.strategy is not None
        ok = result is not None and result["status"] == "ok"
        record = {"trial_id": trial_id, "genome": genome,
                  "generation": self.strategy.generation_of(len(self.records)),
                  "status": "ok" if ok else "failed",
                  "reason": "" if ok else failure or (result or {}).get("reason", ""),
                  "accuracy": result["accuracy"] if ok and result else None,
                  "flops_ratio": result["flops_ratio"] if result else None,
                  "seconds": result["timings"].get("total", 0.0) if result else 0.0}
        self.run.append_rung(record)
        self.rungs.append(record)
        self.strategy.on_trial_complete(trial_id, result)
        self.save_state()

    def halving_report(self) -> dict[str, Any]:
        """How well the cheap rung ranked what was then evaluated in full: Spearman's rho
        within each FLOPs target, over the promoted candidates (a truncated sample: the
        cheap rung's losers are never evaluated in full)."""
        from scipy.stats import spearmanr

        cheap = {tuple(r["genome"]): r["accuracy"] for r in self.rungs if r["status"] == "ok"}
        layout = self.prepared.layout
        pairs: dict[str, list[tuple[float, float]]] = {}
        for r in self.records:
            score = cheap.get(tuple(r["genome"]))
            if score is not None and r["result"]["status"] == "ok":
                target = layout.target(r["genome"])
                key = "all" if target is None else f"{target:g}"
                pairs.setdefault(key, []).append((score, r["result"]["accuracy"]))
        rho = {}
        for key, p in sorted(pairs.items()):
            value = float(spearmanr(*zip(*p)).statistic) if len(p) >= 3 else float("nan")
            rho[key] = {"spearman": None if np.isnan(value) else value, "n": len(p)}
        return {"eta": self.cfg.search.halving, "steps": self.cfg.search.halving_steps,
                "cheap_evaluations": len(self.rungs),
                "cheap_seconds": sum(r["seconds"] for r in self.rungs),
                "rank_agreement": rho}

    def save_state(self) -> None:
        """The run's checkpoint; before the strategy exists (after a screen) without it."""
        strategy = {} if self.strategy is None else {"strategy": self.strategy.get_state()}
        self.run.save_state({"parent_run_id": self.tracker.parent_id,
                             "tracking_uri": self.tracker.uri,
                             "experiment": self.tracker.experiment,
                             "algorithm": self.cfg.search.algorithm,
                             "completed": len(self.records),
                             "logged_generations": sorted(self.logged_generations.copy()),
                             "screening": self.screening, **strategy})

    def end_generation(self) -> None:
        self.sender.submit(self.flush)
        n = len(self.records)
        assert self.strategy is not None
        gen = self.strategy.generation_of(n - 1)
        hv = front_hypervolume(self.records, self.objectives)
        front = front_of(self.records, self.objectives)
        feasible = [r["result"]["accuracy"] for r in self.records
                    if self.objectives.feasible(r["result"])]
        best = max(feasible) if feasible else float("nan")
        elapsed = time.time() - self.start_time
        done_now = n - self._completed_at_start
        eta = elapsed / max(done_now, 1) * (self.cfg.search.budget - n)
        cheap = sum(r["generation"] == gen for r in self.rungs)
        self.progress.write(
             f"gen {gen:>3}  evaluated {n:>4}/{self.cfg.search.budget}  front {len(front):>3}  "
             f"hypervolume {hv:.4f}  best acc within budget {best:.4f}  "
             + (f"(best of {cheap} cheap)  " if cheap else "")
             + f"elapsed {_fmt_time(elapsed)}  eta {_fmt_time(eta)}")
        metrics = {"hypervolume": hv, "front_size": len(front), "evaluated": n,
                   "best_feasible_accuracy": 0.0 if not feasible else best}

        def log_generation() -> None:
            if self.tracker.generation(gen, metrics):
                self.logged_generations.add(gen)

        self.sender.submit(log_generation)
        self.save_state()

    def flush(self) -> int:
        """Re-send candidates the tracking server missed; returns how many remain unsent."""
        return self.tracker.send_missing(self.records, self.run.append)

    def drain(self) -> int:
        """Wait for the tracking thread, then re-send what it missed; how many remain."""
        self.sender.drain()
        return self.flush()

    def actors(self) -> ActorPool:
        """The resident evaluator actors: started once, serving the screen and the search."""
        if self._actors is None:
            from .actor_pool import ActorPool, EvaluatorActor

            self._actors = ActorPool(Resident.of(self.prepared, self.cfg), self.cfg.search,
                                     log=_log, actor=self.evaluator_actor or EvaluatorActor)
        return self._actors

    def close_actors(self) -> None:
        if self._actors is not None:
            self._actors.shutdown()
            self._actors = None

    def screen(self) -> dict[str, Any]:
        """Score each criterion cluster alone after adaptive BN only (see `screening`)."""
        decoder = self.prepared.decoder
        budget = self.cfg.constraints.max_flops_ratio
        genomes = screen_genomes(decoder, budget if budget < 1.0 else 0.5)
        names = {tuple(g): n for n, g in genomes.items()}
        lo, hi = self.prepared.layout.bounds()
        fixed = FixedGenomes(Problem(tuple(lo), tuple(hi), self.objectives, len(genomes), 1),
                             list(genomes.values()))
        scores: dict[str, float] = {}

        def done(trial_id: str, genome: list[float], result: dict[str, Any] | None,
                 reason: str) -> None:
            fixed.on_trial_complete(trial_id, result)
            name = names[tuple(genome)]
            if result is not None and result["status"] == "ok":
                scores[name] = result["accuracy"]
            else:  # not evidence against the cluster: it stays in
                _log(f"  screening {name} failed ({reason or result and result['reason']}); "
                     "kept")

        _log(f"screening {len(genomes)} criterion clusters (adaptive BN only)")
        self.actors().run(fixed, done, num_samples=len(genomes),
                          fidelity=Fidelity(finetune_steps=0))
        if not scores:
            raise RuntimeError("search.screen: every screening candidate failed; see above")
        verdict = screened(decoder, scores, self.cfg.search.screen_margin)
        verdict["kept"] = sorted({*verdict["kept"], *(set(genomes) - set(scores))})
        best = max(scores.values())
        _log("screening: " + ", ".join(f"{n} {scores[n]:.3f}" for n in sorted(
            scores, key=scores.__getitem__, reverse=True)) + f"; dropped (more than "
             f"{verdict['margin']} below {best:.3f}): {', '.join(verdict['dropped']) or 'none'}")
        self.tracker.log_dict(verdict, "criteria/screening.json")
        return verdict

    # -- the whole search ------------------------------------------------------------------
    def run_search(self, resume_state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self._completed_at_start = len(self.records)
        self.progress = Progress(self.cfg.search.budget, len(self.records))
        try:
            if self.cfg.search.screen and self.screening is None:
                self.screening = self.screen()
                self.save_state()  # a driver killed now resumes without screening again
            self.strategy = create_strategy(self.cfg.search.algorithm, self.problem())
            if resume_state:
                self.restore_strategy(resume_state)
            remaining = self.cfg.search.budget - len(self.records)
            if remaining > 0:
                s = self.cfg.search
                _log(f"search: {s.algorithm}, {remaining} of {s.budget} candidates to go on "
                     f"{s.workers} workers ({s.executor})")
                self.execute(remaining)
        finally:
            self.progress.close()
            self.close_actors()
        if self.cfg.search.halving > 1:
            report = self.halving_report()
            self.tracker.log_dict(report, "rungs/halving.json")
            _log(f"halving: {report['cheap_evaluations']} cheap evaluations "
                 f"({report['cheap_seconds']:.0f} s); rank agreement with the full score: "
                 + ", ".join(f"{k} {v['spearman']:.2f} (n={v['n']})"
                             if v["spearman"] is not None else f"{k} n/a (n={v['n']})"
                             for k, v in report["rank_agreement"].items()))
        missing = self.drain()
        self.sender.close()
        if missing:
            _log(f"warning: {missing} candidates are not in MLflow yet (server unreachable); "
                 f"they are safe in {self.run.path}; `blendprune resume {self.run.path}` "
                 "sends them once the server is back")
        return self.write_front()

    def execute(self, remaining: int) -> None:
        """Evaluate `remaining` candidates on the configured executor."""
        assert self.strategy is not None
        if self.cfg.search.executor == "tune":
            from .tune_runner import StrategySearcher, run_trials

            self.close_actors()  # a screen's actors: Tune's trials need their CPUs
            run_trials(Resident.of(self.prepared, self.cfg),
                       StrategySearcher(self.strategy, self.on_complete),
                       self.cfg.search, num_samples=remaining,
                       storage=str((self.run.path / "tune").resolve()),
                       name=f"trials-{len(self.records):04d}")
        else:
            stats = self.actors().run(self.strategy, self.on_complete, num_samples=remaining)
            self.pool_stats = stats
            _log(f"workers: {stats.actors_started} started, {stats.restarts} restarted, "
                 f"{stats.requeued} candidates requeued")

    def restore_strategy(self, state: dict[str, Any]) -> None:
        """Strategy state from the checkpoint, plus any candidate the ledger has that the
        checkpoint missed (driver killed between the two writes)."""
        assert self.strategy is not None
        s = state["strategy"]
        late = {r["trial_id"]: r for r in self.records if r["trial_id"] in s["pending"]}
        self.strategy.set_state(s)
        for trial_id, record in late.items():
            genome = s["pending"][trial_id]
            self.strategy.retry.remove(genome)
            self.strategy.pending[trial_id] = genome
            self.strategy.on_trial_complete(trial_id, record["result"])
        self.save_state()

    def write_front(self) -> list[dict[str, Any]]:
        front = front_of(self.records, self.objectives)
        rows = front_rows(self.records, front)
        folder = self.run.path / "pareto"
        folder.mkdir(exist_ok=True)
        (folder / "front.json").write_text(json.dumps({"front": rows}, indent=1))
        self.tracker.front(rows, self.plot_front())
        return rows

    def plot_front(self, finals: list[dict[str, Any]] | None = None) -> Path:
        """pareto/front.png; with the final stage's results once it has run."""
        png = plot_front(self.records, front_of(self.records, self.objectives),
                         self.run.path / "pareto" / "front.png",
                         max_flops_ratio=self.cfg.constraints.max_flops_ratio,
                         title=f"{self.cfg.name}: {self.cfg.search.algorithm}, "
                               f"{len(self.records)} candidates",
                         base_accuracy=self.prepared.base_accuracy, finals=finals or ())
        if finals:
            self.tracker.artifacts({"pareto": png})
        return png


def prepare_workspace(inputs: Inputs, *, on_ray: bool) -> Prepared:
    """Prepare; the ScoreTable is computed on a Ray task when Ray is up."""
    compute = None
    if on_ray:
        import ray

        remote = ray.remote(num_cpus=1)(compute_table)

        def compute(*args: Any) -> Any:
            return ray.get(remote.remote(*args))

    return prepare(inputs, compute=compute, log=_log)
