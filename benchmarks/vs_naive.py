"""Our resident evaluator against the candidate loop a user would write without blendprune.

Naive trial (what a Ray Tune / Optuna tutorial does per trial): build the model and load
the checkpoint from disk, wrap the data in a Dataset with per-sample torchvision
transforms and a DataLoader, prune with torch-pruning's MetaPruner (L1, uniform ratio),
re-estimate BN, fine-tune, evaluate the holdout through a DataLoader.
Ours: `Evaluator.evaluate` with the base model, ScoreTable and data resident, batched
on-device augmentation, L1 one-hot alpha at the same uniform ratio.
Equal work: the same BN batches, fine-tune steps, batch size and holdout; FLOPs of both
pruned models are recorded. Both at 1 compute thread, DataLoader without worker
processes (one core per trial, as in a search); methods alternate. Goal: >= 3x.

    python -m benchmarks.vs_naive --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from benchmarks._common import CACHE, DEFAULT_DATA_ROOT, candidate_settings, write_result
from benchmarks.candidate_cost import load_cifar
from pruning import (
    EvalSettings,
    Evaluator,
    GenomeLayout,
    GroupMap,
    TensorLoader,
    TensorSplit,
    compute_scores,
    count_cost,
    create_model,
    holdout_split,
)


class ImageDataset(Dataset):
    """uint8 (N, C, H, W) tensors with per-sample transforms, as torchvision datasets do."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: v2.Transform) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.x[i]), int(self.y[i])


def naive_trial(ckpt: Path, arch: str, num_classes: int, tr: TensorSplit,
                ho: TensorSplit, mean, std, ratio: float,
                s: EvalSettings) -> tuple[float, int]:
    norm = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean.tolist(), std.tolist())]
    train_tf = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), *norm])
    model = create_model(arch, num_classes, 3)
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    train_loader = DataLoader(ImageDataset(tr.x, tr.y, train_tf), batch_size=s.batch_size,
                              shuffle=True, drop_last=True, num_workers=0)
    example = torch.randn(1, 3, 32, 32)
    importance = tp.importance.MagnitudeImportance(p=1)
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio,
                                  ignored_layers=[model.fc])
    pruner.step()
    model.train()
    batches = iter(train_loader)
    with torch.no_grad():  # BN re-estimation
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        for _ in range(s.bn_batches):
            model(next(batches)[0])
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    for _ in range(s.finetune_steps):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(train_loader)
            x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(ImageDataset(ho.x, ho.y, v2.Compose(norm)), batch_size=512):
            correct += int((model(x).argmax(1) == y).sum())
    flops, _ = count_cost(model, example)
    return correct / len(ho[1]), flops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--bn-batches", type=int, default=20)
    p.add_argument("--holdout", type=int, default=5000)
    args = p.parse_args()
    torch.set_num_threads(1)
    data, source = load_cifar(args.data_root)
    tr, ho = holdout_split(data, args.holdout, seed=0)
    mean, std = data.mean_std()
    s = candidate_settings(bn_batches=args.bn_batches, finetune_steps=args.steps, lr=0.02,
                           batch_size=128)
    model = create_model("resnet20", data.num_classes, 3)
    trained = CACHE / "bench" / "resnet20-cifar10-e10.pt"
    if trained.exists() and source.startswith("cifar10"):
        model.load_state_dict(torch.load(trained, weights_only=True))
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "base.pt"
        torch.save(model.state_dict(), ckpt)  # the naive trial reads this from disk
        gm = GroupMap(model, tr[0][:1].float())
        batches = TensorLoader(*tr, batch_size=64, mean=mean, std=std).batches(4)
        table = compute_scores(model, gm, ["l1", "l2"], batches)
        layout = GenomeLayout.build(table, gm, granularity="group", max_ratio=0.9,
                                    min_channels=1)
        ev = Evaluator(model, gm, table, layout, tr, ho, mean=mean, std=std, pad=data.pad,
                       flip=data.flip, settings=s)
        samples: dict[str, list[float]] = {"ours": [], "naive": []}
        flops: dict[str, dict[str, int]] = {}
        accuracy: dict[str, dict[str, float]] = {}
        for rep in range(args.repeats):
            for ratio in args.ratios:
                t0 = time.perf_counter()
                res = ev.evaluate(layout.make([1.0, 0.0], ratio))
                samples["ours"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                acc, naive_flops = naive_trial(ckpt, "resnet20", data.num_classes, tr, ho, mean,
                                              std, ratio, s)
                samples["naive"].append(time.perf_counter() - t0)
                flops[str(ratio)] = {"ours": res.flops, "naive": naive_flops}
                accuracy[str(ratio)] = {"ours": res.accuracy, "naive": acc}
                print(f"repeat {rep} ratio {ratio}: ours {samples['ours'][-1]:.2f}s  naive "
                      f"{samples['naive'][-1]:.2f}s  (FLOPs {res.flops / 1e6:.1f}M vs "
                      f"{naive_flops / 1e6:.1f}M)", flush=True)
    ratios = [n / o for o, n in zip(samples["ours"], samples["naive"])]
    med = statistics.median(ratios)
    write_result("vs_naive", {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data": source, "seconds": samples, "speedups": ratios, "flops": flops,
        "holdout_accuracy": accuracy,
        "median": {"ours_seconds": statistics.median(samples["ours"]),
                   "naive_seconds": statistics.median(samples["naive"]), "speedup": med,
                   "mean_speedup": float(np.mean(ratios))},
        "goal": "naive/ours >= 3x per candidate", "met": med >= 3.0})


if __name__ == "__main__":
    main()
