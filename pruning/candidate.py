"""One candidate, end to end: genome -> plan -> pruned copy -> adaptive BN -> fine-tune -> score.

`Evaluator` is built once per worker: it keeps the base model, the group map, the blender
and the data on its device, so evaluating a candidate costs only the work that differs
between candidates. Every candidate sees the same adaptive-BN batches, the same fine-tune
batches in the same order and the same holdout images (common random numbers).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .blending import Blender
from .cost import CostModel, measure_latency
from .data import TensorLoader
from .plan import ENCODINGS, Plan, decode_plan, ratio_slots
from .scores import ScoreTable
from .surgery import GroupMap, apply_plan
from .train import DivergedError, adaptive_bn, evaluate, finetune, memory_format

__all__ = ["CandidateResult", "Decoder", "EvalSettings", "Evaluator", "GenomeLayout"]


@dataclass(frozen=True)
class GenomeLayout:
    """Where each gene sits: `[alpha_1..alpha_K, r_1..r_S]` (design §2.4)."""

    criteria: tuple[str, ...]
    slots: tuple[str, ...]
    slot_of: tuple[int, ...]
    encoding: str = "ratio"
    max_ratio: float = 0.8
    min_channels: int = 4
    round_to: int = 1

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"genome.encoding: must be one of {ENCODINGS}, "
                             f"got {self.encoding!r}")
        if not 0.0 <= self.max_ratio < 1.0:
            raise ValueError(f"genome.max_ratio: must be in [0, 1), got {self.max_ratio}")
        if self.min_channels < 1:
            raise ValueError(f"genome.min_channels: must be >= 1, got {self.min_channels}")
        if self.round_to < 1:
            raise ValueError(f"genome.round_to: must be >= 1, got {self.round_to}")

    @classmethod
    def build(cls, table: ScoreTable, group_map: GroupMap, *, granularity: str = "group",
              **options: Any) -> GenomeLayout:
        slots, slot_of = ratio_slots([group_map[g] for g in table.groups], granularity)
        return cls(tuple(table.criteria), tuple(slots), tuple(slot_of), **options)

    def __len__(self) -> int:
        return len(self.criteria) + len(self.slots)

    def bounds(self) -> tuple[list[float], list[float]]:
        """Lower and upper bound of every gene."""
        n_a, n_s = len(self.criteria), len(self.slots)
        return [0.0] * (n_a + n_s), [1.0] * n_a + [self.max_ratio] * n_s

    def split(self, genome: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        g = np.asarray(genome, dtype=np.float64)
        if g.shape != (len(self),):
            raise ValueError(f"genome: expected {len(self)} genes, got {g.shape}")
        if not np.all(np.isfinite(g)):
            raise ValueError("genome: genes must be finite")
        alpha = np.clip(g[: len(self.criteria)], 0.0, 1.0)
        values = np.clip(g[len(self.criteria):], 0.0, self.max_ratio)
        return alpha, values

    def make(self, alpha: Sequence[float], values: float | Sequence[float]) -> list[float]:
        """A genome from alphas and one value per slot (a scalar means uniform)."""
        if isinstance(values, (int, float, np.floating)):
            return [float(a) for a in alpha] + [float(values)] * len(self.slots)
        vals = [float(v) for v in values]
        return [float(a) for a in alpha] + vals


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


@dataclass
class CandidateResult:
    """What one evaluation produced; `status` is "ok" or "failed" (with `reason`)."""

    accuracy: float
    macs: int
    params: int
    flops_ratio: float
    params_ratio: float
    plan: dict[str, list[int]]
    timings: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""
    latency: float | None = None
    bn_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Decoder:
    """Genome -> plan, and the plan's predicted cost, without touching any weights.

    Cheap enough for the search driver: seeding, constraint checks and reports use it.
    """

    def __init__(self, table: ScoreTable, layout: GenomeLayout, cost: CostModel,
                 cluster_threshold: float = 0.1) -> None:
        self.table, self.layout, self.cost = table, layout, cost
        self.blender = Blender(table, cluster_threshold)

    def decode(self, genome: Sequence[float]) -> Plan:
        alpha, values = self.layout.split(genome)
        blended = self.blender.blend(alpha)
        return decode_plan(blended, values, self.layout.slot_of,
                           encoding=self.layout.encoding, min_channels=self.layout.min_channels,
                           round_to=self.layout.round_to)

    def flops_ratio(self, genome: Sequence[float]) -> float:
        """Predicted MACs of the genome's plan over the base model's."""
        return self.cost.predict(self.decode(genome))[0] / self.cost.base_macs

    def min_flops_ratio(self) -> float:
        """The smallest FLOPs ratio any genome reaches (every slot at its upper bound)."""
        lo, hi = self.layout.bounds()
        n_a = len(self.layout.criteria)
        if self.layout.encoding == "threshold":
            hi = hi[:n_a] + [min(0.999, v) for v in hi[n_a:]]
        return self.flops_ratio([1.0] * n_a + hi[n_a:])

    def spread_seeds(self, budget: float, count: int, criteria: Sequence[int] | None = None
                     ) -> list[tuple[str, list[float]]]:
        """`count` single-criterion genomes at uniform ratios spread over the FLOPs range.

        Seed i uses criterion i (cycling) at a FLOPs target stepping down from `budget` to
        40% of it, so generation 0 already spans the front rather than one point of it.
        Names read `criterion@target`.
        """
        names = self.layout.criteria
        picks = list(range(len(names))) if criteria is None else list(criteria)
        floor = max(0.4 * budget, self.min_flops_ratio() + 0.02)
        targets = np.linspace(budget, min(floor, budget), count) if count > 1 else [budget]
        seeds = []
        for i, target in enumerate(targets):
            k = picks[i % len(picks)]
            alpha = np.eye(len(names))[k]
            genome = self.layout.make(alpha, self.uniform_value_for(alpha, float(target)))
            seeds.append((f"{names[k]}@{target:.2f}", genome))
        return seeds

    def uniform_value_for(self, alpha: Sequence[float], target: float, *, tol: float = 1e-3
                          ) -> float:
        """The smallest uniform ratio (or threshold) whose plan meets `target` FLOPs ratio.

        Bisection: the FLOPs of a uniform plan fall monotonically as the value grows.
        """
        upper = self.layout.max_ratio
        if self.flops_ratio(self.layout.make(alpha, 0.0)) <= target:
            return 0.0
        lo, hi = 0.0, upper
        while hi - lo > tol:
            mid = (lo + hi) / 2
            if self.flops_ratio(self.layout.make(alpha, mid)) <= target:
                hi = mid
            else:
                lo = mid
        return hi


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, Python's MemoryError, or the CPU allocator refusing a tensor."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


class Evaluator:
    """Evaluates genomes against one resident base model.

    Args:
        base: the trained base model, already on its device.
        group_map: `GroupMap(base, example_input)`.
        table: the base model's ScoreTable.
        layout: how genomes decode.
        train: (x, y) uint8 images and labels of the training split (minus the holdout).
        holdout: (x, y) of the holdout split, used for the fitness.
        mean, std: per-channel normalisation.
        pad, flip: augmentation for fine-tune batches.
    """

    def __init__(self, base: nn.Module, group_map: GroupMap, table: ScoreTable,
                 layout: GenomeLayout, train: tuple[torch.Tensor, torch.Tensor],
                 holdout: tuple[torch.Tensor, torch.Tensor], *, mean: torch.Tensor,
                 std: torch.Tensor, pad: int = 0, flip: bool = False,
                 settings: EvalSettings = EvalSettings(), cluster_threshold: float = 0.1
                 ) -> None:
        if settings.bn_batches < 0 or settings.finetune_steps < 0:
            raise ValueError("evaluation: bn_batches and finetune_steps must be >= 0")
        if settings.keep not in ("select", "fuse"):
            raise ValueError(f"genome.keep: must be 'select' or 'fuse', got {settings.keep!r}")
        self.base = base.eval()
        self.group_map, self.table, self.layout, self.settings = group_map, table, layout, settings
        device = next(base.parameters()).device
        self.example_input = train[0][:1].float().to(device)
        self.cost = CostModel(base, group_map, self.example_input)
        self.decoder = Decoder(table, layout, self.cost, cluster_threshold)
        self.blender = self.decoder.blender
        common: dict[str, Any] = {"mean": mean, "std": std, "batch_size": settings.batch_size,
                  "channels_last": settings.channels_last}
        self.bn_loader = TensorLoader(*train, **common, seed=settings.seed + 1)
        self.ft_loader = TensorLoader(*train, **common, augment=True, pad=pad, flip=flip,
                                      seed=settings.seed + 2)
        self.holdout_loader = TensorLoader(*holdout, mean=mean, std=std, batch_size=512,
                                           shuffle=False, drop_last=False,
                                           channels_last=settings.channels_last)

    def decode(self, genome: Sequence[float]) -> Plan:
        return self.decoder.decode(genome)

    def flops_ratio(self, genome: Sequence[float]) -> float:
        return self.decoder.flops_ratio(genome)

    def evaluate(self, genome_or_plan: Sequence[float] | Plan) -> CandidateResult:
        """Score one genome (or plan). A diverging fine-tune, an impossible plan or running
        out of memory is a failed result with its reason, so the search goes on."""
        s = self.settings
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        plan = genome_or_plan if isinstance(genome_or_plan, Plan) else self.decode(genome_or_plan)
        t["decode"] = time.perf_counter() - t0
        macs, params = self.cost.predict(plan)
        result = CandidateResult(0.0, macs, params, macs / self.cost.base_macs,
                                 params / self.cost.base_params, plan.to_dict(), t)
        try:
            t0 = time.perf_counter()
            model = apply_plan(self.base, self.group_map, plan, keep=s.keep,
                               fuse_temperature=s.fuse_temperature)
            model.to(memory_format=memory_format(s.channels_last))
            t["surgery"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            adaptive_bn(model, self.bn_loader.batches(s.bn_batches))
            t["adaptive_bn"] = time.perf_counter() - t0
            if s.finetune_steps:
                result.bn_accuracy = evaluate(model, self.holdout_loader)["accuracy"]
                t0 = time.perf_counter()
                finetune(model, self.ft_loader.batches(s.finetune_steps), s.finetune_steps,
                         lr=s.lr, channels_last=s.channels_last)
                t["finetune"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            result.accuracy = evaluate(model, self.holdout_loader)["accuracy"]
            t["evaluate"] = time.perf_counter() - t0
            if s.latency:
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
        t["total"] = sum(t.values())
        return result

    def prune(self, genome_or_plan: Sequence[float] | Plan) -> nn.Module:
        """The pruned (not yet fine-tuned) model of a genome or plan."""
        plan = genome_or_plan if isinstance(genome_or_plan, Plan) else self.decode(genome_or_plan)
        return apply_plan(self.base, self.group_map, plan, keep=self.settings.keep,
                          fuse_temperature=self.settings.fuse_temperature)

