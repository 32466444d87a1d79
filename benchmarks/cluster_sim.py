"""The actor pool on a simulated cluster: packing, throughput, dispatch cost and faults.

`ray.cluster_utils.Cluster` starts NODES raylets on this machine, each advertising fake
GPUs; W stub evaluators (`benchmarks.stub_evaluator`: ~5 s set-up, ~2 s per candidate,
sleeping, no torch) at `num_gpus=1/per_gpu` run a real strategy through the search's
`run_actors`, with the search's ledger and background MLflow sender on a real
`mlflow server`. Only orchestration is measured:

- packing: actors per (node, fake GPU id), which must be `per_gpu` everywhere;
- throughput against the barrier-bound ideal: the same candidates (their measured
  times) list-scheduled on the same actors from the moment each became ready, with a
  barrier after every generation for the generational NSGA-II (goal >= 90% for steady);
- dispatch latency (driver round trip minus the candidate's own time), p50 and p99;
- driver CPU seconds per candidate;
- the same with the tracking server slowed by a proxy that delays every packet
  (goal: throughput unchanged);
- faults: an actor SIGKILLed mid-candidate and a node removed mid-candidate; every
  candidate index must be recorded exactly once, in the ledger and in MLflow, and no
  actor may outlive the search;
- the driver SIGKILLed mid-search, then `blendprune resume` (`benchmarks.sim_driver`: the
  CLI's own search and resume with the stub actors): the same checks, that the dead
  driver's actors go, and how long recovery takes.

    python -m benchmarks.cluster_sim
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks._common import REPO, write_result
from benchmarks.stub_evaluator import StubEvaluator

GENES = 12


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that holds every chunk `delay` seconds each way."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, w2), self._pipe(r2, writer))

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlflow_server(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1", "--backend-store-uri",
                             f"sqlite:///{folder / 'server.db'}", "--artifacts-destination",
                             str(folder / "artifacts")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):  # up, and answering API calls (the first is slow under load)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/"
                                   "search?max_results=1", timeout=30)
            return proc, port
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("mlflow server did not start")


def stub_processes() -> list[int]:
    """Pids of live stub evaluator actors on this machine (Ray titles them ray::Stub...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(
                    (b"ray::StubEvaluator", b"ray::CliStubEvaluator")):
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def list_schedule(ready: list[float], jobs: list[float]) -> float:
    """Makespan of `jobs` (in order) on machines free from `ready`, each to the first free."""
    free = sorted(ready)
    for seconds in jobs:
        free[0] += seconds
        free.sort()
    return max(free)


def ideal_makespan(ready: list[float], seconds: list[float], population: int | None) -> float:
    if population is None:
        return list_schedule(ready, seconds)
    t = ready
    for g in range(0, len(seconds), population):
        end = list_schedule(t, seconds[g:g + population])
        t = [max(r, end) for r in ready]
    return end


def run(args: argparse.Namespace, algorithm: str, tracking_uri: str, folder: Path,
        fault: str | None = None, cluster: Any = None) -> dict[str, Any]:
    from search.actor_pool import run_actors
    from search.config import SearchConfig
    from search.pareto import Objectives
    from search.rundir import RunDir
    from search.strategy import Problem, create_strategy
    from search.tracking import Tracker
    from search.tracking_queue import TrackingQueue

    population = args.workers * 2  # a generation: two candidates per worker
    generations = max(1, args.candidates_per_worker // 2)
    n = population * generations
    problem = Problem((0.1,) * GENES, (1.0,) * GENES, Objectives(("accuracy", "flops")),
                      population, generations, seed=0)
    strategy = create_strategy(algorithm, problem)
    run_dir = RunDir.create(folder / "runs", f"{algorithm}-{fault or 'none'}", {})
    tracker = Tracker(tracking_uri, "cluster-sim")
    tracker.start(f"{algorithm}-{fault or 'none'}", {}, "")
    sender = TrackingQueue(tracker, run_dir.append)
    records: list[dict[str, Any]] = []
    done_at: list[float] = []

    def on_complete(trial_id: str, genome: list[float], result: dict[str, Any] | None,
                    reason: str) -> None:
        result = result or {"accuracy": 0.0, "flops": 0, "params": 0, "flops_ratio": 1.0,
                            "params_ratio": 1.0, "plan": {}, "timings": {"total": 0.0},
                            "status": "failed", "reason": reason}
        record = {"index": len(records), "trial_id": trial_id, "genome": genome,
                  "generation": len(records) // population, "seed": None, "result": result,
                  "run_id": None}
        run_dir.append(record)
        records.append(record)
        sender.candidate(record)
        strategy.on_trial_complete(trial_id, result)
        done_at.append(time.perf_counter())

    cfg = SearchConfig(workers=args.workers, gpus_per_trial=1 / args.per_gpu,
                       max_restarts=2, population=4)
    resident = {"setup_seconds": args.setup_seconds,
                "candidate_seconds": args.candidate_seconds}
    injected = threading.Event()
    recovery: dict[str, float] = {}

    def inject() -> None:  # once a quarter of the candidates are done
        while len(records) < n // 4:
            time.sleep(0.05)
        recovery["at"] = time.perf_counter()
        if fault == "kill-actor":
            pid = records[-1]["result"]["worker"]["pid"]
            os.kill(pid, signal.SIGKILL)
        elif fault == "remove-node":
            cluster.remove_node(cluster.list_all_nodes()[-1], allow_graceful=False)
        injected.set()

    import ray

    total = ray.cluster_resources().get("GPU", 0.0)
    for _ in range(300):  # the last run's actors release their GPU shares asynchronously
        if ray.available_resources().get("GPU", 0.0) >= total - 1e-6:
            break
        time.sleep(0.1)
    if fault:
        threading.Thread(target=inject, daemon=True).start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    stats = run_actors(resident, strategy, on_complete, cfg, num_samples=n,
                       actor=StubEvaluator, log=lambda m: print(m, flush=True))
    t_end = time.perf_counter()
    cpu = time.process_time() - cpu0
    sender.drain()
    unsent = tracker.send_missing(records, run_dir.append)
    sender.close()
    tracker.finish()
    alive = stub_processes()
    for _ in range(100):  # ray.kill is asynchronous: give the actors time to go
        if not alive:
            break
        time.sleep(0.1)
        alive = stub_processes()
    ok = [r for r in records if r["result"]["status"] == "ok"]
    seconds = [r["result"]["timings"]["total"] for r in ok]
    ready = [t - t0 for t in stats.ready_at[:args.workers]]
    ideal = ideal_makespan(ready, seconds, population if algorithm == "deap-nsga2" else None)
    packing = Counter((r["result"]["worker"]["node"], tuple(r["result"]["worker"]["gpu_ids"]))
                      for r in {r["result"]["worker"]["pid"]: r for r in ok}.values())
    ledger = run_dir.records()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri.replace(f":{args.proxy_port}", f":{args.server_port}"))
    kids = client.search_runs([str(tracker.experiment_id)],
                              f"tags.`mlflow.parentRunId` = '{tracker.parent_id}'",
                              max_results=10000)
    indices = sorted(int(k.data.tags["blendprune.index"]) for k in kids)
    dispatch = sorted(stats.dispatch_seconds)
    slow = tracking_uri.endswith(f":{args.proxy_port}")
    out = {"algorithm": algorithm, "fault": fault, "slow_tracking": slow, "candidates": n,
           "finished": len(ok),
           "failed": len(records) - len(ok), "wall_seconds": t_end - t0,
           "ideal_seconds": ideal, "efficiency": ideal / (t_end - t0),
           "dispatch_ms_p50": 1000 * dispatch[len(dispatch) // 2],
           "dispatch_ms_p99": 1000 * dispatch[int(0.99 * (len(dispatch) - 1))],
           "driver_cpu_ms_per_candidate": 1000 * cpu / n,
           "actors_started": stats.actors_started, "restarts": stats.restarts,
           "replaced": stats.replaced, "requeued": stats.requeued,
           "actors_per_gpu": sorted(Counter(packing.values()).items()),
           "distinct_gpus": len(packing),
           "ledger_exactly_once": sorted(r["index"] for r in ledger) == list(range(n)),
           "mlflow_exactly_once": indices == list(range(n)), "unsent": unsent,
           "dropped_by_sender": sender.dropped, "actors_alive_after": len(alive)}
    if fault:
        later = [t for t in done_at if t > recovery["at"]]
        out["first_result_after_fault_s"] = later[0] - recovery["at"] if later else None
    return out


def _lines(path: Path | None) -> int:
    return len(path.read_text().splitlines()) if path and path.exists() else 0


def _until(check: Any, timeout: float) -> float | None:
    """Poll `check()` until true: seconds it took, None if it never was."""
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            return None
        time.sleep(0.05)
    return time.perf_counter() - t0


def driver_kill(args: argparse.Namespace, tracking_uri: str, folder: Path, address: str
                ) -> dict[str, Any]:
    """SIGKILL the CLI's driver once a quarter of the candidates are in, then resume it."""
    from mlflow.tracking import MlflowClient

    from search.rundir import RunDir

    out_dir, log = folder / "driver-kill", folder / "driver.log"
    n = 4 * args.workers  # population 2W, 2 generations
    ledger: list[Path] = []

    def driver(*argv: str) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "benchmarks.sim_driver", *argv],
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def need(seconds: float | None, what: str) -> float:
        if seconds is None:
            raise RuntimeError(f"cluster_sim: timed out waiting for {what}; driver log:\n"
                               + "\n".join(log.read_text().splitlines()[-30:]))
        return seconds

    def quarter_done() -> bool:
        ledger[:] = ledger or list(out_dir.glob("*/candidates.jsonl"))
        return bool(ledger) and _lines(ledger[0]) >= n // 4

    first = driver("search", address, tracking_uri, str(out_dir), str(args.workers),
                   str(1 / args.per_gpu))
    need(_until(quarter_done, 600), "a quarter of the candidates")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_at_kill = _lines(ledger[0])
    gone = need(_until(lambda: not stub_processes(), 120), "the dead driver's actors to go")
    t_resume = time.perf_counter()
    resume = driver("resume", address, tracking_uri, str(ledger[0].parent))
    first_new = need(_until(lambda: _lines(ledger[0]) > done_at_kill, 600),
                     "the resumed search's first result")
    rc = resume.wait(timeout=600)
    resume_seconds = time.perf_counter() - t_resume
    _until(lambda: not stub_processes(), 30)
    run = RunDir(ledger[0].parent)
    records = run.records()
    client = MlflowClient(tracking_uri)
    parent = run.state()["parent_run_id"]
    kids = client.search_runs([client.get_run(parent).info.experiment_id],
                              f"tags.`mlflow.parentRunId` = '{parent}'", max_results=10000)
    return {"algorithm": "deap-nsga2", "fault": "kill-driver", "slow_tracking": False,
            "candidates": n, "recorded_before_kill": done_at_kill, "resume_exit_status": rc,
            "finished": sum(r["result"]["status"] == "ok" for r in records),
            "ledger_exactly_once": sorted(r["index"] for r in records) == list(range(n)),
            "mlflow_exactly_once": sorted(int(k.data.tags["blendprune.index"])
                                          for k in kids) == list(range(n)),
            "actors_gone_after_kill_s": gone, "first_result_after_resume_s": first_new,
            "resume_seconds": resume_seconds, "actors_alive_after": len(stub_processes())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--gpus-per-node", type=int, default=4)
    p.add_argument("--per-gpu", type=int, default=4, help="actors per fake GPU")
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--candidates-per-worker", type=int, default=4)
    p.add_argument("--setup-seconds", type=float, default=5.0)
    p.add_argument("--candidate-seconds", type=float, default=2.0)
    p.add_argument("--delay", type=float, default=0.05, help="slow tracking: s per packet")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    os.environ["PYTHONPATH"] = str(REPO)  # workers import the stub evaluator
    import ray
    from ray.cluster_utils import Cluster

    from search.ray_session import loopback_only

    loopback_only()  # every simulated node on 127.0.0.1

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server, args.server_port = mlflow_server(folder)
        proxy = DelayProxy(args.server_port, args.delay)
        args.proxy_port = proxy.port
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
        cpus = args.gpus_per_node * args.per_gpu
        for _ in range(args.nodes):
            cluster.add_node(num_cpus=cpus, num_gpus=args.gpus_per_node,
                             node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        try:
            fast = f"http://127.0.0.1:{args.server_port}"
            slow = f"http://127.0.0.1:{args.proxy_port}"
            for i in range(args.repeats):
                for algorithm in ("deap-steady", "deap-nsga2"):
                    for uri in (fast, slow) if i % 2 == 0 else (slow, fast):
                        r = run(args, algorithm, uri, folder)
                        results.append(r)
                        print({k: r[k] for k in ("algorithm", "slow_tracking", "efficiency",
                                                 "dispatch_ms_p50", "wall_seconds")},
                              flush=True)
            r = driver_kill(args, fast, folder, cluster.address)
            results.append(r)
            print(r, flush=True)
            for fault in ("kill-actor", "remove-node"):  # the last one removes a node
                r = run(args, "deap-steady", fast, folder, fault, cluster)
                results.append(r)
                print(r, flush=True)
        finally:
            ray.shutdown()
            cluster.shutdown()
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()

    def median(algorithm: str, slow: bool, key: str) -> float:
        return statistics.median(r[key] for r in results if r["algorithm"] == algorithm
                                 and r["slow_tracking"] == slow and not r["fault"])

    summary = {f"{a}{'-slow-tracking' if s else ''}": {
        k: median(a, s, k) for k in ("efficiency", "dispatch_ms_p50", "dispatch_ms_p99",
                                     "driver_cpu_ms_per_candidate", "wall_seconds")}
        for a in ("deap-steady", "deap-nsga2") for s in (False, True)}
    faults = [r for r in results if r["fault"]]
    met = (summary["deap-steady"]["efficiency"] >= 0.9
           and summary["deap-steady-slow-tracking"]["efficiency"] >= 0.9
           and all(r["ledger_exactly_once"] and r["mlflow_exactly_once"]
                   and r["actors_alive_after"] == 0 and r["finished"] == r["candidates"]
                   for r in results)
           and all(r["actors_per_gpu"] == [(args.per_gpu, r["distinct_gpus"])]
                   for r in results if not r["fault"]))
    write_result("cluster_sim", {
        "settings": {k: v for k, v in vars(args).items() if not k.endswith("_port")},
        "summary": summary, "faults": faults, "runs": results,
        "goal": "steady efficiency >= 0.9 with and without slow tracking; every candidate "
                "exactly once; per_gpu actors on every fake GPU", "met": met})


if __name__ == "__main__":
    main()
