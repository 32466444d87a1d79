import pytest

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
    assert gain["mean"] == pytest.approx(0.1)
    assert gain["lo"] <= 0.1 <= gain["hi"] and gain["lo"] >= 0.0
    assert d["accuracy_gain"]["40"] == pytest.approx((2.63 - 2.57) / 5)


def test_a_candidate_without_its_distilled_score_is_left_out_until_it_has_one():
    rows = [*ROWS, row("f", 0.4, 0.7, 0.9)]
    assert report(rows, [0, 40])["candidates"] == 6
    assert report(rows, [0, 40], distill=0.5)["candidates"] == 5
