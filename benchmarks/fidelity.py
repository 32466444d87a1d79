"""Which cheap score ranks pruned structures as the final fine-tune does?

Successive halving is only worth its rungs if a cheap rung ranks candidates roughly as the
expensive result does. At each FLOPs target this benchmark takes a fixed set of distinct
structures of the committed ResNet-20 (every criterion cluster at uniform ratios, their
LAMP-style global profiles, then random blends and ratio profiles, all repaired onto the
target) and scores each at every rung (holdout accuracy after adaptive BN alone, then after
`--rungs` fine-tune steps), and once more as `pareto_quality` scores its picks: a
`--final-steps` fine-tune and the test split. It reports the Spearman correlation of each
rung with the final accuracy, between consecutive rungs, and the regret of picking the
top candidate of each rung (final accuracy of the best minus that of the rung's pick).
With `--distill W` every fine-tuned rung is scored a second time with distillation from
the base model at weight W (the search's `evaluation.distill`, same batches): the search
picks by these scores, so distillation in the brief fine-tune pays only if it ranks
structures closer to the final result. Reported as each distilled rung's Spearman and
regret, and the paired Spearman gain over the plain rung with a bootstrap 95% interval
(candidates resampled). The final stays plain, as `pareto_quality` scores every method's
picks, although the product's own final now distils (`final.distill`). Every score is
kept in `benchmarks/progress/` as it comes, so a stopped run resumes; `--jobs` scores that
many candidates at once.

    python -m benchmarks.fidelity --dataset fashion-mnist --targets 0.3 --candidates 24
    python -m benchmarks.fidelity --dataset cifar10 --targets 0.3 0.5 --rungs 0 40 120 \
        --distill 0.5 --jobs 2
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import multiprocessing as mp
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import DEFAULT_DATA_ROOT, PROGRESS, write_progress, write_result
from benchmarks.pareto_quality import Bench, _bench, _init, final_accuracy
from pruning import Evaluator, Fidelity


def candidates(b: Bench, target: float, count: int, seed: int) -> list[tuple[str, list[float]]]:
    """Distinct structures at `target`: cluster seeds, global profiles, then random ones."""
    ev, layout = b.evaluator, b.layout
    out = [(n, g) for n, g in ev.decoder.target_seeds(10**6) if n.endswith(f"@{target:g}")]
    seen = {_key(b, g) for _, g in out}
    rng = np.random.default_rng(seed)
    n_c, n_s = len(layout.criteria), len(layout.slots)
    while len(out) < count:
        genome = layout.make(rng.dirichlet(np.ones(n_c)).tolist(),
                             rng.uniform(0, layout.max_ratio, n_s).tolist(), target)
        if (k := _key(b, genome)) not in seen:
            seen.add(k)
            out.append((f"random{len(out)}@{target:g}", genome))
    return out[:count]


def _key(b: Bench, genome: list[float]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(v) for v in b.evaluator.decode(genome).to_dict().values())


def _spearman(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3:
        return None
    rho = float(spearmanr(a, b).statistic)
    return rho if np.isfinite(rho) else None


def report(rows: list[dict[str, Any]], rungs: list[int],
           distill: float = 0.0) -> dict[str, Any]:
    """Rank agreement of every rung with the final test accuracy, and each pick's regret;
    with `distill`, the same for the distilled rungs and their Spearman gain."""
    fine = [k for k in rungs if k > 0] if distill else []
    done = [r for r in rows if "final" in r and all(str(k) in r["rungs"] for k in rungs)
            and all(str(k) in r.get("distilled", {}) for k in fine)]
    final = [r["final"] for r in done]
    out: dict[str, Any] = {"candidates": len(done), "spearman_vs_final": {},
                           "spearman_vs_next": {}, "pick_regret": {}}
    if not done:
        return out
    for i, k in enumerate(rungs):
        score = [r["rungs"][str(k)] for r in done]
        out["spearman_vs_final"][str(k)] = _spearman(score, final)
        if i + 1 < len(rungs):
            nxt = [r["rungs"][str(rungs[i + 1])] for r in done]
            out["spearman_vs_next"][f"{k}->{rungs[i + 1]}"] = _spearman(score, nxt)
        out["pick_regret"][str(k)] = _regret(score, final)
    out["final_range"] = [min(final), max(final)]
    if fine:
        d: dict[str, Any] = {"weight": distill, "spearman_vs_final": {}, "pick_regret": {},
                             "spearman_gain": {}, "accuracy_gain": {}}
        for k in fine:
            plain = [r["rungs"][str(k)] for r in done]
            dist = [r["distilled"][str(k)] for r in done]
            d["spearman_vs_final"][str(k)] = _spearman(dist, final)
            d["pick_regret"][str(k)] = _regret(dist, final)
            d["spearman_gain"][str(k)] = _spearman_gain(plain, dist, final)
            d["accuracy_gain"][str(k)] = float(np.mean(dist) - np.mean(plain))
        out["distilled"] = d
    return out


def _regret(score: list[float], final: list[float]) -> float:
    """Final accuracy of the best candidate minus that of the one `score` ranks first."""
    return max(final) - final[int(np.argmax(score))]


def _spearman_gain(plain: list[float], dist: list[float], final: list[float]
                   ) -> dict[str, float | None]:
    """Spearman(dist, final) - Spearman(plain, final) on all candidates, with a paired
    bootstrap 95% percentile interval (the same candidates resampled for both)."""
    from scipy.stats import bootstrap

    def gain(p: np.ndarray, d: np.ndarray, f: np.ndarray) -> float:
        a, b = _spearman(list(d), list(f)), _spearman(list(p), list(f))
        return float("nan") if a is None or b is None else a - b

    point = gain(np.array(plain), np.array(dist), np.array(final))
    if not np.isfinite(point):  # fewer than 3 candidates, or one score ties throughout
        return {"point": None, "lo": None, "hi": None}
    with warnings.catch_warnings():  # resamples whose scores all tie have no Spearman
        warnings.simplefilter("ignore")
        res = bootstrap((plain, dist, final), gain, paired=True, vectorized=False,
                        n_resamples=2000, method="percentile", random_state=0)
    lo, hi = np.nanpercentile(res.bootstrap_distribution, [2.5, 97.5])
    return {"point": point, "lo": float(lo), "hi": float(hi)}


@functools.cache
def _distilling(weight: float) -> Evaluator:
    return _bench().make_evaluator(seed=0, distill=weight)


def score(job: tuple[str, list[float], dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The missing scores of one candidate (rungs, distilled rungs, final), in a worker."""
    name, genome, row = job
    b = _bench()
    args = b.args
    row = copy.deepcopy(row)
    for k in args.rungs:
        if str(k) not in row["rungs"]:
            res = b.evaluator.evaluate(genome, Fidelity(finetune_steps=k))
            row["rungs"][str(k)] = res.accuracy
            row["flops_ratio"] = res.flops_ratio
    if args.distill:
        dist = row.setdefault("distilled", {}).setdefault(f"{args.distill:g}", {})
        for k in args.rungs:
            if k > 0 and str(k) not in dist:
                res = _distilling(args.distill).evaluate(genome, Fidelity(finetune_steps=k))
                dist[str(k)] = res.accuracy
    key = f"final{args.final_steps}"
    if key not in row:
        row[key] = final_accuracy(b, b.evaluator.decode(genome).to_dict(), 0, args.final_steps)
    return name, row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["fashion-mnist", "cifar10"], default="fashion-mnist")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--targets", type=float, nargs="+", default=[0.3])
    p.add_argument("--candidates", type=int, default=24, help="structures per target")
    p.add_argument("--rungs", type=int, nargs="+", default=[0, 10, 40, 120],
                   help="fine-tune steps of each rung (0: adaptive BN alone)")
    p.add_argument("--final-steps", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", nargs="+", default=["l1", "l2", "fpgm", "bn_gamma", "dcff_kl",
                                                  "texture", "taylor", "hrank", "apoz"])
    p.add_argument("--bn-batches", type=int, default=10)
    p.add_argument("--distill", type=float, default=0.0,
                   help="also score the fine-tuned rungs distilled from the base at this weight")
    p.add_argument("--jobs", type=int, default=1, help="candidates scored at once")
    args = p.parse_args()
    args.steps = max(args.rungs)
    torch.set_num_threads(1)
    b = Bench(args)
    keep = {"base": b.digest,
            **{k: v for k, v in vars(args).items() if k in ("dataset", "pool", "bn_batches",
                                                            "seed")}}
    digest = hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]
    cache = PROGRESS / f"fidelity-{args.dataset}-{digest}.json"
    scores: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    t0 = time.perf_counter()
    per_target = {}
    key, w = f"final{args.final_steps}", f"{args.distill:g}"
    with mp.get_context("spawn").Pool(args.jobs, initializer=_init, initargs=(args,)) as pool:
        for t in args.targets:
            todo = candidates(b, t, args.candidates, args.seed)
            jobs = [(n, g, scores.get(n, {"rungs": {}})) for n, g in todo]
            for name, row in pool.imap_unordered(score, jobs):
                scores[name] = row
                write_progress(cache, scores)
                dist = row.get("distilled", {}).get(w, {}) if args.distill else {}
                print(f"{name:24s} " + " ".join(f"{row['rungs'][str(k)]:.3f}"
                                                for k in args.rungs)
                      + "".join(f" d{k}:{v:.3f}" for k, v in dist.items())
                      + f"  final {row[key]:.4f}  ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
            rows = [{"name": n, "rungs": scores[n]["rungs"], "final": scores[n][key],
                     "flops_ratio": scores[n]["flops_ratio"],
                     **({"distilled": scores[n]["distilled"][w]} if args.distill else {})}
                    for n, _ in todo]
            per_target[str(t)] = {"report": report(rows, args.rungs, args.distill),
                                  "rows": rows}
            print(json.dumps({t: per_target[str(t)]["report"]}, indent=1), flush=True)
    write_result(f"fidelity_{args.dataset}", {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets": per_target, "wall_seconds_this_run": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
