import numpy as np
import pytest

from pruning import Plan, decode_plan, keep_count, top_channels


@pytest.mark.parametrize("size,ratio,min_channels,round_to,expected", [
    (16, 0.5, 1, 1, 8), (16, 0.9, 4, 1, 4), (16, 0.3, 1, 4, 12), (10, 0.0, 1, 1, 10),
    (64, 0.55, 4, 8, 32), (3, 0.5, 8, 1, 3),
])
def test_keep_count(size, ratio, min_channels, round_to, expected):
    assert keep_count(size, ratio, min_channels=min_channels, round_to=round_to) == expected


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_out_of_range_is_named(ratio):
    with pytest.raises(ValueError, match=r"pruning_ratio must be in \[0, 1\)"):
        keep_count(16, ratio)


def test_decode_keeps_top_channels_by_score():
    blended = {"a": np.array([0.1, 0.9, 0.5, 0.7]), "b": np.arange(10.0)}
    plan = decode_plan(blended, [0.5, 0.3], [0, 1])
    assert plan.kept["a"].tolist() == [1, 3]
    assert plan.kept["b"].tolist() == [3, 4, 5, 6, 7, 8, 9]


def test_decode_respects_min_channels_round_to_and_is_deterministic():
    rng = np.random.default_rng(0)
    blended = {f"g{i}": rng.random(32) for i in range(4)}
    kw = {"min_channels": 6, "round_to": 4}
    plan = decode_plan(blended, [0.79, 0.1], [0, 0, 1, 1], **kw)
    assert plan.counts() == {"g0": 8, "g1": 8, "g2": 28, "g3": 28}
    assert decode_plan(blended, [0.79, 0.1], [0, 0, 1, 1], **kw) == plan
    tiny = decode_plan({"t": np.ones(8)}, [0.95], [0], min_channels=6)
    assert tiny.kept["t"].tolist() == list(range(6))  # ties go to the lower index


def test_threshold_encoding_prunes_below_normalised_threshold():
    blended = {"a": np.array([0.0, 1.0, 2.0, 3.0, 4.0])}
    plan = decode_plan(blended, [0.6], [0], encoding="threshold", min_channels=1)
    assert plan.kept["a"].tolist() == [3, 4]
    plan = decode_plan(blended, [0.99], [0], encoding="threshold", min_channels=2)
    assert plan.kept["a"].tolist() == [3, 4]


def test_plan_round_trips_through_dict():
    plan = Plan({"a": np.array([0, 2]), "b": np.array([1])})
    assert Plan.from_dict(plan.to_dict()) == plan


def test_top_channels_are_in_index_order_with_ties_to_the_lower_index():
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9, 0.5])
    assert top_channels(scores, 3).tolist() == [0, 1, 4]  # 0.9, 0.9, then the first 0.5
    assert top_channels(scores, 4).tolist() == [0, 1, 2, 4]
    assert top_channels(scores, 0).tolist() == []
