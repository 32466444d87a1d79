"""Corrupted caches are rebuilt, never a traceback: the base model and the ScoreTable."""

import numpy as np
import pytest

from search.config import load_config
from search.prepare import prepare, validate

pytestmark = pytest.mark.slow

QUICK = ["base_training.epochs=3", "criteria.pool=[l1,fpgm,bn_gamma]", "criteria.batches=2"]


def test_corrupted_cached_model_and_score_table_are_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("BLENDPRUNE_CACHE", str(tmp_path))
    cfg = load_config("digits", QUICK)
    first = prepare(validate(cfg), log=lambda m: None)
    model_file = next((tmp_path / "base").glob("*.pt"))
    table_file = next((tmp_path / "scores").glob("*.npz"))
    table_file.write_bytes(b"PK\x03\x04 garbage")   # a zip header and nothing else
    lines = []
    again = prepare(validate(cfg), log=lines.append)
    assert any("recomputing" in ln and str(table_file) in ln for ln in lines), lines
    for group in first.table.groups:
        for c in first.table.criteria:
            assert np.allclose(first.table.scores[group][c], again.table.scores[group][c])
    raw = model_file.read_bytes()
    model_file.write_bytes(raw[: len(raw) // 3])    # truncated, as by a full disk
    lines = []
    third = prepare(validate(cfg), log=lines.append)
    assert any("unreadable, retraining" in ln and str(model_file) in ln for ln in lines), lines
    assert model_file.stat().st_size == len(raw)  # rewritten whole
    assert third.base_accuracy > 0.2 and third.table is not None  # chance is 0.1
