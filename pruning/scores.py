"""The ScoreTable: every criterion's score of every channel, computed once per base model."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .criteria import ActivationCriterion, Criterion, get_criterion
from .kernel_guards import training_guards
from .surgery import GroupMap

__all__ = ["DEFAULT_POOL", "ScoreTable", "compute_scores"]

DEFAULT_POOL = ("l1", "l2", "fpgm", "bn_gamma", "dcff_kl", "texture", "taylor", "hrank", "apoz")
_FORMAT = "blendprune.scoretable/1"


@dataclass
class ScoreTable:
    """group name -> criterion name -> scores (float64, one per channel, higher = keep)."""

    groups: list[str]
    criteria: list[str]
    scores: dict[str, dict[str, np.ndarray]]
    meta: dict[str, Any] = field(default_factory=dict)

    def matrix(self, group: str) -> np.ndarray:
        """(criteria, channels) scores of one group, rows in `criteria` order."""
        return np.stack([self.scores[group][c] for c in self.criteria])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file + rename): a crash never leaves a half table."""
        arrays = {f"s/{gi}/{ci}": self.scores[g][c]
                  for gi, g in enumerate(self.groups) for ci, c in enumerate(self.criteria)}
        header = {"format": _FORMAT, "groups": self.groups, "criteria": self.criteria,
                  "meta": self.meta}
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                payload: dict[str, Any] = {"header": np.array(json.dumps(header)), **arrays}
                np.savez(f, **payload)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScoreTable:
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                if header.get("format") != _FORMAT:
                    raise ValueError(f"unknown format {header.get('format')!r}")
                groups, criteria = header["groups"], header["criteria"]
                scores = {g: {c: np.asarray(data[f"s/{gi}/{ci}"], dtype=np.float64)
                              for ci, c in enumerate(criteria)} for gi, g in enumerate(groups)}
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ValueError(f"score table {os.fspath(path)} is unreadable: {exc}") from None
        return cls(groups, criteria, scores, header.get("meta", {}))


def _resolve(pool: Sequence[str | Criterion]) -> dict[str, Criterion]:
    out: dict[str, Criterion] = {}
    for c in pool:
        crit = get_criterion(c) if isinstance(c, str) else c
        if crit.name in out:
            raise ValueError(f"criteria.pool: {crit.name!r} appears twice")
        out[crit.name] = crit
    return out


def compute_scores(model: nn.Module, group_map: GroupMap, pool: Sequence[str | Criterion],
                   batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None, *,
                   loss_fn: Callable[..., torch.Tensor] = F.cross_entropy) -> ScoreTable:
    """Score every group of `group_map` (built on this very `model`) with every criterion.

    Data-driven criteria record `batches` (a few training batches) in one shared pass;
    the model runs in eval mode so BN statistics stay untouched.
    """
    criteria = _resolve(pool)
    recorders = [c for c in criteria.values() if isinstance(c, ActivationCriterion)]
    if not group_map.dependency_groups:
        raise ValueError("group_map has no dependency groups (was it unpickled? rebuild it)")
    if recorders:
        if batches is None:
            raise ValueError(f"criteria {[c.name for c in recorders]} need data batches")
        needs_grad = any(c.requires_grad for c in recorders)
        was_training = model.training
        model.eval()
        try:
            with contextlib.ExitStack() as stack:
                for c in recorders:
                    stack.enter_context(c.recording(model))
                if needs_grad:
                    stack.enter_context(training_guards(model))
                for x, y in batches:
                    with torch.set_grad_enabled(needs_grad):
                        out = model(x)
                        if needs_grad:
                            torch.autograd.backward(loss_fn(out.float(), y))
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, tp_group in group_map.dependency_groups.items():
        scores[name] = {}
        for cname, crit in criteria.items():
            s = crit(tp_group).detach().double().cpu().numpy()
            if s.shape != (group_map[name].size,) or not np.all(np.isfinite(s)):
                raise ValueError(f"criterion {cname!r} gave invalid scores for group {name!r}")
            scores[name][cname] = s
    return ScoreTable(group_map.names, list(criteria), scores)
