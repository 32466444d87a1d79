"""Distillation from the base model in the final fine-tune: does it pay?

`final.distill` blends the final fine-tune's cross-entropy with the KL divergence to the
unpruned base model's soft targets (`pruning.Distill`, temperature 4). This measures it
where the product spends most of its training, the final fine-tune: the picks of
`pareto_quality`'s default search (its stored searches at its default settings) at each
`--targets` are fine-tuned as that benchmark's finals are (same plan, steps, seeds and
batches) with distillation weight `--weight`, and each is paired with the stored plain
final of the same plan and seed, so the difference is the distillation alone. Reported
per target and over all of them: mean test accuracy with and without, and the paired
difference with its 95% interval.

Distilled finals are kept in pareto_quality's progress file (under "distilled", keyed by
weight, steps, pick and seed) as they finish, so a stopped run resumes.

    python -m benchmarks.distill_gain --dataset cifar10 --targets 0.3 0.5
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from benchmarks._common import DEFAULT_DATA_ROOT, write_result
from benchmarks.matched import interval, paired
from benchmarks.pareto_quality import (
    DEFAULT,
    Bench,
    Store,
    _bench,
    _init,
    final_accuracy,
    finetune_seeds,
    gathered,
)
from benchmarks.pareto_quality import parser as pareto_parser

Job = tuple[str, dict[str, list[int]], int]


def run_distilled(job: tuple[Job, float]) -> tuple[str, float]:
    """One pick fine-tuned with distillation: (its key, test accuracy)."""
    (key, plan, seed), weight = job
    b = _bench()
    return key, final_accuracy(b, plan, seed, b.args.final_steps, distill=weight)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["fashion-mnist", "cifar10"], default="cifar10")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.3, 0.4, 0.5])
    p.add_argument("--weight", type=float, default=0.5, help="distillation weight (0, 1)")
    p.add_argument("--jobs", type=int, default=1)
    args = p.parse_args()
    if not 0 < args.weight < 1:
        p.error(f"--weight: must be in (0, 1), not {args.weight}")
    pq = pareto_parser().parse_args(["--dataset", args.dataset,
                                     "--data-root", str(args.data_root)])
    unknown = sorted(set(args.targets) - set(pq.targets))
    if unknown:
        p.error(f"--targets: {unknown} are not pareto_quality targets {pq.targets}")
    t0 = time.perf_counter()
    store = Store(pq, Bench(pq).digest)
    _, _, chosen = gathered(pq, store)
    finals = store.data["finals"]
    prefix = f"{pq.final_steps}:d{args.weight:g}:"
    jobs: list[Job] = []
    pairs: dict[str, str] = {}  # distilled key -> the plain final's key
    by_target: dict[str, list[str]] = {str(t): [] for t in args.targets}
    for t in args.targets:
        for key, rec in chosen.items():
            if not key.startswith(f"{DEFAULT}/") or not key.endswith(f"/{t}"):
                continue
            for f in finetune_seeds(pq, key):
                plain, mine = f"{pq.final_steps}:{key}/{f}", f"{prefix}{key}/{f}"
                if plain not in finals:
                    p.error(f"no plain final {plain} in {store.path.name}: run "
                            f"benchmarks.pareto_quality --dataset {args.dataset} first")
                pairs[mine] = plain
                by_target[str(t)].append(mine)
                if mine not in store.data.get("distilled", {}):
                    jobs.append((mine, rec["plan"], f))
    print(f"{len(jobs)} distilled fine-tunes to run, {len(pairs) - len(jobs)} stored",
          flush=True)
    with mp.get_context("spawn").Pool(args.jobs, initializer=_init, initargs=(pq,)) as pool:
        for key, acc in pool.imap_unordered(run_distilled, [(j, args.weight) for j in jobs]):
            store.put("distilled", key, acc)
            print(f"  {key}: {acc:.4f} (plain {finals[pairs[key]]:.4f})", flush=True)
    distilled = store.data["distilled"]

    def row(keys: list[str]) -> dict[str, Any]:
        a = [distilled[k] for k in keys]
        b = [finals[pairs[k]] for k in keys]
        return {"distilled": interval(a), "plain": interval(b), "difference": paired(a, b)}

    per_target = {t: row(keys) for t, keys in by_target.items()}
    summary = {"weight": args.weight, "method": DEFAULT, "per_target": per_target,
               "all": row(list(pairs))}
    write_result(f"distill_gain_{args.dataset}", {
        "settings": {**{k: str(v) if isinstance(v, Path) else v
                        for k, v in vars(args).items()},
                     "final_steps": pq.final_steps, "final_seeds": pq.final_seeds,
                     "search_seeds": pq.seeds},
        "summary": summary,
        "finals": {k: {"distilled": distilled[k], "plain": finals[v]} for k, v in pairs.items()},
        "wall_seconds_this_run": time.perf_counter() - t0})
    for t, r in [*((f"≤ {t}", r) for t, r in per_target.items()), ("all", summary["all"])]:
        d = r["difference"]
        print(f"{t}: distilled {100 * r['distilled']['mean']:.2f}% vs plain "
              f"{100 * r['plain']['mean']:.2f}%: {100 * d['mean']:+.2f} pp "
              f"[{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}] n={d['n']}")


if __name__ == "__main__":
    main()
