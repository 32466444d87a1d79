"""The seed methods in their papers' CIFAR-10 settings on one GPU, each for a few minutes:
epochs per minute and the test accuracy that short a schedule reaches.

  dcff   ResNet-56 at the DCFF paper's published rates (55.9% fewer FLOPs), from scratch
  cdp    ResNet-56 down to `--cdp-flops` (ours: the method has no target), from scratch
         with BN scale 0.5 as its public code
  lapp   ResNet-20 down to 0.403 FLOPs (the published 40.3%), from scratch

Every method trains with the DCFF paper's recipe (SGD, momentum 0.9, weight decay 5e-4,
batch 256, peak lr 0.1; cosine instead of its steps, no warm-up) for as many whole epochs
as fit in `--minutes`, timed on a first epoch that is then thrown away, and its compact
model is scored on the test split. The papers train 160-300 epochs (hours on a GPU): this
measures the rate, and where minutes get, not the published accuracy.

Data: an .npz with x_train, y_train, x_test, y_test (`--npz`), e.g. a CIFAR-10 subset
small enough to travel to a device machine, written here from the shared copy:

    python -m benchmarks.gpu_seed_methods --write-subset gpu_data/cifar10.npz    # here
    python -m benchmarks.gpu_seed_methods --npz gpu_data/cifar10.npz             # on a GPU
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks._common import DEFAULT_DATA_ROOT, cifar10_npz, write_result
from pruning import (
    CDP,
    DCFF,
    LAPP,
    CostModel,
    GroupMap,
    TensorLoader,
    TrainHooks,
    count_cost,
    create_model,
    evaluate,
    load_dataset,
    scratch_init,
    train,
)
from pruning.data import ImageData
from pruning.dcff_rates import published_rates
from pruning.targets import top_plan

METHODS = ("dcff", "cdp", "lapp")
ARCH = {"dcff": "resnet56", "cdp": "resnet56", "lapp": "resnet20"}


def write_subset(path: Path, data_root: Path, train: int, test: int) -> None:
    """`train` and `test` images of the shared CIFAR-10, class-balanced, compressed."""
    npz = cifar10_npz(data_root)
    if npz is None:
        raise SystemExit(f"no CIFAR-10 under {data_root}")
    d = np.load(npz)
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for split, n in (("train", train), ("test", test)):
        y = d[f"y_{split}"]
        idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n // 10]
                              for c in range(10)])
        out[f"x_{split}"], out[f"y_{split}"] = d[f"x_{split}"][idx], y[idx]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=out["x_train"], y_train=out["y_train"],
                        x_test=out["x_test"], y_test=out["y_test"])
    print(f"wrote {path}: {len(out['y_train'])} train, {len(out['y_test'])} test, "
          f"{path.stat().st_size / 2**20:.1f} MiB")


def build(method: str, x: torch.Tensor, steps: int, epochs: int, args: argparse.Namespace
          ) -> tuple[nn.Module, TrainHooks, DCFF | CDP | LAPP]:
    """A fresh model of the method's paper setting on `x`'s device, and its method."""
    torch.manual_seed(0)
    model = create_model(ARCH[method], 10, 3).to(x.device)
    gm = GroupMap(model, x)
    cost = CostModel(model, gm, x)
    if method == "dcff":
        rates = published_rates("resnet56", model, gm)
        any_order = {g.name: np.arange(g.size, 0, -1, dtype=float) for g in gm}  # DCFF picks
        dcff = DCFF(model, gm, top_plan(any_order, rates), epochs, t_start=1.0)
        return dcff.model, dcff, dcff
    if method == "cdp":
        cdp = CDP(scratch_init(model), gm, cost, target_flops_ratio=args.cdp_flops, lr=args.lr,
                  sparse_steps=steps // 2)
        return cdp.model, cdp, cdp
    lapp = LAPP(model, gm, cost, target_flops_ratio=0.403, prune_steps=steps // 2)
    return lapp.model, lapp, lapp


def run(method: str, data: ImageData, device: torch.device, args: argparse.Namespace
        ) -> dict[str, Any]:
    mean, std = data.mean_std()
    loader = TensorLoader(data.x_train.to(device), data.y_train.to(device),
                          batch_size=args.batch_size, mean=mean, std=std, augment=True,
                          pad=data.pad, flip=data.flip, seed=0)
    test = TensorLoader(data.x_test.to(device), data.y_test.to(device), batch_size=1000,
                        mean=mean, std=std, shuffle=False, drop_last=False)
    example = data.x_train[:1].float().to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # one epoch of this method, thrown away, sizes the run to the budget
    model, hooks, _ = build(method, example, len(loader), 1, args)
    t0 = time.perf_counter()
    train(model, loader, epochs=1, lr=args.lr, warmup_epochs=0.0, hooks=hooks)
    sync()
    first = time.perf_counter() - t0
    epochs = max(1, int(args.minutes * 60 / first))
    model, hooks, trained = build(method, example, epochs * len(loader), epochs, args)
    t0 = time.perf_counter()
    train(model, loader, epochs=epochs, lr=args.lr, warmup_epochs=0.0, hooks=hooks)
    sync()
    seconds = time.perf_counter() - t0
    compact = trained.to_compact().eval()
    full = create_model(ARCH[method], data.num_classes, data.in_channels).to(device)
    flops = count_cost(compact, example)[0] / count_cost(full, example)[0]
    accuracy = evaluate(compact, test)["accuracy"]
    result = {"arch": ARCH[method], "epochs": epochs, "train_seconds": seconds,
              "epochs_per_minute": 60 * epochs / seconds, "first_epoch_seconds": first,
              "test_accuracy": accuracy, "flops_ratio": flops}
    print(f"{method:5s} {ARCH[method]}: {epochs} epochs in {seconds:.0f} s "
          f"({result['epochs_per_minute']:.2f}/min), test {accuracy:.4f}, FLOPs {flops:.3f}",
          flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npz", type=Path, help="x_train, y_train, x_test, y_test (uint8)")
    p.add_argument("--write-subset", type=Path, help="write a CIFAR-10 subset here, then stop")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--subset", type=int, nargs=2, default=[12000, 3000],
                   metavar=("TRAIN", "TEST"))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--minutes", type=float, default=2.0, help="training time per method")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--cdp-flops", type=float, default=0.5)
    args = p.parse_args()
    if args.write_subset:
        write_subset(args.write_subset, args.data_root, *args.subset)
        return
    if args.npz is None:
        p.error("--npz: needed (or --write-subset)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset("npz", str(args.npz))
    assert isinstance(data, ImageData)
    results = {m: run(m, data, device, args) for m in args.methods}
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    write_result("gpu_seed_methods", {
        "device": name, "train_images": len(data.y_train), "test_images": len(data.y_test),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": results})


if __name__ == "__main__":
    main()
