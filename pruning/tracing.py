"""How a model's graph is traced: train-mode-only layers, and reshapes across channels.

`train_only` finds layers an eval pass never runs (auxiliary heads), whose inputs must be
narrowed too. `channel_reshapes` records, while torch-pruning traces, the reshapes that
split or merge the channel dimension into more than one (a channel shuffle): no index
mapping of channels survives them, so the groups they touch stay whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch_pruning.dependency.index_mapping as index_mapping
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["buffers_kept", "channel_reshapes", "failing_module", "train_only"]

_RESHAPES = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape}


class _ChannelReshapes(TorchFunctionMode):
    """Records the autograd node of every reshape to or from more than four dims."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: set[Any] = set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in _RESHAPES and isinstance(out, torch.Tensor) and out.grad_fn is not None \
                and max(args[0].dim(), out.dim()) > 4:
            self.nodes.add(out.grad_fn)
        return out


@contextlib.contextmanager
def channel_reshapes() -> Iterator[set[Any]]:
    """Yields the autograd nodes of channel-splitting reshapes traced inside; torch-pruning's
    index mapping, which divides by the channels it infers there (zero, for a shuffle), is
    skipped for them."""
    recorder = _ChannelReshapes()
    original = index_mapping.update_reshape_index_mapping

    def tolerant(graph: Any, node: Any) -> None:
        if node.grad_fn in recorder.nodes:
            return  # the groups through it stay whole: no mapping is needed
        original(graph, node)

    index_mapping.update_reshape_index_mapping = tolerant
    try:
        with recorder:
            yield recorder.nodes
    finally:
        index_mapping.update_reshape_index_mapping = original


@contextlib.contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """Train-mode passes update BatchNorm statistics: put every buffer back after."""
    saved = {n: b.clone() for n, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(saved[n])


def train_only(model: nn.Module, example_input: torch.Tensor) -> set[nn.Module]:
    """Conv and Linear layers that run in train mode but not in eval mode."""
    def ran(training: bool) -> set[nn.Module]:
        seen: set[nn.Module] = set()
        hooks = [m.register_forward_hook(lambda m, i, o: seen.add(m))
                 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        was = model.training
        try:
            model.train(training)
            with torch.no_grad(), buffers_kept(model):
                model(example_input.repeat(2, *[1] * (example_input.dim() - 1)))
        finally:
            model.train(was)
            for h in hooks:
                h.remove()
        return seen

    try:
        return ran(True) - ran(False)
    except Exception:  # no train-mode pass on this input: trace the eval graph alone
        return set()




@contextlib.contextmanager
def failing_module(model: nn.Module) -> Iterator[None]:
    """Re-raise an exception from a forward pass as a ValueError of one line naming the
    innermost module that was running."""
    names = {m: n for n, m in model.named_modules()}
    running: list[nn.Module] = []

    def enter(m: nn.Module, args: Any) -> None:
        running.append(m)

    def leave(m: nn.Module, args: Any, out: Any) -> None:
        if running and running[-1] is m:
            running.pop()

    hooks = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter),
                                                   m.register_forward_hook(leave))]
    try:
        yield
    except Exception as exc:
        where: str | None = names.get(running[-1]) if running else None
        what = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"[:300]
        where = f"module {where!r} fails" if where else "fails"
        raise ValueError(f"model: tracing {where} ({what})") from None
    finally:
        for h in hooks:
            h.remove()
