"""Orchestration overhead: the full search stack vs a plain loop over the same candidates.

(a) `Search.run_search` with 1 worker: Ray Tune trials on a resident actor, the DEAP
    strategy, the fsynced ledger, state checkpoints and MLflow logging (SQLite store);
(b) the genomes (a) evaluated, replayed through one Evaluator in a plain loop.
Both at 1 compute thread; repeats alternate (a) and (b). Goal: (a)/(b) <= 1.10 with ~2 s
candidates.

    python -m benchmarks.overhead --repeats 3
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks._common import write_result
from benchmarks._stack import digits_config, run_plain, run_stack, workspace


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--steps", type=int, default=60, help="fine-tune steps (~2 s candidates)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cfg = digits_config(args.population, args.generations, args.steps, workers=1)
    ws = workspace(cfg)
    stack, plain, ratios = [], [], []
    for i in range(args.repeats):
        a, genomes = run_stack(cfg, ws)
        b, results = run_plain(ws, genomes)
        stack.append(a)
        plain.append(b)
        ratios.append(a / b)
        per = b / len(genomes)
        print(f"repeat {i}: stack {a:.1f}s  plain {b:.1f}s  ratio {a / b:.3f}  "
              f"({len(genomes)} candidates, {per:.2f}s each in the loop)", flush=True)
    n = cfg.search.budget
    write_result("overhead", {
        "settings": vars(args), "candidates": n,
        "stack_seconds": stack, "plain_seconds": plain, "ratios": ratios,
        "median": {"stack_seconds": statistics.median(stack),
                   "plain_seconds": statistics.median(plain),
                   "seconds_per_candidate_plain": statistics.median(plain) / n,
                   "ratio": statistics.median(ratios)},
        "goal": "stack/plain <= 1.10", "met": statistics.median(ratios) <= 1.10})


if __name__ == "__main__":
    main()
