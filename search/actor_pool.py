"""Candidates on a driver-owned pool of resident evaluator actors (Ray core).

Each of the W actors builds its `Evaluator` once, from the `Resident` state in the object
store (base model, ScoreTable, train and holdout data, evaluation settings), and keeps
it on its device for the whole search. The driver hands every idle actor the strategy's
next genome and collects results with `ray.wait`; when the strategy has nothing to hand
out (a generation barrier) actors stay idle, their model still resident.

An actor that dies mid-candidate (a native crash, a CUDA error, a lost node) is restarted
by Ray (at most `max_restarts` times; the restarted actor rebuilds its state) or replaced,
and its genome is requeued: two attempts, then the candidate is recorded failed with the
reason. Every candidate is reported exactly once, keyed by its trial id.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from pruning import Fidelity

from .config import SearchConfig
from .resident import Resident
from .strategy import Strategy
from .worker_death import death_reason, describe_crash, worker_log

__all__ = ["ATTEMPTS", "ActorPool", "EvaluatorActor", "PoolStats", "Request", "run_actors"]

ATTEMPTS = 2  # tries of one genome on a dying actor before it is recorded failed
NOTE_SECONDS = 60.0  # how often to say that no worker is up yet
STALL_SECONDS = 900.0  # then give up: the cluster cannot place a single worker

OnComplete = Callable[[str, list[float], dict[str, Any] | None, str], None]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Request:
    """One candidate to evaluate: its trial id, genome, fidelity and attempt number;
    `cheap`: a cheap rung of successive halving, not counted against the budget."""

    trial_id: str
    genome: list[float]
    fidelity: Fidelity = Fidelity()
    attempt: int = 1
    cheap: bool = False


@dataclass(frozen=True)
class Finished:
    """A request that came back: its result, or None and why (`retry`: its actor died)."""

    request: Request
    result: dict[str, Any] | None
    reason: str = ""
    retry: bool = False


class EvaluatorActor:
    """Holds one resident Evaluator; `evaluate` runs one request on it."""

    def __init__(self, resident: list[ray.ObjectRef], threads: int = 1,
                 gpu_share: float = 0.0) -> None:
        """`resident` is a one-element list holding the Resident's ObjectRef: fetched here,
        not resolved by Ray, so a restarted actor fetches it again from the driver's copy
        (Ray cannot restart an actor whose creation arguments were resolved from the object
        store once they are gone: ray-project/ray#53727)."""
        start = time.perf_counter()
        torch.set_num_threads(threads)
        gpus = ray.get_gpu_ids()
        self.device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and 0 < gpu_share < 1:
            # A candidate that overruns its share fails alone (OOM), not its neighbours.
            torch.cuda.set_per_process_memory_fraction(gpu_share)
        self.evaluator = ray.get(resident[0]).evaluator(self.device)
        self.info = {"pid": os.getpid(), "device": self.device, "gpu_ids": list(gpus),
                     "node": ray.get_runtime_context().get_node_id(),
                     "setup_seconds": time.perf_counter() - start}

    def ready(self) -> dict[str, Any]:
        return self.info

    def evaluate(self, genome: list[float], finetune_steps: int | None = None,
                 seed: int | None = None) -> dict[str, Any]:
        """One candidate at a fidelity (plain values: a worker unpickles no search types)."""
        try:
            result = self.evaluator.evaluate(genome, Fidelity(finetune_steps, seed))
        except RuntimeError as exc:
            if self.device == "cuda" and "CUDA" in str(exc):
                # The CUDA context is now unusable: die, so Ray restarts a clean actor.
                print(f"CUDA error, restarting the actor: {exc}", flush=True)
                os._exit(1)
            raise
        return result.to_dict()


@dataclass
class PoolStats:
    """What the pool did: actors started (restarts counted apart), candidates, requeues."""

    actors_started: int = 0
    restarts: int = 0
    replaced: int = 0
    requeued: int = 0
    completed: int = 0
    cheap: int = 0  # cheap-rung evaluations (successive halving)
    setup_seconds: list[float] = field(default_factory=list)
    ready_at: list[float] = field(default_factory=list)  # perf_counter() of each actor ready
    dispatch_seconds: list[float] = field(default_factory=list)


class _Pool:
    """W actors, each idle, busy with one request, or being probed after a death."""

    def __init__(self, actor: type, resident_ref: ray.ObjectRef, cfg: SearchConfig,
                 log: Log) -> None:
        self.cfg, self.log, self.resident_ref = cfg, log, resident_ref
        self.actor_class: Any = ray.remote(actor)
        self.options = {"num_cpus": 1, "num_gpus": cfg.gpus_per_trial,
                        "max_restarts": cfg.max_restarts, "max_task_retries": 0}
        # Fractional GPUs: one placement group per whole GPU, `per_gpu` actors in each, so
        # Ray cannot split a GPU's actors over two half-used GPUs.
        share = cfg.gpus_per_trial
        self.per_gpu = math.floor(1 / share + 1e-9) if 0 < share < 1 else 0
        self.groups = [placement_group([{"GPU": 1, "CPU": min(self.per_gpu, cfg.workers - first)}])
                       for first in range(0, cfg.workers, self.per_gpu)] if self.per_gpu else []
        self.started = time.monotonic()
        self.slot: dict[Any, int] = {}  # actor -> its worker slot (and so its GPU's group)
        self.stats = PoolStats()
        self.idle: list[Any] = []
        self.busy: dict[ray.ObjectRef, tuple[Any, Request, float]] = {}
        self.probes: dict[ray.ObjectRef, Any] = {}
        self.replacements = cfg.workers * (cfg.max_restarts + 1)
        self.died: set[Any] = set()  # actors probed after a death: restarted if they answer
        self.restarting: list[tuple[float, Any]] = []  # (when to probe again, actor)
        self.pids: dict[Any, int] = {}
        self.last_progress, self.notes = time.monotonic(), 0
        for slot in range(cfg.workers):
            self._start(slot)

    def _start(self, slot: int) -> None:
        where = {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            self.groups[slot // self.per_gpu], placement_group_bundle_index=0)
        } if self.groups else {}
        actor: Any = self.actor_class.options(**self.options, **where).remote(
            [self.resident_ref], 1, self.cfg.gpus_per_trial)
        self.slot[actor] = slot
        self.stats.actors_started += 1
        self.probes[actor.ready.remote()] = actor

    @property
    def waiting(self) -> bool:
        """Whether anything is running, starting or restarting."""
        return bool(self.busy or self.probes or self.restarting)

    def _reason(self, actor: Any, exc: Exception) -> str:
        """The fatal signal in the dead worker's log, else what Ray said."""
        pid = self.pids.get(actor)
        crash = describe_crash(worker_log(pid)) if pid else None
        if crash:
            return crash
        return death_reason(str(exc)) if "died" in str(exc) else \
            "worker died (no fatal signal in its log: it exited, or SIGKILL or the OOM killer?)"

    def submit(self, request: Request) -> None:
        actor = self.idle.pop()
        f = request.fidelity
        ref = actor.evaluate.remote(request.genome, f.finetune_steps, f.seed)
        self.busy[ref] = (actor, request, time.perf_counter())

    def wait(self) -> list[Finished]:
        """Block until something finishes; returns the requests that did."""
        now = time.monotonic()
        for when, actor in [r for r in self.restarting if r[0] <= now]:
            self.restarting.remove((when, actor))
            self.probes[actor.ready.remote()] = actor
        refs = [*self.busy, *self.probes]
        timeout = min((w for w, _ in self.restarting), default=now + NOTE_SECONDS) - now
        ready: list[ray.ObjectRef] = []
        if not refs:
            time.sleep(max(0.0, timeout))
        else:
            ready, _ = ray.wait(refs, num_returns=1, timeout=max(0.0, timeout))
        if self.groups and self.probes and self.notes == 0 and \
                time.monotonic() - self.started > NOTE_SECONDS:
            self.notes += 1  # some workers run; say why the others do not
            self.log(f"  {len(self.probes)} workers still wait for a whole free GPU each "
                     f"{self.per_gpu} of them share (a placement group); partly used GPUs "
                     "are not shared with other jobs")
        if ready or self.busy:
            self.last_progress = time.monotonic()
        elif not self.idle:  # every worker is (re)starting: resources may never come
            stalled = time.monotonic() - self.last_progress
            if stalled > STALL_SECONDS:
                need = (f"a whole free GPU and {self.per_gpu} CPUs per {self.per_gpu} "
                        "workers" if self.groups else
                        f"{self.cfg.gpus_per_trial} GPU and 1 CPU free per worker")
                raise RuntimeError(
                    f"search.workers: no evaluator actor could start for {stalled:.0f} s; "
                    f"does the cluster have {need}?")
            if stalled > NOTE_SECONDS * (1 + self.notes):
                self.notes += 1
                self.log(f"  waiting for {len(self.probes) + len(self.restarting)} workers to "
                         f"start ({stalled:.0f} s; cluster resources?)")
        done: list[Finished] = []
        for ref in ready:
            if ref in self.probes:
                self._probed(ref)
                continue
            actor, request, sent = self.busy.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError as exc:  # died mid-candidate: probe it, requeue the genome
                self.probes[actor.ready.remote()] = actor
                self.died.add(actor)
                done.append(Finished(request, None, self._reason(actor, exc), retry=True))
                continue
            except RayTaskError as exc:  # a bug in evaluation, not a bad candidate
                self.idle.append(actor)
                done.append(Finished(request, None, death_reason(str(exc)), retry=False))
                continue
            self.stats.dispatch_seconds.append(
                time.perf_counter() - sent - result["timings"]["total"])
            self.idle.append(actor)
            done.append(Finished(request, result))
        return done

    def _probed(self, ref: ray.ObjectRef) -> None:
        actor = self.probes.pop(ref)
        try:
            info = ray.get(ref)
        except ActorUnavailableError:  # restarting: ask again shortly
            self.restarting.append((time.monotonic() + 0.5, actor))
            return
        except RayActorError as exc:  # dead for good: replace it while the budget lasts
            self.died.discard(actor)
            ray.kill(actor, no_restart=True)
            if self.replacements == 0:
                raise RuntimeError(f"search.workers: evaluator actors keep dying, the last "
                                   f"with {death_reason(str(exc))}") from None
            self.replacements -= 1
            self.stats.replaced += 1
            self.log(f"  worker lost ({death_reason(str(exc))}); starting a replacement")
            self._start(self.slot[actor])
            return
        self.pids[actor] = info["pid"]
        if actor in self.died:
            self.died.discard(actor)
            self.stats.restarts += 1
            self.log(f"  worker restarted (pid {info['pid']}, {info['device']}, "
                     f"{info['setup_seconds']:.1f} s to rebuild)")
        self.stats.setup_seconds.append(info["setup_seconds"])
        self.stats.ready_at.append(time.perf_counter())
        self.idle.append(actor)

    def shutdown(self) -> None:
        for actor in {*self.idle, *(a for a, _, _ in self.busy.values()), *self.probes.values(),
                      *(a for _, a in self.restarting)}:
            ray.kill(actor, no_restart=True)
        for group in self.groups:
            remove_placement_group(group)


class ActorPool:
    """W resident evaluator actors that serve one or more runs of candidates (a screen,
    then the search), built once from one copy of the resident state; a context manager
    that kills the actors and frees their GPU groups on exit."""

    def __init__(self, resident: Resident | Any, cfg: SearchConfig, *, log: Log = print,
                 actor: type = EvaluatorActor) -> None:
        self.cfg, self.log = cfg, log
        self._pool = _Pool(actor, ray.put(resident), cfg, log)

    @property
    def stats(self) -> PoolStats:
        return self._pool.stats

    def __enter__(self) -> ActorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        self._pool.shutdown()

    def run(self, strategy: Strategy, on_complete: OnComplete, *, num_samples: int,
            fidelity: Fidelity = Fidelity()) -> PoolStats:
        """Evaluate `num_samples` candidates the strategy proposes.

        `on_complete(trial_id, genome, result, reason)` gets every candidate once, in the
        order they finish; a candidate whose actor died `ATTEMPTS` times gets None and
        why. Cheap rungs (`strategy.is_cheap`) run at `halving_steps` and are not counted.
        """
        pool, cfg, log = self._pool, self.cfg, self.log
        retry: deque[Request] = deque()
        reported: set[str] = set()
        counted = 0  # reported full evaluations
        cheap = Fidelity(finetune_steps=cfg.halving_steps)

        def running() -> int:
            return sum(not r.cheap for _, r, _ in pool.busy.values())

        while counted < num_samples:
            while pool.idle and counted + running() < num_samples:
                if retry:
                    request = retry.popleft()
                else:
                    trial_id = uuid.uuid4().hex[:10]
                    genome = strategy.suggest(trial_id)
                    if genome is None:
                        break
                    request = Request(trial_id, list(genome), fidelity) \
                        if not strategy.is_cheap(trial_id) else \
                        Request(trial_id, list(genome), cheap, cheap=True)
                pool.submit(request)
            if not pool.busy:
                if strategy.finished and not strategy.pending and not retry:
                    break  # actors still (re)starting are not waited for
                if pool.idle or not pool.waiting:
                    raise RuntimeError("the search strategy proposed nothing while no "
                                       "candidate was running")
            for f in pool.wait():
                request = f.request
                if request.trial_id in reported:
                    continue
                if f.retry and request.attempt < ATTEMPTS:
                    pool.stats.requeued += 1
                    log(f"  requeued a candidate after its worker died ({f.reason})")
                    retry.append(Request(request.trial_id, request.genome, request.fidelity,
                                         request.attempt + 1, request.cheap))
                    continue
                reported.add(request.trial_id)
                counted += not request.cheap
                pool.stats.completed += not request.cheap
                pool.stats.cheap += request.cheap
                on_complete(request.trial_id, request.genome, f.result, f.reason)
        return pool.stats


def run_actors(resident: Resident | Any, strategy: Strategy, on_complete: OnComplete,
               cfg: SearchConfig, *, num_samples: int, fidelity: Fidelity = Fidelity(),
               log: Log = print, actor: type = EvaluatorActor) -> PoolStats:
    """One run on a pool of its own (see `ActorPool.run`). `actor` is the class each
    worker runs: `EvaluatorActor`'s constructor and methods (`ready`, `evaluate`), over
    whatever `resident` is; it is sent only plain values."""
    with ActorPool(resident, cfg, log=log, actor=actor) as pool:
        return pool.run(strategy, on_complete, num_samples=num_samples, fidelity=fidelity)
