import numpy as np
import pytest

from pruning import Blender, ScoreTable, cluster_group, rank_normalise


def test_rank_normalise_maps_to_unit_interval():
    np.testing.assert_allclose(rank_normalise(np.array([[3.0, 1.0, 2.0, 10.0]])),
                               [[2 / 3, 0.0, 1 / 3, 1.0]])


def test_identical_criteria_merge_and_anti_correlated_separate():
    rng = np.random.default_rng(0)
    a = rng.random(20)
    scores = np.stack([a, 2 * a + 1, -a, rng.random(20)])
    cl = cluster_group(scores, ["a", "a2", "neg", "noise"], threshold=0.1)
    assert ["a", "a2"] in cl.clusters
    assert ["neg"] in cl.clusters
    assert cl.rho[0, 1] == pytest.approx(1.0) and cl.rho[0, 2] == pytest.approx(-1.0)
    # the condensed score of the merged cluster is the mean z of its members
    merged = cl.labels[0]
    np.testing.assert_allclose(cl.condensed()[merged], rank_normalise(scores[:1])[0])


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    scores = rng.random((3, 15))
    cl = cluster_group(scores, ["x", "y", "z"], threshold=0.1)
    np.testing.assert_allclose(cl.rho, spearmanr(scores.T).statistic, atol=1e-12)


def make_table() -> ScoreTable:
    rng = np.random.default_rng(2)
    groups = ["g0", "g1"]
    crit = ["c0", "c1", "c2"]
    return ScoreTable(groups, crit, {g: {c: rng.random(8) for c in crit} for g in groups})


def test_one_hot_alpha_gives_that_criterions_ranking():
    table = make_table()
    blender = Blender(table, threshold=0.0)
    for k, c in enumerate(table.criteria):
        alpha = np.eye(3)[k]
        for g, b in blender.blend(alpha).items():
            assert list(np.argsort(b)) == list(np.argsort(table.scores[g][c]))


def test_blend_weights_clusters_by_mean_alpha():
    table = make_table()
    blender = Blender(table, threshold=0.0)
    z = rank_normalise(table.matrix("g0"))
    b = blender.blend([0.2, 0.6, 0.0])["g0"]
    np.testing.assert_allclose(b, (0.2 * z[0] + 0.6 * z[1]) / 0.8)
    np.testing.assert_allclose(blender.blend([0, 0, 0])["g0"], z.mean(0))


def test_blend_rejects_bad_alpha():
    blender = Blender(make_table())
    with pytest.raises(ValueError, match="alpha"):
        blender.blend([1.0, 2.0])
    with pytest.raises(ValueError, match="alpha"):
        blender.blend([1.0, -0.1, 0.0])
