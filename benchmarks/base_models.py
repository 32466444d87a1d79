"""Base models for the quality benchmarks, trained by the project's standard recipe.

ResNet-20 on Fashion-MNIST and on the shared CIFAR-10 copy, with `pruning.train` (SGD,
Nesterov momentum 0.9, weight decay 5e-4 on weights, label smoothing 0.1, one warm-up
epoch then cosine to zero, batch 128; random crop, plus flips on CIFAR-10), on the
training split minus the benchmarks' holdout (`HOLDOUT` images, seed 0), so that no
candidate is scored on an image its base model was trained on. Training checkpoints every
epoch in `benchmarks/progress/` and resumes there; commit that checkpoint to carry a run
across sessions (it is removed once the model is saved). The finished weights (about
1 MB) are committed to `benchmarks/models/` next to a JSON with the command, the settings,
the time and the test accuracy.

    python -m benchmarks.base_models --dataset cifar10 --epochs 160
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from benchmarks._common import DEFAULT_DATA_ROOT, PROGRESS, REPO, cifar10_npz, command, machine
from pruning import (
    ImageData,
    TensorLoader,
    create_model,
    evaluate,
    holdout_split,
    load_checkpoint,
    load_dataset,
    train,
)

HOLDOUT = 2000
MODELS = REPO / "benchmarks" / "models"


def load(dataset: str, root: Path) -> ImageData:
    """The benchmark copy of `dataset` (Fashion-MNIST or the shared JPEG CIFAR-10)."""
    if dataset == "fashion-mnist":
        data = load_dataset("fashion-mnist", str(root / "fashion-mnist"))
    else:
        npz = cifar10_npz(root)
        if npz is None:
            raise SystemExit(f"data_root: no cifar10-jpeg under {root}")
        data = load_dataset("npz", str(npz))
    assert isinstance(data, ImageData)
    return data


def weights(dataset: str) -> Path:
    return MODELS / f"resnet20-{dataset}.pt"


def base_model(dataset: str, data: ImageData) -> torch.nn.Module:
    """The committed base model of `dataset`, or a clear error saying how to make it."""
    path = weights(dataset)
    if not path.exists():
        raise SystemExit(f"dataset: no base model {path.relative_to(REPO)}; make it with "
                         f"`python -m benchmarks.base_models --dataset {dataset}`")
    model = create_model("resnet20", data.num_classes, data.in_channels)
    return load_checkpoint(model, str(path)).eval()


def weights_digest(model: torch.nn.Module) -> str:
    """12 hex digits of the weights: results derived from a base model are keyed by it, so
    a retrained base never resumes from the old one's progress."""
    h = hashlib.sha256()
    for v in model.state_dict().values():
        h.update(v.cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def test_accuracy(model: torch.nn.Module, data: ImageData) -> float:
    mean, std = data.mean_std()
    loader = TensorLoader(data.x_test, data.y_test, batch_size=512, mean=mean, std=std,
                          shuffle=False, drop_last=False)
    return evaluate(model, loader)["accuracy"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["fashion-mnist", "cifar10"], required=True)
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(args.dataset, args.data_root)
    tr, _ = holdout_split(data, HOLDOUT, seed=0)
    mean, std = data.mean_std()
    torch.manual_seed(0)
    model = create_model("resnet20", data.num_classes, data.in_channels)
    loader = TensorLoader(*tr, batch_size=128, mean=mean, std=std, augment=True,
                          pad=data.pad, flip=data.flip, seed=0)
    ckpt = PROGRESS / f"resnet20-{args.dataset}-e{args.epochs}.train.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def on_epoch(epoch: int, loss: float) -> None:
        print(f"epoch {epoch}/{args.epochs}  loss {loss:.3f}  "
              f"{time.perf_counter() - t0:.0f} s this session", flush=True)

    seconds = train(model, loader, epochs=args.epochs, lr=args.lr, on_epoch=on_epoch,
                    checkpoint=ckpt)["total_seconds"]
    model.eval()
    accuracy = test_accuracy(model, data)
    MODELS.mkdir(exist_ok=True)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, weights(args.dataset))
    info = {"command": command(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "machine": machine(), "arch": "resnet20", "dataset": args.dataset,
            "epochs": args.epochs, "lr": args.lr, "batch_size": 128, "holdout": HOLDOUT,
            "train_images": len(tr.y), "test_accuracy": accuracy, "train_seconds": seconds}
    path = weights(args.dataset).with_suffix(".json")
    path.write_text(json.dumps(info, indent=1) + "\n")
    ckpt.unlink()
    print(f"resnet20 on {args.dataset}: test accuracy {accuracy:.4f} -> "
          f"{weights(args.dataset).relative_to(REPO)}")


if __name__ == "__main__":
    main()
