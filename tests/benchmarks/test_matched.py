import pytest

from benchmarks.matched import attainment, interval, paired, pick_at


def rec(acc, flops, status="ok"):
    return {"accuracy": acc, "flops_ratio": flops, "status": status}


def test_pick_at_takes_the_best_within_the_window_only():
    records = [rec(0.95, 0.31), rec(0.90, 0.30), rec(0.92, 0.285), rec(0.99, 0.27),
               rec(0.97, 0.29, "failed")]
    assert pick_at(records, 0.3) == rec(0.92, 0.285)  # 0.31 too big, 0.27 too small
    assert pick_at(records, 0.5) is None


def test_attainment_is_the_mean_best_accuracy_over_the_range():
    # Over FLOPs [0.2, 0.6]: 0.5 reached from 0.2 (a 0.1-FLOPs point counts as at 0.2),
    # 0.8 from 0.4; the 0.7-FLOPs point is over budget. (0.2*0.5 + 0.2*0.8) / 0.4 = 0.65
    records = [rec(0.5, 0.1), rec(0.8, 0.4), rec(0.99, 0.7)]
    assert attainment(records, 0.2, 0.6) == pytest.approx(0.65)
    assert attainment([rec(0.5, 0.7)], 0.2, 0.6) == 0.0


def test_interval_and_paired_use_student_t():
    r = interval([1.0, 2.0, 3.0])  # sd 1, t(0.975, 2) = 4.3027
    assert r["mean"] == 2.0
    assert r["hi"] - r["mean"] == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5)
    d = paired([0.9, 0.8], [0.85, 0.8])  # differences 0.05, 0: t(0.975, 1) = 12.706
    assert d["mean"] == pytest.approx(0.025)
    assert d["lo"] == pytest.approx(0.025 - 12.7062 * 0.0353553 / 2 ** 0.5, rel=1e-4)
    assert interval([0.7])["lo"] == 0.7
