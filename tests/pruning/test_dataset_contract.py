"""Every registered dataset reader loads a tiny fake copy of its format with the right
shapes and dtypes; a reader outside the registry is reached as `module:function`."""

import pickle

import numpy as np
import pytest
import torch

from pruning import ImageData, ImageFolderData, get_dataset, list_datasets, load_dataset

from .test_data import write_fake_cifar10, write_idx
from .test_folder import write_folder

RNG = np.random.default_rng(0)


def _cifar10(tmp):
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    write_fake_cifar10(folder, n=6)
    return str(tmp), (3, 32, 32), 30, 6


def _cifar100(tmp):
    for name, n in (("train", 8), ("test", 4)):
        batch = {b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": list(np.arange(n) % 100)}
        with open(tmp / name, "wb") as f:
            pickle.dump(batch, f)
    return str(tmp), (3, 32, 32), 8, 4


def _idx(tmp):
    for prefix, n in (("train", 9), ("t10k", 3)):
        write_idx(tmp / f"{prefix}-images-idx3-ubyte.gz", RNG.integers(0, 256, (n, 28, 28)))
        write_idx(tmp / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return str(tmp), (1, 28, 28), 9, 3


def _npz(tmp):
    np.savez(tmp / "d.npz", x_train=RNG.integers(0, 256, (7, 12, 12, 3), dtype=np.uint8),
             y_train=np.arange(7) % 2, x_test=RNG.integers(0, 256, (2, 12, 12, 3),
                                                           dtype=np.uint8),
             y_test=np.arange(2) % 2)
    return str(tmp / "d.npz"), (3, 12, 12), 7, 2


def _imagefolder(tmp):
    write_folder(tmp, per_class=(3, 1), classes=("cat", "dog"))
    return str(tmp), (3, 224, 224), 6, 2  # streamed at the ImageNet crop size


FAKES = {"cifar10": _cifar10, "cifar100": _cifar100, "digits": lambda tmp: (
    None, (1, 8, 8), 1438, 359), "fashion-mnist": _idx, "mnist": _idx, "npz": _npz,
    "imagefolder": _imagefolder}


def test_every_registered_dataset_has_a_fake_here():
    assert sorted(FAKES) == list_datasets()


@pytest.mark.parametrize("name", list_datasets())
def test_reader_loads_its_format(name, tmp_path):
    root, shape, n_train, n_test = FAKES[name](tmp_path)
    d = load_dataset(name, root, workers=0)
    assert isinstance(d, ImageData | ImageFolderData) and d.name == name
    train, test = d.train_split(), d.test_split()
    assert (len(train), len(test)) == (n_train, n_test)
    assert train.labels.dtype == test.labels.dtype == torch.int64
    assert 0 <= int(train.labels.min()) and int(train.labels.max()) < d.num_classes
    assert tuple(train.example().shape) == (1, *shape) == (1, d.in_channels, *d.image_size)
    mean, std = d.mean_std()
    x, y = next(iter(test.loader(batch_size=2, mean=mean, std=std, shuffle=False)))
    assert tuple(x.shape) == (2, *shape) and x.dtype == torch.float32 and len(y) == 2
    if isinstance(d, ImageData):  # in memory: uint8 tensors
        assert d.x_train.dtype == d.x_test.dtype == torch.uint8
        assert tuple(d.x_test.shape) == (n_test, *shape)


def tiny_blobs(root=None):
    """A user's reader outside the package: two classes of 4x4 single-channel blobs."""
    x = torch.arange(2 * 10 * 16, dtype=torch.uint8).reshape(20, 1, 4, 4)
    y = torch.arange(20) % 2
    return ImageData("tiny-blobs", x[:16], y[:16], x[16:], y[16:], num_classes=2)


def test_a_reader_outside_the_registry_is_reached_as_module_function():
    from search.config import load_config

    name = "tests.pruning.test_dataset_contract:tiny_blobs"
    assert load_config(None, [f"data.dataset={name}"]).data.dataset == name
    assert get_dataset(name) is tiny_blobs
    assert load_dataset(name).x_train.shape == (16, 1, 4, 4)
    with pytest.raises(ValueError, match="data.dataset: .* returned str, not an ImageData"):
        load_dataset("json:dumps")
