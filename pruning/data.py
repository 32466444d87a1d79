"""Datasets: the reader registry, the readers, a stratified holdout split.

Small datasets (digits, MNIST-like, CIFAR, npz) are read once into uint8 NCHW tensors that
`TensorLoader` batches on the model's device; image folders are streamed from disk by
`FolderLoader` (or decoded into memory once, when asked).
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, overload

import numpy as np
import torch

from .folder import FolderSplit, ImageFolderData
from .loader import Split, TensorSplit
from .registry import Registry

__all__ = [
    "Data",
    "ImageData",
    "get_dataset",
    "holdout_split",
    "list_datasets",
    "load_dataset",
    "materialize",
    "register_dataset",
]


@dataclass(frozen=True)
class ImageData:
    """A classification dataset: uint8 images (N, C, H, W) and int64 labels.

    `pad` and `flip` are the dataset's default augmentation (pad-and-crop margin,
    horizontal flips); flipping digits would turn them into other glyphs.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    pad: int = 0
    flip: bool = False

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images, in [0, 1] units."""
        x = self.x_train.float().div_(255)
        return x.mean((0, 2, 3)), x.std((0, 2, 3)).clamp_min(1e-3)

    def train_split(self) -> TensorSplit:
        return TensorSplit(self.x_train, self.y_train)

    def test_split(self) -> TensorSplit:
        return TensorSplit(self.x_test, self.y_test)

    def to(self, device: torch.device | str) -> ImageData:
        return replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                       x_test=self.x_test.to(device), y_test=self.y_test.to(device))


Data = ImageData | ImageFolderData
"""A dataset in memory (tensors) or streamed from disk (image folders)."""

DatasetLoader = Callable[[str | None], Data]
DATASETS: Registry[DatasetLoader] = Registry("dataset", "data.dataset")


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register `fn(root) -> ImageData | ImageFolderData` under `name`; `root` is `data.root`
    (may be None)."""
    return DATASETS.register(name)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)


def get_dataset(name: str) -> DatasetLoader:
    """The reader registered as `name`, or the function a `module:function` names."""
    return DATASETS.get(name)


def load_dataset(name: str, root: str | None = None, *, in_memory: bool = False,
                 image_size: int | None = None, workers: int | None = None) -> Data:
    """Load dataset `name` (from `root` where it needs files); errors name `data.*`.

    A streamed dataset is read at `image_size` by `workers` processes, or decoded into
    memory once when `in_memory`; datasets already in memory keep their own size.
    """
    data = get_dataset(name)(root)
    if isinstance(data, ImageFolderData):
        data = data.with_options(image_size, workers)
        return materialize(data) if in_memory else data
    if not isinstance(data, ImageData):
        raise ValueError(f"data.dataset: {name!r} returned {type(data).__name__}, "
                         "not an ImageData or ImageFolderData")
    if image_size is not None and data.image_size != (image_size, image_size):
        raise ValueError(f"data.image_size: {image_size} applies to streamed datasets only; "
                         f"{name!r} is {data.image_size[0]}x{data.image_size[1]} in memory")
    return data


def _need_root(name: str, root: str | None) -> str:
    if root is None:
        raise ValueError(f"data.root: dataset {name!r} needs data.root (a directory)")
    if not os.path.exists(root):
        raise ValueError(f"data.root: {root!r} does not exist")
    return root


def _find(root: str, *names: str) -> str:
    """The first of `names` under `root` or one level below (archives unpack into a folder)."""
    for base in (root, *sorted(os.path.join(root, d) for d in os.listdir(root)
                               if os.path.isdir(os.path.join(root, d)))):
        for n in names:
            if os.path.exists(os.path.join(base, n)):
                return os.path.join(base, n)
    raise ValueError(f"data.root: none of {list(names)} found in {root!r}")


def _nchw(x: np.ndarray, source: str) -> torch.Tensor:
    if x.dtype != np.uint8:
        raise ValueError(f"data: {source} holds {x.dtype} images; expected uint8")
    if x.ndim == 3:  # NHW grayscale
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):  # NHWC
        x = x.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"data.root: {source} has image shape {x.shape}; expected NHW or NHWC")
    return torch.from_numpy(np.array(x, copy=True, order="C"))


def _labels(y: np.ndarray, n: int, source: str) -> torch.Tensor:
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"data.root: {source} has {y.shape[0]} labels for {n} images")
    if not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise ValueError(f"data: {source} labels must be non-negative integers")
    return torch.from_numpy(y.astype(np.int64))


def _build(name: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray,
           source: str, **aug: object) -> ImageData:
    x_train, x_test = _nchw(xtr, source), _nchw(xte, source)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"data: {source} train images {tuple(x_train.shape[1:])} and test "
                         f"images {tuple(x_test.shape[1:])} differ in shape")
    y_train = _labels(ytr, len(x_train), source)
    y_test = _labels(yte, len(x_test), source)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return ImageData(name, x_train, y_train, x_test, y_test, num_classes, **aug)  # type: ignore[arg-type]


@register_dataset("digits")
def _digits(root: str | None) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images): offline, the embedded default."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)  # 0..16 levels -> 0..255
    # A fixed, stratified 80/20 train/test split: the test split is for final reports only.
    train, test = _stratified(d.target, 0.2, seed=0)
    return _build("digits", x[train], d.target[train], x[test], d.target[test],
                  "sklearn digits", pad=1, flip=False)


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        magic = int.from_bytes(raw[0:4], "big")
        ndim = magic & 0xFF
        if magic >> 8 != 0x08 or ndim not in (1, 3):
            raise ValueError(f"bad magic number {magic:#x}")
        dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(dims)
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"data.root: {path} is not a valid IDX file ({exc})") from None


def _idx_dataset(name: str) -> DatasetLoader:
    def load(root: str | None) -> ImageData:
        root = _need_root(name, root)
        xtr, ytr, xte, yte = (_read_idx(_find(root, stem, stem + ".gz")) for stem in (
            "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
        return _build(name, xtr, ytr, xte, yte, f"{name} IDX files in {root}", pad=2,
                      flip=False)

    return load


register_dataset("mnist")(_idx_dataset("mnist"))
register_dataset("fashion-mnist")(_idx_dataset("fashion-mnist"))


def _unpickle(path: str) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as f:
            batch: dict[bytes, Any] = pickle.load(f, encoding="bytes")
            return batch
    except Exception as exc:
        raise ValueError(f"data.root: cannot read CIFAR batch {path} ({exc})") from None


def _cifar_batches(paths: list[str], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for p in paths:
        d = _unpickle(p)
        if b"data" not in d or label_key not in d:
            raise ValueError(f"data.root: {p} lacks {label_key.decode()!r} or 'data'")
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[label_key]))
    return np.concatenate(xs).transpose(0, 2, 3, 1), np.concatenate(ys)


@register_dataset("cifar10")
def _cifar10(root: str | None) -> ImageData:
    """CIFAR-10 in the python-pickle layout (data_batch_1..5, test_batch)."""
    root = _need_root("cifar10", root)
    first = _find(root, "data_batch_1")
    base = os.path.dirname(first)
    train = [os.path.join(base, f"data_batch_{i}") for i in range(1, 6)]
    missing = [p for p in train if not os.path.exists(p)]
    if missing:
        raise ValueError(f"data.root: missing {missing[0]}")
    xtr, ytr = _cifar_batches(train, b"labels")
    xte, yte = _cifar_batches([_find(root, "test_batch")], b"labels")
    return _build("cifar10", xtr, ytr, xte, yte, f"CIFAR-10 in {root}", pad=4, flip=True)


@register_dataset("cifar100")
def _cifar100(root: str | None) -> ImageData:
    """CIFAR-100 in the python-pickle layout (train, test; fine labels)."""
    root = _need_root("cifar100", root)
    xtr, ytr = _cifar_batches([_find(root, "train")], b"fine_labels")
    xte, yte = _cifar_batches([_find(root, "test")], b"fine_labels")
    return _build("cifar100", xtr, ytr, xte, yte, f"CIFAR-100 in {root}", pad=4, flip=True)


@register_dataset("npz")
def _npz(root: str | None) -> ImageData:
    """A generic `.npz` with x_train, y_train, x_test, y_test (uint8 NHWC or NHW)."""
    path = _need_root("npz", root)
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as d:
            found = set(d.files)
            arrays = [d[k] for k in keys if k in found]
    except Exception as exc:  # not a zip, truncated, or object arrays (never unpickled)
        reason = str(exc).splitlines()[0].split(". ")[0]
        raise ValueError(f"data.root: cannot read {path} as .npz ({reason})") from None
    missing = [k for k in keys if k not in found]
    if missing:
        raise ValueError(f"data.root: {path} lacks key {missing[0]!r}")
    color = arrays[0].ndim == 4 and arrays[0].shape[-1] == 3
    xtr, ytr, xte, yte = arrays
    return _build("npz", xtr, ytr, xte, yte, path, pad=4 if color else 2, flip=color)


@register_dataset("imagefolder")
def _imagefolder(root: str | None) -> ImageFolderData:
    """`root/train/<class>/*` and `root/test/<class>/*` (or `val/`), streamed from disk."""
    root = _need_root("imagefolder", root)
    folders = []
    for names in (("train",), ("test", "val")):
        found = [os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))]
        if not found:
            raise ValueError(f"data.root: {root!r} needs train/ and test/ (or val/) folders")
        try:
            folders.append(FolderSplit.of(found[0]))
        except (FileNotFoundError, OSError) as exc:  # no class folders, or no images in one
            raise ValueError(f"data.root: {exc}") from None
    train, test = folders
    if train.classes != test.classes:
        raise ValueError(f"data.root: {test.root!r} and {train.root!r} hold different classes")
    return ImageFolderData("imagefolder", train, test, num_classes=len(train.classes))


def materialize(data: ImageFolderData) -> ImageData:
    """A streamed dataset decoded once into uint8 tensors at its image size (`data.in_memory`):
    fast candidates for folders that fit in memory, augmented by pad-and-crop and flips."""
    tr, te = data.train.materialize(), data.test.materialize()
    return ImageData(data.name, tr.x, tr.y, te.x, te.y, data.num_classes,
                     pad=max(1, data.train.image_size // 8), flip=data.flip)


def _stratified(y: np.ndarray, fraction: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held) with `fraction` of each class held out (a count if >= 1)."""
    y = np.asarray(y)
    n = len(y)
    n_held = int(fraction) if fraction >= 1 else int(round(fraction * n))
    if not 0 < n_held < n:
        raise ValueError(f"data.holdout: {fraction!r} leaves no training or holdout images")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    # Largest-remainder apportionment keeps per-class proportions and the exact total.
    quota = counts * n_held / n
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n_held - take.sum()]] += 1
    held = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k]
                           for c, k in zip(classes, take)])
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


@overload
def holdout_split(data: ImageData, holdout: float | int, seed: int = 0
                  ) -> tuple[TensorSplit, TensorSplit]: ...
@overload
def holdout_split(data: ImageFolderData, holdout: float | int, seed: int = 0
                  ) -> tuple[FolderSplit, FolderSplit]: ...
def holdout_split(data: Data, holdout: float | int, seed: int = 0) -> tuple[Split, Split]:
    """Split the *training* set into (train, holdout), stratified and seeded.

    Candidates are selected on the holdout; the test split stays unseen until the end (AMC).
    """
    if holdout <= 0:
        raise ValueError(f"data.holdout: must be > 0, got {holdout!r}")
    split = data.train_split()
    rest, held = _stratified(split.labels.cpu().numpy(), holdout, seed)
    return split.subset(torch.from_numpy(rest)), split.subset(torch.from_numpy(held))
