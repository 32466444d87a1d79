"""Scaling: candidates per minute of the full search stack with 1 vs 2 workers.

Both on this machine's 2 cores, 1 compute thread per worker, the same search (same
seed); repeats alternate 1 and 2 workers. Run for the generational NSGA-II (a barrier
at every generation) and the steady-state one (none). Goal: >= 1.8x with 2 workers.

    python -m benchmarks.scaling --repeats 3
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks._common import write_result
from benchmarks._stack import digits_config, run_stack, workspace


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algorithms", nargs="+", default=["deap-nsga2", "deap-steady"])
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--steps", type=int, default=120, help="fine-tune steps (~2 s candidates)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    ws = None
    out = {}
    for algo in args.algorithms:
        configs = {w: digits_config(args.population, args.generations, args.steps, w, algo)
                   for w in (1, 2)}
        ws = ws or workspace(configs[1])
        rates: dict[int, list[float]] = {1: [], 2: []}
        speedups = []
        for i in range(args.repeats):
            seconds = {}
            for w, cfg in configs.items():
                seconds[w], _, _ = run_stack(cfg, ws)
                rates[w].append(60 * cfg.search.budget / seconds[w])
            speedups.append(seconds[1] / seconds[2])
            print(f"{algo} repeat {i}: 1 worker {seconds[1]:.1f}s  2 workers "
                  f"{seconds[2]:.1f}s  speed-up {speedups[-1]:.2f}x", flush=True)
        out[algo] = {"candidates_per_minute": {str(w): r for w, r in rates.items()},
                     "speedups": speedups,
                     "median": {"candidates_per_minute_1": statistics.median(rates[1]),
                                "candidates_per_minute_2": statistics.median(rates[2]),
                                "speedup": statistics.median(speedups)}}
    best = max(v["median"]["speedup"] for v in out.values())
    write_result("scaling", {
        "settings": vars(args), "candidates": args.population * args.generations,
        "algorithms": out, "goal": "2 workers >= 1.8x 1 worker", "met": best >= 1.8})


if __name__ == "__main__":
    main()
