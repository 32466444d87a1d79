"""Plans (kept channel indices per group) and decoding a genome's ratios into one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from .surgery import ChannelGroup

__all__ = ["ENCODINGS", "GRANULARITIES", "Plan", "decode_plan", "keep_count", "ratio_slots"]

GRANULARITIES = ("group", "stage", "stage_role")
ENCODINGS = ("ratio", "threshold")


@dataclass(frozen=True)
class Plan:
    """Kept channel indices (sorted, original coordinates) per group name."""

    kept: Mapping[str, np.ndarray]

    def counts(self) -> dict[str, int]:
        return {name: len(idxs) for name, idxs in self.kept.items()}

    def to_dict(self) -> dict[str, list[int]]:
        return {name: [int(i) for i in idxs] for name, idxs in self.kept.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[int]]) -> Plan:
        return cls({name: np.asarray(idxs, dtype=np.int64) for name, idxs in data.items()})

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Plan) and self.kept.keys() == other.kept.keys()
                and all(np.array_equal(v, other.kept[k]) for k, v in self.kept.items()))

    __hash__ = None  # type: ignore[assignment]


def _round_to(x: float, multiple: int) -> int:
    return int(math.floor(x / multiple + 0.5)) * multiple


def keep_count(size: int, ratio: float, *, min_channels: int = 1, round_to: int = 1) -> int:
    """Channels a group of `size` keeps at pruning ratio `ratio` (design §2.4)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning_ratio must be in [0, 1), got {ratio}")
    if min_channels < 1 or round_to < 1:
        raise ValueError(f"min_channels and round_to must be >= 1, got {min_channels}, "
                         f"{round_to}")
    k = max(min_channels, _round_to(size * (1.0 - ratio), round_to))
    return min(size, k)


def ratio_slots(groups: Iterable[ChannelGroup], granularity: str) -> tuple[list[str], list[int]]:
    """Slot names and, per group (in order), the index of the slot it reads its ratio from.

    `group` gives every group its own slot; `stage` lets the groups of one output
    resolution share one (fewer genes on deep nets); `stage_role` gives each stage two,
    one for its residual width (groups coupled across blocks, several producers) and one
    for its internal widths (a block's inner convs): the structure of a ResNet in a few
    genes.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"genome.granularity: must be one of {GRANULARITIES}, "
                         f"got {granularity!r}")
    slots: list[str] = []
    slot_of: list[int] = []
    for g in groups:
        key = {"group": g.name, "stage": g.stage,
               "stage_role": f"{g.stage}/{'residual' if len(g.producers) > 1 else 'internal'}"
               }[granularity]
        if key not in slots:
            slots.append(key)
        slot_of.append(slots.index(key))
    return slots, slot_of


def top_channels(scores: np.ndarray, k: int) -> np.ndarray:
    """The `k` highest-scoring channels in index order; ties go to the lower index, so one
    score vector always gives one plan."""
    return np.sort(np.argsort(-scores, kind="stable")[:k])


def decode_plan(blended: Mapping[str, np.ndarray], values: Sequence[float] | np.ndarray,
                slot_of: Sequence[int], *, encoding: str = "ratio", min_channels: int = 1,
                round_to: int = 1) -> Plan:
    """Turn blended importances and per-slot ratios (or thresholds) into a Plan.

    Args:
        blended: group name -> blended importance (higher = keep), in group order.
        values: one pruning ratio in [0, 1) per slot, or one threshold in [0, 1) per slot
            under `encoding="threshold"` (channels whose min-max-normalised score is below
            it go).
        slot_of: for each group (same order as `blended`), the slot it reads.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"genome.encoding: must be one of {ENCODINGS}, got {encoding!r}")
    if len(slot_of) != len(blended):
        raise ValueError(f"slot_of has {len(slot_of)} entries for {len(blended)} groups")
    kept: dict[str, np.ndarray] = {}
    for (name, scores), slot in zip(blended.items(), slot_of):
        v = float(values[slot])
        size = len(scores)
        if encoding == "ratio":
            k = keep_count(size, v, min_channels=min_channels, round_to=round_to)
        else:
            if not 0.0 <= v < 1.0:
                raise ValueError(f"threshold must be in [0, 1), got {v}")
            lo, hi = float(scores.min()), float(scores.max())
            norm = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
            survivors = int((norm >= v).sum())
            k = max(min_channels, -(-survivors // round_to) * round_to)
            k = min(size, k)
        kept[name] = top_channels(scores, k)
    return Plan(kept)
