"""Scaling: candidates per minute of the full search stack with 1 vs 2 workers.

Both on this machine's 2 cores, 1 compute thread per worker, the same search (same
seed); repeats alternate 1 and 2 workers. Run for the generational NSGA-II (a barrier
at every generation) and the steady-state one (none), on the resident actor pool (the
default executor) and on Ray Tune trials. Goal: >= 1.8x with 2 workers on actors, for
both algorithms, with exactly W actor processes started. Also reported: the steady-state
speed-up (time per candidate after each worker's first, i.e. without the one-off actor
starts), the candidates' own time with 2 workers over 1 (what sharing 2 cores with the
driver and Ray's daemons costs each candidate) and the driver's CPU seconds. Results of
executors not rerun are kept (`--executors actors` reruns one).

    python -m benchmarks.scaling --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from benchmarks._common import RESULTS, write_result
from benchmarks._stack import digits_config, run_stack, workspace


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algorithms", nargs="+", default=["deap-nsga2", "deap-steady"])
    p.add_argument("--executors", nargs="+", default=["actors", "tune"])
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=6,
                   help="48 candidates: the one-off actor start is a small share")
    p.add_argument("--steps", type=int, default=120, help="fine-tune steps (~2 s candidates)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    ws = None
    out: dict[str, dict[str, Any]] = {}
    for executor in args.executors:
        for algo in args.algorithms:
            configs = {w: digits_config(args.population, args.generations, args.steps, w,
                                        algo, executor) for w in (1, 2)}
            ws = ws or workspace(configs[1])
            rates: dict[int, list[float]] = {1: [], 2: []}
            started: dict[int, list[int]] = {1: [], 2: []}
            own: dict[int, list[float]] = {1: [], 2: []}
            driver_cpu: dict[int, list[float]] = {1: [], 2: []}
            speedups, steady = [], []
            for i in range(args.repeats):
                seconds, span = {}, {}
                for w, cfg in configs.items():
                    stats: dict[str, Any] = {}
                    seconds[w], _, done = run_stack(cfg, ws, stats)
                    span[w] = (done[-1] - done[w - 1]) / (len(done) - w)  # after the starts
                    rates[w].append(60 * cfg.search.budget / seconds[w])
                    if "actors_started" in stats:
                        started[w].append(stats["actors_started"])
                    own[w].append(statistics.median(stats["candidate_seconds"]))
                    driver_cpu[w].append(stats["driver_cpu_seconds"])
                speedups.append(seconds[1] / seconds[2])
                steady.append(span[1] / span[2])
                print(f"{executor} {algo} repeat {i}: 1 worker {seconds[1]:.1f}s  2 workers "
                      f"{seconds[2]:.1f}s  speed-up {speedups[-1]:.2f}x  (steady state "
                      f"{steady[-1]:.2f}x)", flush=True)
            out.setdefault(executor, {})[algo] = {
                "candidates_per_minute": {str(w): r for w, r in rates.items()},
                "speedups": speedups, "steady_state_speedups": steady,
                "actors_started": {str(w): s for w, s in started.items() if s},
                "candidate_seconds_median": {str(w): s for w, s in own.items()},
                "driver_cpu_seconds": {str(w): s for w, s in driver_cpu.items()},
                "median": {"candidates_per_minute_1": statistics.median(rates[1]),
                           "candidates_per_minute_2": statistics.median(rates[2]),
                           "speedup": statistics.median(speedups),
                           "steady_state_speedup": statistics.median(steady),
                           "candidate_slowdown": statistics.median(
                               b / a for a, b in zip(own[1], own[2], strict=True))}}
    previous = RESULTS / "scaling.json"  # executors not rerun keep their last results
    if previous.exists():
        old = json.loads(previous.read_text())
        if old.get("candidates") == args.population * args.generations:
            out = {**old.get("executors", {}), **out}
    actors = out.get("actors", {})
    met = bool(actors) and all(
        v["median"]["speedup"] >= 1.8 and all(s == [w] * len(s) for w, s in (
            (int(k), s) for k, s in v["actors_started"].items()))
        for v in actors.values())
    write_result("scaling", {
        "settings": vars(args), "candidates": args.population * args.generations,
        "executors": out, "goal": "actors: 2 workers >= 1.8x 1 worker for every algorithm, "
                                  "W actor processes started", "met": met})


if __name__ == "__main__":
    main()
