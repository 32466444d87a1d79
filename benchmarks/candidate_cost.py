"""Where one candidate's time goes: decode, surgery, adaptive BN, fine-tune, evaluation.

Runs the resident `Evaluator` (what every search worker runs) on CIFAR-10 with ResNet-20
and ResNet-56 and reports medians over repeats, candidates per minute per worker, and the
share of decode + surgery (goal: under 5%; surgery alone under 0.3 s on ResNet-56).

Every repeat also evaluates the same genome, interleaved, under the other memory-format
and kernel-guard variants (channels-last without `training_guards`, as before the
oneDNN#6035 work-around; contiguous tensors), so their cost is a same-run ratio.

    python -m benchmarks.candidate_cost [--data-root ../shared/data] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import DEFAULT_DATA_ROOT, candidate_settings, cifar10_npz, write_result
from pruning import (
    DEFAULT_POOL,
    EvalSettings,
    Evaluator,
    GenomeLayout,
    GroupMap,
    TensorLoader,
    compute_scores,
    create_model,
    holdout_split,
    load_dataset,
)
from pruning.plan import decode_plan
from pruning.surgery import apply_plan

# the module, not the `train` function that `pruning` re-exports under the same name
TRAIN_MODULE: Any = importlib.import_module("pruning.train")
# name -> (channels_last, kernel guards on); the first is the product's default
VARIANTS = {"channels_last": (True, True), "channels_last_unguarded": (True, False),
            "contiguous": (False, True)}


@contextlib.contextmanager
def guards(on: bool) -> Iterator[None]:
    """Run with `training_guards` as shipped, or replaced by a no-op (the old behaviour)."""
    if on:
        yield
        return
    shipped = TRAIN_MODULE.training_guards
    TRAIN_MODULE.training_guards = lambda device: contextlib.nullcontext()
    try:
        yield
    finally:
        TRAIN_MODULE.training_guards = shipped


def load_cifar(data_root: Path):
    npz = cifar10_npz(data_root)
    if npz is not None:
        return load_dataset("npz", str(npz)), "cifar10 (shared JPEG copy)"
    # CIFAR-shaped random images: timings depend on shapes, not pixels.
    from pruning.data import ImageData

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (50000,), generator=g)
    return ImageData("random-cifar-shaped", x, y, x[:10000], y[:10000], 10, 4, True), \
        "random CIFAR-shaped tensors"


def bench(arch: str, data, settings: EvalSettings, repeats: int, holdout: int) -> dict:
    torch.manual_seed(0)
    tr, ho = holdout_split(data, holdout, seed=0)
    mean, std = data.mean_std()
    model = create_model(arch, data.num_classes, data.in_channels).eval()
    x1 = tr[0][:1].float()
    t0 = time.perf_counter()
    gm = GroupMap(model, x1)
    t_graph = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches = TensorLoader(*tr, batch_size=64, mean=mean, std=std).batches(4)
    table = compute_scores(model, gm, DEFAULT_POOL, batches)
    t_scores = time.perf_counter() - t0
    layout = GenomeLayout.build(table, gm, granularity="group", max_ratio=0.8)
    evaluators = {name: Evaluator(model, gm, table, layout, tr, ho, mean=mean, std=std,
                                  pad=data.pad, flip=data.flip,
                                  settings=replace(settings, channels_last=cl))
                  for name, (cl, _) in VARIANTS.items()}
    ev = evaluators["channels_last"]
    rng = np.random.default_rng(0)
    samples: list[dict[str, float]] = []
    variant_totals: dict[str, list[float]] = {name: [] for name in VARIANTS}
    surgery_only: list[float] = []
    for i in range(repeats + 1):  # the first is warm-up (lazy imports, allocator)
        genome = layout.make(rng.random(len(layout.criteria)).tolist(), 0.5)
        names = list(VARIANTS)
        for name in names[i % len(names):] + names[:i % len(names)]:  # rotate: no order bias
            with guards(VARIANTS[name][1]):
                r = evaluators[name].evaluate(genome)
            if r.status != "ok":
                raise RuntimeError(f"{arch} {name}: {r.reason}")
            if i:
                variant_totals[name].append(r.timings["total"])
            if name == "channels_last":
                res = r
        # decode + surgery measured on their own, 5 times, as the 0.3 s budget
        for _ in range(5):
            t0 = time.perf_counter()
            alpha, values = layout.split(genome)
            plan = decode_plan(ev.blender.blend(alpha), values, layout.slot_of,
                               min_channels=layout.min_channels)
            apply_plan(model, gm, plan)
            if i:
                surgery_only.append(time.perf_counter() - t0)
        if i:
            samples.append(res.timings)
            print(f"  {arch} repeat {i}: " + ", ".join(f"{k} {v:.3f}s"
                                                      for k, v in res.timings.items()))
    med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    default = statistics.median(variant_totals["channels_last"])
    variants = {name: {"totals": v, "median_total": statistics.median(v),
                       "ratio_to_default": statistics.median(v) / default}
                for name, v in variant_totals.items()}
    return {
        "arch": arch, "flops_ratio": res.flops_ratio, "group_map_seconds": t_graph,
        "score_table_seconds": t_scores, "samples": samples, "median": med,
        "decode_plus_surgery_median": statistics.median(surgery_only),
        "decode_plus_surgery_share": (med["decode"] + med["surgery"]) / med["total"],
        "candidates_per_minute_per_worker": 60.0 / med["total"],
        "variants": variants,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--archs", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--bn-batches", type=int, default=20)
    p.add_argument("--finetune-steps", type=int, default=50)
    p.add_argument("--holdout", type=int, default=5000)
    p.add_argument("--name", default="candidate_cost")
    args = p.parse_args()
    data, source = load_cifar(args.data_root)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = data.to(device)
    settings = candidate_settings(bn_batches=args.bn_batches, finetune_steps=args.finetune_steps,
                                  lr=0.01, batch_size=128)
    results = []
    for arch in args.archs:
        print(f"{arch} on {source} ({device})")
        results.append(bench(arch, data, settings, args.repeats, args.holdout))
    write_result(args.name, {"data": source, "device": device,
                             "settings": settings.__dict__, "holdout": args.holdout,
                             "results": results})
    for r in results:
        print(f"{r['arch']}: {r['median']['total']:.2f} s/candidate, decode+surgery "
              f"{r['decode_plus_surgery_median'] * 1000:.0f} ms "
              f"({100 * r['decode_plus_surgery_share']:.1f}%), "
              f"{r['candidates_per_minute_per_worker']:.1f} candidates/min/worker; "
              + ", ".join(f"{k} x{v['ratio_to_default']:.3f}"
                          for k, v in r["variants"].items()))


if __name__ == "__main__":
    main()
