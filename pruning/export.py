"""Save and load pruned models as plain tensors + plan (loadable with weights_only=True).

A pruned model's shapes differ from its arch's defaults, so a state dict alone cannot be
loaded. The file holds the arch, the plan and the state dict; loading rebuilds the arch,
re-applies the plan through the dependency graph, then loads the weights. The portable
form is the same as a safetensors file and a JSON description (no pickle anywhere); ONNX
is the deployable one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import create_model
from .plan import Plan
from .surgery import GroupMap, apply_plan

__all__ = ["FORMAT", "PORTABLE", "export_onnx", "load_portable", "load_pruned", "save_portable",
           "save_pruned"]

FORMAT = "blendprune.pruned/1"
PORTABLE = "blendprune.portable/1"


def save_pruned(model: nn.Module, path: str | os.PathLike[str], *, arch: str, plan: Plan,
                num_classes: int, input_shape: tuple[int, ...], extra: dict[str, Any] | None = None
                ) -> None:
    """Write `model` (the result of `apply_plan` on `arch`) atomically to `path`."""
    payload = {"format": FORMAT, "arch": arch, "num_classes": num_classes,
               "input_shape": list(input_shape), "plan": plan.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "extra": extra or {}}
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_pruned(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, metadata) from a file written by `save_pruned`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{os.fspath(path)}: not a readable pruned model ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)}: not a {FORMAT} file")
    shape = payload["input_shape"]
    model = _rebuild(payload["arch"], payload["num_classes"], shape, payload["plan"])
    _with_bypasses(model, payload["state_dict"])
    model.load_state_dict(payload["state_dict"])
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model.eval(), meta


def _rebuild(arch: str, num_classes: int, shape: list[int], plan: dict[str, list[int]]
             ) -> nn.Module:
    """The arch, pruned by the plan, untrained: the shapes the weights were saved with."""
    model = create_model(arch, num_classes, shape[1]).eval()
    group_map = GroupMap(model, torch.zeros(shape))
    apply_plan(model, group_map, Plan.from_dict(plan), inplace=True)
    return model


def _with_bypasses(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Kept LAPP bypasses (`conv` + `bypass` under one name) where the weights have them."""
    from .lapp import Bypassed

    for key, w in state.items():
        if not key.endswith(".bypass.weight") or f"{key[:-14]}.conv.weight" not in state:
            continue
        name = key[:-len(".bypass.weight")]
        conv = model.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        bypass = nn.Conv2d(w.shape[1], w.shape[0], 1, stride=(conv.stride[0], conv.stride[1]),
                           bias=False)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, Bypassed(conv, bypass))


def save_portable(model: nn.Module, folder: str | os.PathLike[str], *, arch: str,
                  plan: Plan, num_classes: int, input_shape: tuple[int, ...],
                  extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """`model.safetensors` (the weights) and `model.json` (arch, plan, input shape,
    normalisation): any registered arch is rebuilt from them without pickle."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    norm = {k: extra.pop(k) for k in ("mean", "std") if k in extra}
    weights, spec = out / "model.safetensors", out / "model.json"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(weights), metadata={"format": PORTABLE})
    spec.write_text(json.dumps({"format": PORTABLE, "arch": arch, "num_classes": num_classes,
                                "input_shape": list(input_shape), "normalisation": norm,
                                "plan": plan.to_dict(), "extra": extra}, indent=1))
    return weights, spec


def load_portable(folder: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, its JSON description) from a `save_portable` folder."""
    from safetensors.torch import load_file

    spec = Path(folder) / "model.json"
    try:
        meta = json.loads(spec.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{spec}: not a readable model description ({exc})") from None
    if meta.get("format") != PORTABLE:
        raise ValueError(f"{spec}: not a {PORTABLE} description")
    model = _rebuild(meta["arch"], meta["num_classes"], meta["input_shape"], meta["plan"])
    state = load_file(str(Path(folder) / "model.safetensors"))
    _with_bypasses(model, state)
    model.load_state_dict(state)
    return model.eval(), meta


def export_onnx(model: nn.Module, path: str | os.PathLike[str],
                input_shape: tuple[int, ...]) -> Path:
    """One self-contained ONNX file (weights inside), the batch dimension free."""
    import warnings

    example = torch.zeros(*input_shape).contiguous()
    model = model.eval().to(memory_format=torch.contiguous_format)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), os.fspath(path), input_names=["input"],
                          output_names=["logits"], dynamo=True, external_data=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return Path(path)
