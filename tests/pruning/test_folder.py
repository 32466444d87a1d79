"""Image folders stream through torchvision's ImageFolder and DataLoader workers: native
sizes in, fixed crops out, the same batches for every worker count, or decoded into memory."""

import numpy as np
import pytest
import torch
from PIL import Image

from pruning import (
    FolderSplit,
    ImageData,
    ImageFolderData,
    holdout_split,
    load_dataset,
)
from pruning.folder import IMAGENET_MEAN, IMAGENET_STD

SIZES = ((48, 64), (30, 20))  # (height, width): JPEGs of two sizes, as real folders hold


def write_folder(root, per_class=(6, 2), classes=("ant", "bee", "cat"), seed=0):
    """`root/{train,test}/<class>/*.jpg`; class k's images are mostly colour k (plus noise)."""
    rng = np.random.default_rng(seed)
    colours = {c: rng.integers(0, 256, 3) for c in classes}
    for split, n in zip(("train", "test"), per_class):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                h, w = SIZES[i % 2]
                img = np.clip(colours[cls] + rng.normal(0, 20, (h, w, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(root / split / cls / f"{i}.jpg")
    return root


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path)


def _loader(split, **kw):
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return split.loader(batch_size=4, mean=mean, std=std, **kw)


def test_streams_fixed_size_crops_from_images_of_two_sizes(folder):
    data = load_dataset("imagefolder", str(folder), image_size=40, workers=0)
    assert isinstance(data, ImageFolderData)
    assert data.num_classes == 3 and len(data.train) == 18 and len(data.test) == 6
    assert data.train.classes == ["ant", "bee", "cat"]
    for augment in (False, True):
        batches = list(_loader(data.train, augment=augment, flip=True, drop_last=False))
        assert [len(y) for _, y in batches] == [4, 4, 4, 4, 2]
        x, y = batches[0]
        assert x.shape == (4, 3, 40, 40) and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64
    labels = torch.cat([y for _, y in _loader(data.train, shuffle=False, drop_last=False)])
    assert labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6


def test_eval_batches_are_normalised_centre_crops(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(tmp_path / "a" / "x.png")
    split = FolderSplit.of(str(tmp_path), image_size=16, workers=0)
    (x, y), = _loader(split, shuffle=False, drop_last=False)
    want = [(c / 255 - m) / s for c, m, s in zip((200, 100, 50), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(x[0].mean((1, 2)), torch.tensor(want), atol=1e-5)
    assert torch.allclose(x[0].std((1, 2)), torch.zeros(3), atol=1e-5)  # a flat colour
    assert split.example().shape == (1, 3, 16, 16) and y.tolist() == [0]


def test_eval_crop_is_the_central_0875(tmp_path):
    (tmp_path / "a").mkdir()
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :, 2] = 255
    img[:4], img[-4:], img[:, :4], img[:, -4:] = 0, 0, 0, 0  # a 4-pixel black frame
    Image.fromarray(img).save(tmp_path / "a" / "x.png")
    split = FolderSplit.of(str(tmp_path), image_size=56, workers=0)  # 64 * 0.875 = 56
    x = split.example()[0]
    assert x[2].min() == 255 and x[:2].max() == 0  # the frame is cropped away


def test_an_epoch_is_the_same_whatever_the_worker_count(folder):
    split = FolderSplit.of(str(folder / "train"), image_size=24)
    runs = [[x for x, _ in _loader(split.with_options(workers=w), augment=True, flip=True,
                                   seed=3).iter_epoch(1)] for w in (0, 2, 0)]
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))
    again = [x for x, _ in _loader(split.with_options(workers=0), augment=True, flip=True,
                                   seed=3).iter_epoch(2)]
    assert not torch.equal(runs[0][0], again[0])  # the next epoch draws new crops
    assert len(list(_loader(split.with_options(workers=0)).batches(7))) == 7  # past an epoch


def test_holdout_of_a_folder_is_stratified_and_disjoint(folder):
    data = load_dataset("imagefolder", str(folder), workers=0)
    rest, held = holdout_split(data, 3, seed=0)
    assert isinstance(held, FolderSplit) and len(rest) == 15 and len(held) == 3
    assert sorted(held.labels.tolist()) == [0, 1, 2]
    assert not set(rest.index.tolist()) & set(held.index.tolist())
    assert torch.equal(held.labels, data.train.targets[held.index])


def test_in_memory_decodes_every_image_once(folder):
    data = load_dataset("imagefolder", str(folder), in_memory=True, image_size=32, workers=0)
    assert isinstance(data, ImageData)
    assert data.x_train.shape == (18, 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (6, 3, 32, 32) and data.pad == 4 and data.flip
    streamed = load_dataset("imagefolder", str(folder), image_size=32, workers=0)
    x, _ = next(iter(_loader(streamed.train, shuffle=False)))
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    x_mem = (data.x_train[:4].float() / 255 - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    assert torch.allclose(x, x_mem, atol=1e-5)


@pytest.mark.parametrize("files, message", [
    (["train/k/0.png"], "needs train/ and test/"),
    (["train/k/0.png", "test/j/0.png"], "hold different classes"),
    (["train/k/0.png", "test/j/0.txt"], "Found no valid file"),
])
def test_bad_folders_name_data_root(tmp_path, files, message):
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / f, format="PNG")
    with pytest.raises(ValueError, match=f"data.root: .*{message}"):
        load_dataset("imagefolder", str(tmp_path))


def test_image_size_is_refused_for_a_dataset_in_memory():
    with pytest.raises(ValueError, match="data.image_size: 32 applies to streamed"):
        load_dataset("digits", image_size=32)
