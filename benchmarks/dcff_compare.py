"""DCFF against a plain fine-tune of the same plan and against training the same compact
architecture from scratch, on the committed ResNet-20 bases.

One plan per dataset: the uniform rate that keeps `--flops` of the base model's FLOPs,
kept channels by L1. Every method trains `--epochs` epochs with the same schedule
(SGD, cosine from `--lr`, batch 128, the base recipe's augmentation) on the training split
minus the benchmarks' holdout, and is scored once on the test split:

  dcff       the base model's banks fused with DCFF's temperature schedule
  finetune   apply_plan (L1 selection), adaptive BN, then the same training
  scratch    the same compact architecture, freshly initialised

Each (method, seed) is kept in the cache as it finishes, so a stopped run resumes.

    python -m benchmarks.dcff_compare --dataset fashion-mnist --epochs 5 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import CACHE, DEFAULT_DATA_ROOT, write_result
from benchmarks.base_models import HOLDOUT, base_model, load, test_accuracy
from pruning import (
    DCFF,
    CostModel,
    GroupMap,
    Plan,
    TensorLoader,
    adaptive_bn,
    apply_plan,
    compute_scores,
    create_model,
    holdout_split,
    keep_count,
    train,
)

METHODS = ("dcff", "finetune", "scratch")


def uniform_plan(model: torch.nn.Module, gm: GroupMap, x: torch.Tensor, flops: float
                 ) -> Plan:
    """The smallest uniform rate whose L1 plan keeps at most `flops` of the FLOPs."""
    cost = CostModel(model, gm, x)
    table = compute_scores(model, gm, ["l1"])

    def plan(rate: float) -> Plan:
        return Plan({g.name: np.sort(np.argsort(-table.scores[g.name]["l1"], kind="stable")
                                     [:keep_count(g.size, rate)]) for g in gm})

    lo, hi = 0.0, 0.95
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost.predict(plan(mid))[0] / cost.base_flops > flops else (lo, mid)
    return plan(hi)


def run(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    data = load(args.dataset, args.data_root)
    tr, _ = holdout_split(data, HOLDOUT, seed=0)
    mean, std = data.mean_std()
    base = base_model(args.dataset, data)
    x = tr.x[:1].float()
    gm = GroupMap(base, x)
    plan = uniform_plan(base, gm, x, args.flops)
    torch.manual_seed(seed)
    loader = TensorLoader(*tr, batch_size=128, mean=mean, std=std, augment=True,
                          pad=data.pad, flip=data.flip, seed=seed)
    before = None
    if method == "dcff":
        dcff = DCFF(base, gm, plan, args.epochs)
        model, before = dcff.model, dcff.begin_epoch
    elif method == "finetune":
        model = apply_plan(base, gm, plan)
        bn = TensorLoader(*tr, batch_size=128, mean=mean, std=std, seed=seed)
        adaptive_bn(model, bn.batches(20))
    else:
        fresh = create_model("resnet20", data.num_classes, data.in_channels)
        model = apply_plan(fresh, GroupMap(fresh, x), plan)
    start = time.perf_counter()
    train(model, loader, epochs=args.epochs, lr=args.lr, before_epoch=before)
    seconds = time.perf_counter() - start
    if method == "dcff":
        model = dcff.to_compact()
    return {"method": method, "seed": seed, "test_accuracy": test_accuracy(model.eval(), data),
            "train_seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["fashion-mnist", "cifar10"], default="fashion-mnist")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--flops", type=float, default=0.5, help="FLOPs kept")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = p.parse_args()
    torch.set_num_threads(1)
    key = f"{args.dataset}-{args.flops}-{args.epochs}-{args.lr}"
    cache = CACHE / "bench" / f"dcff_compare-{key}.json"
    done: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    for seed in args.seeds:
        for method in args.methods:
            name = f"{method}/{seed}"
            if name not in done:
                done[name] = run(method, seed, args)
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(done))
            r = done[name]
            print(f"{name:14s} test {r['test_accuracy']:.4f}  {r['train_seconds']:.0f} s",
                  flush=True)
    summary = {m: {"median": statistics.median(done[f"{m}/{s}"]["test_accuracy"]
                                               for s in args.seeds),
                   "runs": [done[f"{m}/{s}"]["test_accuracy"] for s in args.seeds]}
               for m in args.methods}
    write_result(f"dcff_compare_{args.dataset}", {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summary, "runs": done})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
