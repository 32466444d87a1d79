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
Every score is kept in `benchmarks/progress/` as it comes, so a stopped run resumes.

    python -m benchmarks.fidelity --dataset fashion-mnist --targets 0.3 --candidates 24
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import DEFAULT_DATA_ROOT, PROGRESS, write_result
from benchmarks.pareto_quality import Bench, final_accuracy
from pruning import Fidelity


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


def report(rows: list[dict[str, Any]], rungs: list[int]) -> dict[str, Any]:
    """Rank agreement of every rung with the final test accuracy, and each pick's regret."""
    done = [r for r in rows if "final" in r and all(str(k) in r["rungs"] for k in rungs)]
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
        out["pick_regret"][str(k)] = max(final) - done[int(np.argmax(score))]["final"]
    out["final_range"] = [min(final), max(final)]
    return out


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
    for t in args.targets:
        rows = []
        for name, genome in candidates(b, t, args.candidates, args.seed):
            row = scores.setdefault(name, {"rungs": {}})
            for k in args.rungs:
                if str(k) not in row["rungs"]:
                    res = b.evaluator.evaluate(genome, Fidelity(finetune_steps=k))
                    row["rungs"][str(k)] = res.accuracy
                    row["flops_ratio"] = res.flops_ratio
            key = f"final{args.final_steps}"
            if key not in row:
                row[key] = final_accuracy(b, b.evaluator.decode(genome).to_dict(), 0,
                                          args.final_steps)
            rows.append({"name": name, "rungs": row["rungs"], "final": row[key],
                         "flops_ratio": row["flops_ratio"]})
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(scores))
            print(f"{name:24s} " + " ".join(f"{row['rungs'][str(k)]:.3f}" for k in args.rungs)
                  + f"  final {row[key]:.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        per_target[str(t)] = {"report": report(rows, args.rungs), "rows": rows}
        print(json.dumps({t: per_target[str(t)]["report"]}, indent=1), flush=True)
    write_result(f"fidelity_{args.dataset}", {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets": per_target, "wall_seconds_this_run": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
