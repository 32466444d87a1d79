import numpy as np
import pytest

from pruning import CostModel, Decoder, GenomeLayout, GroupMap, ScoreTable
from search.screening import pinned_genes, screen_genomes, screened


@pytest.fixture(scope="module")
def decoders(digits_base):
    """A decoder over a table where l1 and l2 agree and 'noise' stands apart, per criterion
    and per cluster."""
    model = digits_base["model"]
    x = digits_base["train"][0][:1].float()
    gm = GroupMap(model, x)
    rng = np.random.default_rng(0)
    scores = {}
    for g in gm:
        v = rng.random(g.size)
        scores[g.name] = {"l1": v, "noise": rng.random(g.size), "l2": v ** 2}
    table = ScoreTable([g.name for g in gm], ["l1", "noise", "l2"], scores)
    cost = CostModel(model, gm, x)
    per_criterion = Decoder(table, GenomeLayout.build(table, gm), cost)
    per_cluster = Decoder(table, GenomeLayout.build(table, gm, alpha_genes=((0, 2), (1,))),
                          cost)
    return per_criterion, per_cluster


def test_screen_takes_each_cluster_once_at_the_budget(decoders):
    dec, _ = decoders
    genomes = screen_genomes(dec, 0.5)
    assert list(genomes) == ["l1", "noise"]  # l2 screens with l1, its cluster
    for name, genome in genomes.items():
        assert genome[:3] == list(np.eye(3)[dec.layout.criteria.index(name)])
        assert 0.45 <= dec.flops_ratio(genome) <= 0.5


def test_clusters_below_the_margin_are_dropped_and_their_genes_pinned(decoders):
    dec, by_cluster = decoders
    verdict = screened(dec, {"l1": 0.60, "noise": 0.50}, margin=0.05)
    assert verdict["dropped"] == ["noise"] and verdict["kept"] == ["l1"]
    assert verdict["clusters"] == {"l1": ["l1", "l2"], "noise": ["noise"]}
    assert pinned_genes(dec, verdict) == [1]  # criterion genes: noise is the second
    assert pinned_genes(by_cluster, verdict) == [1]  # cluster genes: (1,) is noise's
    assert screened(dec, {"l1": 0.60, "noise": 0.56}, margin=0.05)["dropped"] == []
    l1_out = screened(dec, {"l1": 0.40, "noise": 0.50}, margin=0.05)
    assert pinned_genes(dec, l1_out) == [0, 2] and pinned_genes(by_cluster, l1_out) == [0]
