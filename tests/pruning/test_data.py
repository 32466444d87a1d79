import gzip
import pickle

import numpy as np
import pytest
import torch

from pruning import TensorLoader, holdout_split, load_dataset

from ..conftest import SHARED_DATA


def test_digits_is_offline_and_split():
    d = load_dataset("digits")
    assert d.x_train.dtype == torch.uint8 and d.x_train.shape[1:] == (1, 8, 8)
    assert len(d.x_train) + len(d.x_test) == 1797 and d.num_classes == 10


def test_holdout_is_stratified_seeded_and_disjoint():
    d = load_dataset("digits")
    (xa, ya), (xh, yh) = holdout_split(d, 0.1, seed=0)
    assert len(xh) == round(0.1 * len(d.x_train)) and len(xa) + len(xh) == len(d.x_train)
    counts = torch.bincount(yh, minlength=10).float()
    expected = torch.bincount(d.y_train, minlength=10).float() * 0.1
    assert torch.all((counts - expected).abs() <= 1)
    (_, _), (xh2, _) = holdout_split(d, 0.1, seed=0)
    assert torch.equal(xh, xh2)
    (_, _), (_, yh3) = holdout_split(d, 50, seed=1)
    assert len(yh3) == 50
    with pytest.raises(ValueError, match="data.holdout"):
        holdout_split(d, 0)


def write_fake_cifar10(root, n=20):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, n))}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    write_fake_cifar10(folder)
    d = load_dataset("cifar10", str(tmp_path))
    assert d.x_train.shape == (100, 3, 32, 32) and d.x_test.shape == (20, 3, 32, 32)
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f)[b"data"][0].reshape(3, 32, 32)
    assert np.array_equal(d.x_train[0].numpy(), first)
    assert d.flip and d.pad == 4


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big")
                                                     for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 28, 28))
    labels = np.arange(12) % 10
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    d = load_dataset("fashion-mnist", str(tmp_path))
    assert d.x_train.shape == (12, 1, 28, 28)
    assert np.array_equal(d.x_train[3, 0].numpy(), imgs[3])
    assert d.y_train.tolist() == labels.tolist()


def test_npz_nhwc_and_missing_key(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8),
              "y_train": np.arange(10) % 3, "x_test": rng.integers(0, 256, (4, 16, 16, 3),
                                                                    dtype=np.uint8),
              "y_test": np.arange(4) % 3}
    np.savez(tmp_path / "ok.npz", **arrays)
    d = load_dataset("npz", str(tmp_path / "ok.npz"))
    assert d.x_train.shape == (10, 3, 16, 16) and d.num_classes == 3
    assert torch.equal(d.x_train[0].permute(1, 2, 0), torch.from_numpy(arrays["x_train"][0]))
    del arrays["y_test"]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="bad.npz lacks key 'y_test'"):
        load_dataset("npz", str(tmp_path / "bad.npz"))


def test_missing_root_and_unknown_dataset_are_named(tmp_path):
    with pytest.raises(ValueError, match="data.root: .* does not exist"):
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="data.root: dataset 'mnist' needs data.root"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="data.dataset: unknown dataset 'svhn'"):
        load_dataset("svhn")


def test_loader_is_deterministic_and_augments_on_device():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(50) % 5
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    a = TensorLoader(x, y, batch_size=16, mean=mean, std=std, augment=True, pad=2, flip=True)
    b = TensorLoader(x, y, batch_size=16, mean=mean, std=std, augment=True, pad=2, flip=True)
    first = list(a.batches(5))
    assert len(first) == 5 and len(a) == 3
    for (xa, ya), (xb, yb) in zip(first, b.batches(5)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    plain = TensorLoader(x, y, batch_size=50, mean=mean, std=std, shuffle=False)
    xp, _ = next(iter(plain))
    torch.testing.assert_close(xp, (x.float() / 255 - 0.5) / 0.25)
    xa, _ = next(a.iter_epoch(0))
    assert xa.shape == (16, 3, 8, 8) and not torch.equal(xa, xp[:16])


@pytest.mark.data
def test_real_fashion_mnist():
    root = SHARED_DATA / "fashion-mnist"
    if not root.exists():
        pytest.skip(f"real data not present at {root}")
    d = load_dataset("fashion-mnist", str(root))
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
