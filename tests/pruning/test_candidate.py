import numpy as np
import pytest
import torch

from pruning import (
    EvalSettings,
    Evaluator,
    GenomeLayout,
    GroupMap,
    Plan,
    ScoreTable,
    TensorLoader,
    compute_scores,
    count_cost,
)

POOL = ["l1", "fpgm", "bn_gamma", "taylor", "apoz"]


@pytest.fixture(scope="module")
def evaluator(digits_base):
    b = digits_base
    model = b["model"]
    gm = GroupMap(model, b["train"][0][:1].float())
    batches = TensorLoader(*b["train"], batch_size=128, mean=b["mean"], std=b["std"]).batches(2)
    table = compute_scores(model, gm, POOL, batches)
    layout = GenomeLayout.build(table, gm, granularity="stage", max_ratio=0.8, min_channels=4)
    return Evaluator(model, gm, table, layout, b["train"], b["holdout"], mean=b["mean"],
                     std=b["std"], pad=1, settings=EvalSettings(bn_batches=5, finetune_steps=5))


def test_layout_bounds_and_stage_slots(evaluator):
    layout = evaluator.layout
    assert sorted(layout.slots) == ["2x2", "4x4", "8x8"]
    lo, hi = layout.bounds()
    assert len(lo) == len(layout) == len(POOL) + 3 and hi[-1] == 0.8 and hi[0] == 1.0
    with pytest.raises(ValueError, match="genome: expected 8 genes"):
        layout.split([0.5] * 3)


def test_candidate_is_scored_with_common_random_numbers(evaluator, digits_base):
    genome = evaluator.layout.make([1, 0, 0, 0, 0], 0.5)
    a, b = evaluator.evaluate(genome), evaluator.evaluate(genome)
    assert a.status == "ok" and a.accuracy == b.accuracy and a.plan == b.plan
    assert 0.1 < a.flops_ratio < 0.5 and a.params_ratio < 0.5
    pruned = evaluator.prune(genome)
    x = digits_base["train"][0][:1].float()
    assert count_cost(pruned, x) == (a.flops, a.params)
    assert {"decode", "surgery", "adaptive_bn", "finetune", "evaluate"} <= set(a.timings)


def test_diverging_candidate_is_failed_not_raised(digits_base, evaluator):
    bad = Evaluator(evaluator.base, evaluator.group_map, evaluator.table, evaluator.layout,
                    digits_base["train"], digits_base["holdout"], mean=digits_base["mean"],
                    std=digits_base["std"], settings=EvalSettings(bn_batches=2,
                                                                  finetune_steps=5, lr=1e12))
    res = bad.evaluate(bad.layout.make([1] * 5, 0.3))
    assert res.status == "failed" and "DivergedError" in res.reason and res.accuracy == 0.0


def test_score_table_round_trip_and_corruption(evaluator, tmp_path):
    path = tmp_path / "scores.npz"
    evaluator.table.save(path)
    loaded = ScoreTable.load(path)
    assert loaded.criteria == POOL and loaded.groups == evaluator.table.groups
    for g in loaded.groups:
        for c in POOL:
            assert np.array_equal(loaded.scores[g][c], evaluator.table.scores[g][c])
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="scores.npz is unreadable"):
        ScoreTable.load(path)


def test_evaluator_flops_ratio_prediction_is_monotone(evaluator):
    ratios = [evaluator.flops_ratio(evaluator.layout.make([1] * 5, r)) for r in (0, 0.3, 0.6)]
    assert ratios[0] == pytest.approx(1.0) and ratios[0] > ratios[1] > ratios[2]


def test_decoder_uniform_value_meets_target_and_min_ratio(evaluator):
    dec = evaluator.decoder
    alpha = [0, 1, 0, 0, 0]
    r = dec.uniform_value_for(alpha, 0.5)
    assert dec.flops_ratio(evaluator.layout.make(alpha, r)) <= 0.5
    assert dec.flops_ratio(evaluator.layout.make(alpha, max(0.0, r - 0.02))) > 0.5
    assert 0 < dec.min_flops_ratio() < 0.2


def test_spread_seeds_cycle_criteria_and_step_down_the_flops_range(evaluator):
    dec = evaluator.decoder
    seeds = dec.spread_seeds(0.6, 7)
    names = [n.split("@")[0] for n, _ in seeds]
    assert names == POOL + POOL[:2]
    targets = [float(n.split("@")[1]) for n, _ in seeds]
    assert targets[0] == 0.6 and targets[-1] == pytest.approx(0.24, abs=0.005)
    assert all(a > b for a, b in zip(targets, targets[1:]))
    for (_, genome), t in zip(seeds, targets):
        assert dec.flops_ratio(genome) <= t + 1e-9
    only = dec.spread_seeds(0.5, 3, criteria=[2])
    assert [n for n, _ in only] == ["bn_gamma@0.50", "bn_gamma@0.35", "bn_gamma@0.20"]
    assert all(g[:5] == [0.0, 0.0, 1.0, 0.0, 0.0] for _, g in only)


def test_plan_that_empties_a_layer_is_a_failed_candidate(evaluator):
    plan = evaluator.decode(evaluator.layout.make([1, 0, 0, 0, 0], 0.3))
    group = next(iter(plan.kept))
    res = evaluator.evaluate(Plan({**plan.kept, group: np.array([], dtype=np.int64)}))
    assert res.status == "failed" and "keeps no channel" in res.reason and res.accuracy == 0
    # the genome space itself cannot empty a layer: min_channels holds at the bounds
    extreme = evaluator.decode(evaluator.layout.make([1, 1, 1, 1, 1], 0.999))
    assert min(extreme.counts().values()) >= evaluator.layout.min_channels


def test_out_of_memory_candidate_is_failed_and_others_still_run(digits_base, evaluator):
    from tests.fault_models import AllocateWhenPruned

    base = evaluator.base
    conv = next(m for m in base.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(AllocateWhenPruned(conv.out_channels))
    try:
        hungry = evaluator.evaluate(evaluator.layout.make([1, 0, 0, 0, 0], 0.7))
        fine = evaluator.evaluate(evaluator.layout.make([1, 0, 0, 0, 0], 0.1))
    finally:
        handle.remove()
    assert hungry.status == "failed" and hungry.reason.startswith("OutOfMemoryError: ")
    assert "can't allocate memory" in hungry.reason and hungry.accuracy == 0.0
    assert fine.status == "ok" and fine.accuracy > 0.5


def test_other_runtime_errors_are_not_swallowed(evaluator, monkeypatch):
    import pruning.candidate as candidate

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(candidate, "adaptive_bn", broken)
    with pytest.raises(RuntimeError, match="shapes"):
        evaluator.evaluate(evaluator.layout.make([1, 0, 0, 0, 0], 0.3))


def test_timings_name_every_pass_and_total_is_the_wall_time(evaluator):
    r = evaluator.evaluate(evaluator.layout.make([1, 0, 0, 0, 0], 0.3))
    parts = {k: v for k, v in r.timings.items() if k != "total"}
    assert set(parts) == {"decode", "surgery", "adaptive_bn", "bn_evaluate", "finetune",
                          "evaluate"}
    assert r.timings["total"] >= sum(parts.values()) and all(v >= 0 for v in parts.values())


def test_fidelity_sets_the_fine_tune_of_one_evaluation(evaluator):
    from pruning import Fidelity

    genome = evaluator.layout.make([1, 0, 0, 0, 0], 0.5)
    bn_only = evaluator.evaluate(genome, Fidelity(finetune_steps=0))
    assert "finetune" not in bn_only.timings and bn_only.bn_accuracy is None
    default = evaluator.evaluate(genome)
    longer = evaluator.evaluate(genome, Fidelity(finetune_steps=12))
    assert longer.timings["finetune"] > default.timings["finetune"]
    # Another seed draws other fine-tune batches; the default seed repeats exactly.
    assert evaluator.evaluate(genome, Fidelity(seed=0)).accuracy == default.accuracy
    reseeded = [evaluator.evaluate(genome, Fidelity(seed=s)).accuracy for s in (1, 2, 3)]
    assert any(a != default.accuracy for a in reseeded)
