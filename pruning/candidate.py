"""One candidate, end to end: genome -> plan -> pruned copy -> adaptive BN -> fine-tune -> score.

`Evaluator` is built once per worker: it keeps the base model, the group map, the blender
and the data on its device, so evaluating a candidate costs only the work that differs
between candidates. Every candidate sees the same adaptive-BN batches, the same fine-tune
batches in the same order and the same holdout images (common random numbers).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .cost import CostModel, measure_latency
from .genome import Decoder, GenomeLayout
from .loader import Split, TensorSplit
from .plan import Plan
from .scores import ScoreTable
from .surgery import GroupMap, apply_plan
from .train import Distill, DivergedError, adaptive_bn, evaluate, finetune, memory_format

__all__ = ["CandidateResult", "EvalSettings", "Evaluator", "Fidelity"]


@dataclass(frozen=True)
class EvalSettings:
    bn_batches: int = 20
    finetune_steps: int = 50
    lr: float = 0.01
    batch_size: int = 128
    keep: str = "select"
    fuse_temperature: float = 5.0
    seed: int = 0
    latency: bool = False
    channels_last: bool = True
    distill: float = 0.0  # weight of distillation from the base model in the fine-tune


@dataclass(frozen=True)
class Fidelity:
    """How much one evaluation spends: the settings' brief fine-tune (None), adaptive BN
    alone (`finetune_steps=0`) or N steps; `seed` draws another fine-tune batch order
    (for repeated or longer rungs of successive halving)."""

    finetune_steps: int | None = None
    seed: int | None = None


@dataclass
class CandidateResult:
    """What one evaluation produced; `status` is "ok" or "failed" (with `reason`)."""

    accuracy: float
    flops: int
    params: int
    flops_ratio: float
    params_ratio: float
    plan: dict[str, list[int]]
    timings: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""
    latency: float | None = None
    bn_accuracy: float | None = None
    started_at: float | None = None  # wall clock (epoch seconds) when evaluation began

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = time.perf_counter() - start


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, Python's MemoryError, or the CPU allocator refusing a tensor."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def _split(s: Split | tuple[torch.Tensor, torch.Tensor]) -> Split:
    return TensorSplit(*s) if isinstance(s, tuple) else s


class Evaluator:
    """Evaluates genomes against one resident base model.

    Args:
        base: the trained base model, already on its device.
        group_map: `GroupMap(base, example_input)`.
        table: the base model's ScoreTable.
        layout: how genomes decode.
        train: the training split (minus the holdout), on the model's device; an (x, y)
            pair of uint8 images and labels is taken as a TensorSplit.
        holdout: the holdout split, used for the fitness.
        mean, std: per-channel normalisation.
        pad, flip: augmentation for fine-tune batches.
    """

    def __init__(self, base: nn.Module, group_map: GroupMap, table: ScoreTable,
                 layout: GenomeLayout, train: Split | tuple[torch.Tensor, torch.Tensor],
                 holdout: Split | tuple[torch.Tensor, torch.Tensor], *, mean: torch.Tensor,
                 std: torch.Tensor, pad: int = 0, flip: bool = False,
                 settings: EvalSettings = EvalSettings(), cluster_threshold: float = 0.1
                 ) -> None:
        if settings.bn_batches < 0 or settings.finetune_steps < 0:
            raise ValueError("evaluation: bn_batches and finetune_steps must be >= 0")
        if settings.keep not in ("select", "fuse"):
            raise ValueError(f"genome.keep: must be 'select' or 'fuse', got {settings.keep!r}")
        self.base = base.eval()
        self.group_map, self.table, self.layout, self.settings = group_map, table, layout, settings
        train, holdout = _split(train), _split(holdout)
        device = next(base.parameters()).device
        self.example_input = train.example().to(device)
        self.cost = CostModel(base, group_map, self.example_input)
        self.decoder = Decoder(table, layout, self.cost, cluster_threshold)
        self.blender = self.decoder.blender
        common: dict[str, Any] = {"mean": mean, "std": std, "batch_size": settings.batch_size,
                                  "channels_last": settings.channels_last}
        self.bn_loader = train.loader(**common, seed=settings.seed + 1)
        self._ft = {**common, "augment": True, "pad": pad, "flip": flip}
        self.train = train
        self.ft_loader = train.loader(**self._ft, seed=settings.seed + 2)
        self.holdout_loader = holdout.loader(mean=mean, std=std, batch_size=512,
                                             shuffle=False, drop_last=False,
                                             channels_last=settings.channels_last)

    def decode(self, genome: Sequence[float]) -> Plan:
        return self.decoder.decode(genome)

    def flops_ratio(self, genome: Sequence[float]) -> float:
        return self.decoder.flops_ratio(genome)

    def evaluate(self, genome_or_plan: Sequence[float] | Plan,
                 fidelity: Fidelity = Fidelity()) -> CandidateResult:
        """Score one genome (or plan) at `fidelity`. A diverging fine-tune, an impossible
        plan or running out of memory is a failed result with its reason, so the search
        goes on."""
        s = self.settings
        steps = s.finetune_steps if fidelity.finetune_steps is None else fidelity.finetune_steps
        ft_loader = self.ft_loader if fidelity.seed is None else \
            self.train.loader(**self._ft, seed=fidelity.seed + 2)
        t: dict[str, float] = {}
        start = time.perf_counter()
        with _timed(t, "decode"):
            plan = genome_or_plan if isinstance(genome_or_plan, Plan) \
                else self.decode(genome_or_plan)
        flops, params = self.cost.predict(plan)
        result = CandidateResult(0.0, flops, params, flops / self.cost.base_flops,
                                 params / self.cost.base_params, plan.to_dict(), t,
                                 started_at=time.time())
        try:
            with _timed(t, "surgery"):
                model = apply_plan(self.base, self.group_map, plan, keep=s.keep,
                                   fuse_temperature=s.fuse_temperature)
                model.to(memory_format=memory_format(s.channels_last))
            with _timed(t, "adaptive_bn"):
                adaptive_bn(model, self.bn_loader.batches(s.bn_batches))
            if steps:
                with _timed(t, "bn_evaluate"):
                    result.bn_accuracy = evaluate(model, self.holdout_loader)["accuracy"]
                with _timed(t, "finetune"):
                    finetune(model, ft_loader.batches(steps), steps, lr=s.lr,
                             channels_last=s.channels_last,
                             distill=Distill(self.base, s.distill) if s.distill else None)
            with _timed(t, "evaluate"):
                result.accuracy = evaluate(model, self.holdout_loader)["accuracy"]
            if s.latency:
                with _timed(t, "latency"):
                    result.latency = measure_latency(model, self.example_input)
        except (DivergedError, ValueError, MemoryError, RuntimeError) as exc:
            oom = _out_of_memory(exc)
            if not (oom or isinstance(exc, (DivergedError, ValueError))):
                raise  # any other RuntimeError is a bug, not a bad candidate
            if oom and torch.cuda.is_available():
                torch.cuda.empty_cache()
            name = "OutOfMemoryError" if oom else type(exc).__name__
            result.status, result.reason = "failed", f"{name}: {str(exc).splitlines()[0][:300]}"
            result.accuracy = 0.0
        t["total"] = time.perf_counter() - start  # wall time: every pass, timed or not
        return result

    def prune(self, genome_or_plan: Sequence[float] | Plan) -> nn.Module:
        """The pruned (not yet fine-tuned) model of a genome or plan."""
        plan = genome_or_plan if isinstance(genome_or_plan, Plan) else self.decode(genome_or_plan)
        return apply_plan(self.base, self.group_map, plan, keep=self.settings.keep,
                          fuse_temperature=self.settings.fuse_temperature)

