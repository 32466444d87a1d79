"""Shared fixtures: tiny models and a digits base model trained once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def digits_base():
    """A ResNet-20 trained on digits (about 5 s), with its splits; shared across tests."""
    from pruning import TensorLoader, create_model, holdout_split, load_dataset, train

    data = load_dataset("digits")
    tr, ho = holdout_split(data, 0.1, seed=0)
    mean, std = data.mean_std()
    torch.manual_seed(0)
    model = create_model("resnet20", data.num_classes, data.in_channels)
    loader = TensorLoader(*tr, batch_size=128, mean=mean, std=std, augment=True,
                          pad=data.pad, flip=data.flip)
    train(model, loader, epochs=30, lr=0.1)
    model.eval()
    return {"model": model, "data": data, "train": tr, "holdout": ho, "mean": mean, "std": std}
