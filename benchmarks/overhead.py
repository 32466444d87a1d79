"""Orchestration overhead: the full search stack vs a plain loop over the same candidates.

(a) `Search.run_search` with 1 worker: Ray Tune trials on a resident actor, the DEAP
    strategy, the fsynced ledger, state checkpoints and MLflow logging (SQLite store);
(b) the genomes (a) evaluated, replayed through one Evaluator in a plain loop.
Both at 1 compute thread; repeats alternate (a) and (b). Goal: (a)/(b) <= 1.10 with ~2 s
candidates. Also reported: the steady-state ratio, first to last completion, which leaves
out the one-off start of the Tune actor (a search pays it once, not per candidate).

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
    p.add_argument("--steps", type=int, default=120, help="fine-tune steps (~2 s candidates)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cfg = digits_config(args.population, args.generations, args.steps, workers=1)
    ws = workspace(cfg)
    stack, plain, ratios, steady = [], [], [], []
    for i in range(args.repeats):
        a, genomes, done_a = run_stack(cfg, ws)
        b, done_b = run_plain(cfg, ws, genomes)
        stack.append(a)
        plain.append(b)
        ratios.append(a / b)
        steady.append((done_a[-1] - done_a[0]) / (done_b[-1] - done_b[0]))
        per = b / len(genomes)
        print(f"repeat {i}: stack {a:.1f}s  plain {b:.1f}s  ratio {a / b:.3f}  steady-state "
              f"{steady[-1]:.3f}  ({len(genomes)} candidates, {per:.2f}s each in the loop)",
              flush=True)
    n = cfg.search.budget
    write_result("overhead", {
        "settings": vars(args), "candidates": n,
        "stack_seconds": stack, "plain_seconds": plain, "ratios": ratios,
        "steady_state_ratios": steady,
        "median": {"stack_seconds": statistics.median(stack),
                   "plain_seconds": statistics.median(plain),
                   "seconds_per_candidate_plain": statistics.median(plain) / n,
                   "ratio": statistics.median(ratios),
                   "steady_state_ratio": statistics.median(steady)},
        "goal": "stack/plain <= 1.10", "met": statistics.median(ratios) <= 1.10})


if __name__ == "__main__":
    main()
