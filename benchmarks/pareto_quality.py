"""Pareto quality on real data: blended search vs single criteria vs baselines, same budget.

For one dataset (Fashion-MNIST or CIFAR-10, ResNet-20 trained here) and every method:
  deap-nsga2      the blended pool: alphas + per-layer ratios (blendprune's default)
  fixed-alpha     ablation: the same NSGA-II over per-layer ratios, alpha fixed to the best
                  single criterion (isolates what blending adds)
  random, optuna-nsga2, optuna-tpe   baselines on the same genome
  single          each criterion alone at uniform ratios swept over the same FLOPs range
Every method gets the same number of evaluations, all with common random numbers. Then
each method's best holdout candidate at <= 50% and <= 30% of base FLOPs is fine-tuned
longer with several seeds and scored on the test split.

    python -m benchmarks.pareto_quality --dataset fashion-mnist --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import (
    CACHE,
    DEFAULT_DATA_ROOT,
    RESULTS,
    candidate_settings,
    cifar10_npz,
    write_result,
)
from pruning import (
    DEFAULT_POOL,
    Evaluator,
    GenomeLayout,
    GroupMap,
    Plan,
    ScoreTable,
    TensorLoader,
    apply_plan,
    compute_scores,
    create_model,
    evaluate,
    finetune,
    holdout_split,
    load_checkpoint,
    load_dataset,
    train,
)
from search.pareto import Objectives, hypervolume, non_dominated
from search.strategy import Problem, create_strategy

TARGETS = (0.5, 0.3)


def load(dataset: str, root: Path):
    if dataset == "fashion-mnist":
        return load_dataset("fashion-mnist", str(root / "fashion-mnist"))
    npz = cifar10_npz(root)
    if npz is None:
        raise SystemExit(f"CIFAR-10 not found under {root}")
    return load_dataset("npz", str(npz))


class Bench:
    """Base model, ScoreTable and an Evaluator for one dataset, built once per process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        data = load(args.dataset, args.data_root)
        self.data = data
        self.tr, self.ho = holdout_split(data, args.holdout, seed=0)
        self.mean, self.std = data.mean_std()
        model = create_model("resnet20", data.num_classes, data.in_channels)
        ckpt = CACHE / "bench" / f"resnet20-{args.dataset}-e{args.base_epochs}.pt"
        if ckpt.exists():
            load_checkpoint(model, str(ckpt))
        else:
            torch.manual_seed(0)
            loader = TensorLoader(*self.tr, batch_size=128, mean=self.mean, std=self.std,
                                  augment=True, pad=data.pad, flip=data.flip)
            t0 = time.perf_counter()
            train(model, loader, epochs=args.base_epochs, lr=0.1,
                  on_epoch=lambda e, loss: print(f"  base epoch {e} loss {loss:.3f} "
                                                 f"{time.perf_counter() - t0:.0f}s", flush=True))
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), ckpt)
        self.model = model.eval()
        self.gm = GroupMap(model, self.tr[0][:1].float())
        table_path = ckpt.with_suffix(".scores.npz")
        if table_path.exists():
            self.table = ScoreTable.load(table_path)
        else:
            batches = TensorLoader(*self.tr, batch_size=64, mean=self.mean,
                                   std=self.std).batches(8)
            self.table = compute_scores(model, self.gm, DEFAULT_POOL, batches)
            self.table.save(table_path)
        self.layout = GenomeLayout.build(self.table, self.gm, granularity="group",
                                         max_ratio=0.8, min_channels=4)
        self.evaluator = self.make_evaluator(seed=0)

    def make_evaluator(self, seed: int) -> Evaluator:
        s = candidate_settings(seed, bn_batches=self.args.bn_batches,
                               finetune_steps=self.args.steps, lr=0.02, batch_size=128)
        return Evaluator(self.model, self.gm, self.table, self.layout, self.tr, self.ho,
                         mean=self.mean, std=self.std, pad=self.data.pad, flip=self.data.flip,
                         settings=s)

    def test_accuracy(self, model: torch.nn.Module) -> float:
        loader = TensorLoader(self.data.x_test, self.data.y_test, batch_size=512, mean=self.mean,
                              std=self.std, shuffle=False, drop_last=False)
        return evaluate(model, loader)["accuracy"]


_BENCH: Bench | None = None


def _init(args: argparse.Namespace) -> None:
    global _BENCH
    torch.set_num_threads(1)
    _BENCH = Bench(args)


def _record(genome: list[float], res: Any) -> dict[str, Any]:
    return {"genome": [float(g) for g in genome], "accuracy": res.accuracy,
            "flops_ratio": res.flops_ratio, "params_ratio": res.params_ratio,
            "status": res.status, "plan": res.plan, "seconds": res.timings.get("total", 0.0)}


def run_method(job: tuple[str, int, int | None]) -> dict[str, Any]:
    """One (method, seed) search with the evaluator in this process (1 thread)."""
    method, seed, fixed = job
    b = _BENCH
    assert b is not None
    args = b.args
    ev = b.evaluator
    n_a = len(b.layout.criteria)
    objectives = Objectives(("accuracy", "flops"), args.max_flops_ratio)
    lo, hi = b.layout.bounds()
    seeds: list[tuple[float, ...]] = []
    if method in ("deap-nsga2", "fixed-alpha"):  # the same seeding as `blendprune search`
        count = args.population - args.population // 4
        only = [fixed] if method == "fixed-alpha" else None
        seeds = [tuple(g) for _, g in ev.decoder.spread_seeds(args.max_flops_ratio, count, only)]
    if method == "fixed-alpha":  # alpha genes pinned to the one-hot of the best criterion
        pinned = np.eye(n_a)[fixed]
        lo = list(pinned) + lo[n_a:]
        hi = list(pinned) + hi[n_a:]
    problem = Problem(tuple(lo), tuple(hi), objectives, args.population, args.generations,
                      seed, tuple(seeds))
    strategy = create_strategy("deap-nsga2" if method == "fixed-alpha" else method, problem)
    records, t0 = [], time.perf_counter()
    n = 0
    while not strategy.finished:
        genome = strategy.suggest(f"t{n}")
        assert genome is not None  # one worker: a generation always completes in order
        res = ev.evaluate(genome)
        strategy.on_trial_complete(f"t{n}", res.to_dict())
        records.append(_record(genome, res))
        n += 1
    print(f"  {method} seed {seed}: {n} candidates in {time.perf_counter() - t0:.0f}s",
          flush=True)
    return {"method": method, "seed": seed, "records": records}


def run_single(job: tuple[str, int, list[float]]) -> dict[str, Any]:
    """One criterion at uniform ratios hitting each FLOPs target of the sweep."""
    name, k, targets = job
    b = _BENCH
    assert b is not None
    alpha = np.eye(len(b.layout.criteria))[k]
    records = []
    for t in targets:
        genome = b.layout.make(alpha, b.evaluator.decoder.uniform_value_for(alpha, t))
        records.append(_record(genome, b.evaluator.evaluate(genome)))
    return {"method": f"single:{name}", "seed": 0, "records": records}


def run_noise(job: tuple[int, list[float]]) -> float:
    seed, genome = job
    assert _BENCH is not None
    return _BENCH.make_evaluator(seed).evaluate(genome).accuracy


def run_final(job: tuple[str, float, dict[str, list[int]], int]) -> dict[str, Any]:
    method, target, plan, seed = job
    b = _BENCH
    assert b is not None
    torch.manual_seed(seed)
    model = apply_plan(b.model, b.gm, Plan.from_dict(plan))
    loader = TensorLoader(*b.tr, batch_size=128, mean=b.mean, std=b.std, augment=True,
                          pad=b.data.pad, flip=b.data.flip, seed=seed)
    finetune(model, loader.batches(b.args.final_steps), b.args.final_steps, lr=0.02)
    return {"method": method, "target": target, "seed": seed,
            "test_accuracy": b.test_accuracy(model)}


def front_hv(records: list[dict[str, Any]], max_flops: float = 1.0) -> float:
    pts = np.array([[r["accuracy"], r["flops_ratio"]] for r in records
                    if r["status"] == "ok" and r["flops_ratio"] <= max_flops])
    if len(pts) == 0:
        return 0.0
    return hypervolume(pts[non_dominated(pts, (1, -1))], (1, -1), (0.0, 1.0))


def best_at(records: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    ok = [r for r in records if r["status"] == "ok" and r["flops_ratio"] <= target]
    return max(ok, key=lambda r: r["accuracy"]) if ok else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["fashion-mnist", "cifar10"], default="fashion-mnist")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+",
                   default=["deap-nsga2", "fixed-alpha", "random", "optuna-nsga2",
                            "optuna-tpe"])
    p.add_argument("--population", type=int, default=12)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--max-flops-ratio", type=float, default=0.6)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--bn-batches", type=int, default=10)
    p.add_argument("--holdout", type=int, default=2000)
    p.add_argument("--base-epochs", type=int, default=10)
    p.add_argument("--final-steps", type=int, default=800)
    p.add_argument("--final-seeds", type=int, default=2)
    p.add_argument("--noise-seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--merge", action="store_true",
                   help="keep the previous result's searches for methods not rerun now "
                        "(same settings required), e.g. after changing one method")
    args = p.parse_args()
    if not (args.data_root / ("fashion-mnist" if args.dataset == "fashion-mnist"
                              else "cifar10-jpeg")).exists():
        raise SystemExit(f"{args.dataset} not found under {args.data_root}")
    t_start = time.perf_counter()
    main_bench = Bench(args)  # trains/caches the base model before the pool forks
    base_test = main_bench.test_accuracy(main_bench.model)
    base_holdout = main_bench.evaluator.evaluate(
        main_bench.layout.make(np.ones(len(main_bench.layout.criteria)), 0.0)).accuracy
    print(f"base ResNet-20 on {args.dataset}: test {base_test:.4f}, holdout after the brief "
          f"fine-tune {base_holdout:.4f}", flush=True)
    criteria = list(main_bench.layout.criteria)
    budget = args.population * args.generations
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs, initializer=_init, initargs=(args,)) as pool:
        # 1. single criteria swept over the FLOPs range, as many points as fit the budget
        n_targets = max(2, budget // len(criteria))
        sweep = list(np.linspace(0.2, args.max_flops_ratio, n_targets))
        singles = pool.map(run_single, [(c, k, sweep) for k, c in enumerate(criteria)])
        best_k = int(np.argmax([front_hv(s["records"]) for s in singles]))
        print(f"best single criterion by hypervolume: {criteria[best_k]}", flush=True)
        # 2. noise of the evaluator: one candidate, several data orders
        noise_genome = singles[best_k]["records"][len(sweep) // 2]["genome"]
        noise = pool.map(run_noise, [(s, noise_genome) for s in range(args.noise_seeds)])
        # 3. the searches
        jobs = [(m, s, best_k) for s in args.seeds for m in args.methods]
        searches = pool.map(run_method, jobs)
        # 4. final fine-tunes of each method's best candidate at each FLOPs target
        finals_in = []
        all_single = [r for s in singles for r in s["records"]]
        for target in TARGETS:
            picks = {"single-best": best_at(all_single, target)}
            for m in args.methods:
                runs = [s for s in searches if s["method"] == m]
                picks[m] = best_at([r for s in runs if s["seed"] == args.seeds[0]
                                    for r in s["records"]], target)
            for m, rec in picks.items():
                if rec is not None:
                    finals_in += [(m, target, rec["plan"], fs) for fs in range(args.final_seeds)]
        finals = pool.map(run_final, finals_in)
    merged_from = None
    if args.merge:
        searches, finals, merged_from = merge_previous(args, budget, searches, finals)
    summary: dict[str, Any] = {}
    single_hv = [front_hv(s["records"]) for s in singles]
    summary["single"] = {c: hv for c, hv in zip(criteria, single_hv)}
    summary["single-best"] = {"criterion": criteria[best_k], "hypervolume": max(single_hv),
                              "pooled_hypervolume": front_hv(all_single)}
    for m in args.methods:
        hvs = [front_hv(s["records"]) for s in searches if s["method"] == m]
        summary[m] = {"hypervolume": hvs, "median": statistics.median(hvs),
                      "spread": (max(hvs) - min(hvs)) if len(hvs) > 1 else 0.0}
    for target in TARGETS:
        for m in ["single-best", *args.methods]:
            acc = [f["test_accuracy"] for f in finals if f["method"] == m and
                   f["target"] == target]
            if acc:
                entry = summary.setdefault(f"test@{target}", {})
                entry[m] = {"mean": statistics.mean(acc),
                            "sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                            "samples": acc}
    summary["noise"] = {"holdout_accuracy": noise, "sd": statistics.stdev(noise),
                        "genome_flops_ratio": singles[best_k]["records"][len(sweep) // 2][
                            "flops_ratio"]}
    png = plot(args.dataset, singles, searches, criteria[best_k])
    for s in searches:
        for r in s["records"]:
            r.pop("plan", None)
    for s in singles:
        for r in s["records"]:
            r.pop("plan", None)
    write_result(f"pareto_quality_{args.dataset}", {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "base": {"test_accuracy": base_test, "holdout_accuracy_brief_finetune": base_holdout},
        "budget": budget, "summary": summary, "plot": png.name, "singles": singles,
        "searches": searches, "finals": finals, "merged_from": merged_from,
        "wall_seconds": time.perf_counter() - t_start})
    print(json.dumps(summary, indent=1))


def merge_previous(args: argparse.Namespace, budget: int, searches: list[dict],
                   finals: list[dict]) -> tuple[list[dict], list[dict], dict | None]:
    """Searches and finals of the previous result for the methods not rerun now.

    Valid because every method runs on the same cached base model and ScoreTable with
    common random numbers; the settings must match, or this stops.
    """
    path = RESULTS / f"pareto_quality_{args.dataset}.json"
    if not path.exists():
        return searches, finals, None
    old = json.loads(path.read_text())
    ignore = {"methods", "merge", "jobs", "data_root"}
    now = {k: v for k, v in vars(args).items() if k not in ignore}
    before = {k: v for k, v in old["settings"].items() if k not in ignore}
    if now != before or old["budget"] != budget:
        raise SystemExit(f"--merge: {path} was made with other settings: {before}")
    kept = [m for m in old["settings"]["methods"] if m not in args.methods]
    searches = [s for s in old["searches"] if s["method"] in kept] + searches
    finals = [f for f in old["finals"] if f["method"] in kept] + finals
    args.methods = [m for m in old["settings"]["methods"] if m in kept or m in args.methods] \
        + [m for m in args.methods if m not in old["settings"]["methods"]]
    return searches, finals, {"command": old["command"], "date": old["date"], "methods": kept}


def plot(dataset: str, singles: list[dict], searches: list[dict], best: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    colors = {"deap-nsga2": "tab:red", "fixed-alpha": "tab:orange", "random": "tab:gray",
              "optuna-nsga2": "tab:blue", "optuna-tpe": "tab:purple"}
    for m, c in colors.items():
        runs = [s for s in searches if s["method"] == m]
        if not runs:
            continue
        recs = [r for r in runs[0]["records"] if r["status"] == "ok"]
        pts = np.array([[r["accuracy"], r["flops_ratio"]] for r in recs])
        front = pts[non_dominated(pts, (1, -1))]
        front = front[np.argsort(front[:, 1])]
        ax.step(front[:, 1], front[:, 0], where="post", c=c, label=f"{m} (seed {runs[0]['seed']})")
        ax.scatter(front[:, 1], front[:, 0], s=12, c=c)
    for s in singles:
        recs = s["records"]
        name = s["method"].split(":")[1]
        ax.plot([r["flops_ratio"] for r in recs], [r["accuracy"] for r in recs],
                ls=":", lw=1.4 if name == best else 0.6, c="k" if name == best else "0.6",
                label=f"single {name}" if name == best else None)
    ax.set_xlabel("FLOPs ratio")
    ax.set_ylabel("holdout accuracy (brief fine-tune)")
    ax.set_title(f"ResNet-20 on {dataset}: fronts at equal budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = RESULTS / f"pareto_quality_{dataset}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
