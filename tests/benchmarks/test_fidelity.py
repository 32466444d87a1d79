from argparse import Namespace
from types import SimpleNamespace

import pytest

from benchmarks import fidelity
from benchmarks.fidelity import report


def row(name, bn, brief, final, distilled=None):
    r = {"name": name, "rungs": {"0": bn, "40": brief}, "final": final, "flops_ratio": 0.3}
    if distilled is not None:
        r["distilled"] = {"40": distilled}
    return r


# Finals rise a < b < c < d < e. The plain 40-step rung swaps the top two (Spearman 0.9,
# its pick `d` is 1 pp behind `e`); the distilled rung orders all five as the final does.
ROWS = [row("a", 0.10, 0.50, 0.80, 0.52), row("b", 0.30, 0.55, 0.82, 0.56),
        row("c", 0.20, 0.60, 0.84, 0.61), row("d", 0.50, 0.72, 0.85, 0.70),
        row("e", 0.40, 0.70, 0.86, 0.74)]


def test_each_rung_is_scored_by_rank_agreement_and_the_regret_of_its_pick():
    rep = report(ROWS, [0, 40])
    # ranks of bn (1,3,2,5,4) against final (1..5): d² = 0+1+1+1+1 → 1 - 6·4/(5·24) = 0.8
    assert rep["spearman_vs_final"] == {"0": pytest.approx(0.8), "40": pytest.approx(0.9)}
    assert rep["pick_regret"] == {"0": pytest.approx(0.01), "40": pytest.approx(0.01)}
    assert rep["spearman_vs_next"]["0->40"] == pytest.approx(0.9)
    assert rep["final_range"] == [0.80, 0.86]
    assert "distilled" not in rep


def test_the_distilled_rung_reports_its_spearman_gain_with_an_interval():
    d = report(ROWS, [0, 40], distill=0.5)["distilled"]
    assert d["weight"] == 0.5
    assert d["spearman_vs_final"] == {"40": pytest.approx(1.0)}
    assert d["pick_regret"] == {"40": pytest.approx(0.0)}
    gain = d["spearman_gain"]["40"]
    assert gain["point"] == pytest.approx(0.1)
    # every resample keeps the distilled order perfect, so no resampled gain is below 0
    assert gain["lo"] == pytest.approx(0.0) and gain["hi"] >= 0.1
    assert d["accuracy_gain"]["40"] == pytest.approx((3.13 - 3.07) / 5)


def test_a_candidate_without_its_distilled_score_is_left_out_until_it_has_one():
    rows = [*ROWS, row("f", 0.4, 0.7, 0.9)]
    assert report(rows, [0, 40])["candidates"] == 6
    assert report(rows, [0, 40], distill=0.5)["candidates"] == 5


class Scorer:
    """Stands in for an evaluator: accuracy = steps / 1000 (+ `offset`), calls recorded."""

    def __init__(self, offset=0.0):
        self.offset, self.calls = offset, []

    def evaluate(self, genome, fidelity):
        self.calls.append(fidelity.finetune_steps)
        return SimpleNamespace(accuracy=fidelity.finetune_steps / 1000 + self.offset,
                               flops_ratio=0.3)

    def decode(self, genome):
        return SimpleNamespace(to_dict=lambda: {"g": [0]})


def test_a_resumed_candidate_is_scored_only_where_its_row_has_gaps(monkeypatch):
    plain, distilled, finals = Scorer(), Scorer(0.5), []
    bench = SimpleNamespace(evaluator=plain, args=Namespace(
        rungs=[0, 40, 120], distill=0.5, final_steps=800))
    monkeypatch.setattr(fidelity, "_bench", lambda: bench)
    monkeypatch.setattr(fidelity, "_distilling", lambda w: distilled)
    monkeypatch.setattr(fidelity, "final_accuracy",
                        lambda b, plan, seed, steps: finals.append(steps) or 0.9)
    cached = {"rungs": {"0": 0.2, "40": 0.6}, "flops_ratio": 0.3,
              "distilled": {"0.9": {"40": 0.7}, "0.5": {"40": 0.65}}}
    name, row = fidelity.score(("l1@0.3", [0.0], cached))
    assert name == "l1@0.3"
    assert plain.calls == [120] and distilled.calls == [120] and finals == [800]
    assert row["rungs"] == {"0": 0.2, "40": 0.6, "120": 0.12}
    assert row["distilled"] == {"0.9": {"40": 0.7}, "0.5": {"40": 0.65, "120": 0.62}}
    assert row["final800"] == 0.9
    assert cached["distilled"]["0.5"] == {"40": 0.65}  # the caller's row is left as it was
    fidelity.score(("l1@0.3", [0.0], row))
    assert plain.calls == [120] and distilled.calls == [120] and finals == [800]
