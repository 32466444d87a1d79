"""validate -> Inputs -> prepare -> Prepared -> Resident: frozen, complete, and a worker's
share holds exactly what an Evaluator needs (never the test split)."""

import dataclasses
import pickle

import pytest
import torch

from search.config import load_config
from search.prepare import Prepared, prepare, validate
from search.resident import Resident, eval_settings

QUICK = ["base_training.epochs=2", "criteria.pool=[l1,bn_gamma]", "criteria.batches=1",
         "evaluation.finetune_steps=7", "evaluation.channels_last=false", "genome.keep=fuse",
         "search.seed=5"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("BLENDPRUNE_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield prepare(validate(load_config("digits", QUICK)), log=lambda m: None)
    finally:
        mp.undo()


def test_phases_are_frozen_and_complete(prepared):
    assert isinstance(prepared, Prepared)
    assert all(getattr(prepared, f.name) is not None for f in dataclasses.fields(prepared))
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.table = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.inputs.model = None
    assert prepared.layout.criteria == ("l1", "bn_gamma")


def test_a_worker_gets_what_an_evaluator_needs_and_never_the_test_split(prepared):
    cfg = load_config("digits", QUICK)
    resident = Resident.of(prepared, cfg)
    assert [f.name for f in dataclasses.fields(resident)] == [
        "model", "group_map", "table", "layout", "train", "holdout", "mean", "std", "pad",
        "flip", "settings", "cluster_threshold"]
    x_test = prepared.inputs.data.x_test
    tensors = [*resident.train, *resident.holdout]
    assert all(t.untyped_storage().data_ptr() != x_test.untyped_storage().data_ptr()
               for t in tensors)
    restored = pickle.loads(pickle.dumps(resident))  # what Ray ships
    assert torch.equal(restored.holdout[0], resident.holdout[0])
    ev = restored.evaluator()
    assert ev.settings == eval_settings(cfg)


def test_config_becomes_evaluation_settings_in_one_place():
    s = eval_settings(load_config("digits", QUICK))
    assert (s.finetune_steps, s.channels_last, s.keep, s.seed) == (7, False, "fuse", 5)
    assert (s.bn_batches, s.lr, s.batch_size) == (10, 0.02, 128)  # the digits preset's


def test_the_final_fine_tune_distils_by_its_own_weight_not_the_brief_ones(prepared):
    """`final.distill` reaches the final fine-tune; `evaluation.distill` (the candidates'
    brief fine-tune) leaves it as it was."""
    from pruning.targets import top_plan
    from search.final_stage import _finish

    scores = {g.name: prepared.table.scores[g.name]["l1"] for g in prepared.inputs.group_map}
    plan = top_plan(scores, dict.fromkeys(scores, 0.5))

    def finished(*overrides):
        cfg = load_config("digits", [*QUICK, "final.epochs=1", *overrides])
        model, _ = _finish(cfg, prepared, plan, seed=3)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    plain = finished("final.distill=0")
    assert torch.equal(finished("final.distill=0", "evaluation.distill=0.9"), plain)
    assert not torch.allclose(finished(), plain)  # on by default: it paid on the benchmark
