"""Prune every torchvision classification CNN, as a user would, with blendprune and with
Torch-Pruning side by side.

Every classification model of torchvision (weights=None, eval mode), transformers and
models over 150M parameters left out, gets a uniform 50% L1 plan on a 1x3x64x64 input
(299 for inception_v3, whose stem needs it): blendprune through `pruning.prune`,
Torch-Pruning through `MetaPruner` with `MagnitudeImportance(p=1)` at the same ratio,
the classifier left alone in both. A model passes when its pruned copy runs forward in
eval and in train mode (if the original did) with the output shape unchanged, its
multiply-accumulates and parameters fell, and (blendprune) `CostModel`'s prediction
equals the counted cost and the pruned model computes what the original computes with
the removed channels zeroed (where no normalisation mixes channels). Each (model, tool)
runs in its own subprocess with a time limit, so one crash or hang costs one row.

    python -m benchmarks.zoo                 # all models, writes results/zoo.json
    python -m benchmarks.zoo --only resnet18 regnet_x_400mf
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

TOOLS = ("blendprune", "torch_pruning")
LEFT_OUT = ("vit_", "swin_", "maxvit")  # transformers
MAX_PARAMS = 150e6
RATIO = 0.5
REPO = Path(__file__).resolve().parents[1]


def models() -> list[str]:
    """torchvision's classification CNNs up to 150M parameters (66 in torchvision 0.29)."""
    import torchvision

    def params(name: str) -> int:
        return int(torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"])

    return [m for m in torchvision.models.list_models(module=torchvision.models)
            if not m.startswith(LEFT_OUT) and params(m) <= MAX_PARAMS]


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    import torchvision

    torch.manual_seed(0)
    kwargs = {"aux_logits": True, "init_weights": True} if name in ("googlenet",
                                                                    "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    size = 299 if name == "inception_v3" else 64
    return model, torch.randn(1, 3, size, size)


def _logits(out: Any) -> torch.Tensor:
    """The main output of a model that may return a namedtuple with aux logits."""
    return out if isinstance(out, torch.Tensor) else out[0]


def _train_forward(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether a train-mode forward (batch of 2, BN needs > 1) runs."""
    model.train()
    try:
        with torch.no_grad():
            model(x.repeat(2, 1, 1, 1))
        return True
    except Exception:
        return False
    finally:
        model.eval()


def masked_gap(model: nn.Module, pruned: nn.Module, report: Any, x: torch.Tensor
               ) -> float | None:
    """Largest difference between the pruned model and the original with the removed
    channels zeroed where they are produced, relative to the largest output: the two
    compute the same function when every channel mapping is right. None where
    normalisation across channels (LayerNorm, GroupNorm) makes a removed channel change
    the others."""
    if any(isinstance(m, (nn.LayerNorm, nn.GroupNorm)) for m in model.modules()):
        return None
    modules = dict(model.named_modules())
    drop: dict[str, list[int]] = {}
    for group in report.group_map:
        kept = report.plan.kept.get(group.name)
        for op in group.ops:
            if op.out_channels and op.module in modules and kept is not None:
                gone = op.idxs[~np.isin(op.root_idxs, kept)].tolist()
                drop.setdefault(op.module, []).extend(gone)

    def zero(channels: list[int]) -> Any:
        def hook(m: nn.Module, i: Any, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, channels] = 0.0  # conv and BN maps, and Linear features, are (N, C, ...)
            return out
        return hook

    hooks = [modules[name].register_forward_hook(zero(sorted(set(c))))
             for name, c in drop.items() if c]
    try:
        with torch.no_grad():
            reference = _logits(model.eval()(x))
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        gap = (_logits(pruned.eval()(x)) - reference).abs().max()
    return float(gap / reference.abs().max().clamp_min(1e-12))


def run_blendprune(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
    from pruning import CostModel, count_cost, prune

    pruned, report = prune(model, x, ratio=RATIO)
    predicted = CostModel(model, report.group_map, x).predict(report.plan)
    return pruned, {"cost_exact": tuple(predicted) == count_cost(pruned, x),
                    "predicted": list(predicted), "left_alone": report.left_alone,
                    "masked_gap": masked_gap(model, pruned, report, x)}


def run_torch_pruning(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
    import torch_pruning as tp

    from pruning.surgery import classifier_layers

    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=RATIO,
                                  ignored_layers=classifier_layers(model, x))
    pruner.step()
    return model, {}


def check(name: str, tool: str) -> dict[str, Any]:
    """One (model, tool): status, first error line, costs before and after, seconds."""
    from pruning import count_cost

    model, x = build(name)
    with torch.no_grad():
        shape = tuple(_logits(model(x)).shape)
    trains = _train_forward(model, x)
    flops0, params0 = count_cost(model, x)
    row: dict[str, Any] = {"macs_before": flops0, "params_before": params0}
    start = time.perf_counter()
    try:
        run = run_blendprune if tool == "blendprune" else run_torch_pruning
        pruned, extra = run(model, x)
        row["seconds"] = time.perf_counter() - start
        row.update(extra)
        with torch.no_grad():
            out = tuple(_logits(pruned.eval()(x)).shape)
        flops1, params1 = count_cost(pruned, x)
        row.update(macs_after=flops1, params_after=params1, output_ok=out == shape,
                   train_ok=_train_forward(pruned, x) if trains else None)
        problems = [what for what, bad in (
            (f"output {out} != {shape}", out != shape),
            ("MACs did not fall", flops1 >= flops0), ("params did not fall", params1 >= params0),
            ("train-mode forward fails", trains and not row["train_ok"]),
            ("CostModel prediction != count", row.get("cost_exact") is False),
            (f"differs from the masked original by {row.get('masked_gap')}",
             (row.get("masked_gap") or 0.0) > 1e-4)) if bad]
        row["status"] = "ok" if not problems else "wrong"
        row["error"] = "; ".join(problems)
    except Exception as exc:
        row["seconds"] = time.perf_counter() - start
        row["status"] = "failed"
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        row["error"] = f"{type(exc).__name__}: {line}"[:300]
        row["where"] = traceback.extract_tb(exc.__traceback__)[-1].name
    return row


def run_isolated(name: str, tool: str, timeout: float) -> dict[str, Any]:
    """`check` in a subprocess: a native crash or a hang is that row's result."""
    cmd = [sys.executable, "-m", "benchmarks.zoo", "--one", name, "--tool", tool]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "failed", "error": f"exit {proc.returncode}: {tail}"[:300]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", help="these models only")
    p.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per model and tool")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--tool", choices=TOOLS, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.one:
        print(json.dumps(check(args.one, args.tool)))
        return
    from benchmarks._common import write_result

    names = args.only or models()
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        rows[name] = {tool: run_isolated(name, tool, args.timeout) for tool in args.tools}
        print(f"{name:24s} " + "  ".join(
            f"{tool} {r['status']:6s}{' ' + r['error'][:70] if r.get('error') else ''}"
            for tool, r in rows[name].items()), flush=True)
    summary = {tool: {"tried": len(rows), "ok": sum(r[tool]["status"] == "ok"
                                                   for r in rows.values())}
               for tool in args.tools}
    print(json.dumps(summary))
    if not args.only:
        write_result("zoo", {"ratio": RATIO, "summary": summary, "models": rows})


if __name__ == "__main__":
    main()
