import numpy as np
import pytest

from pruning import (
    CostModel,
    Decoder,
    GenomeLayout,
    GroupMap,
    Plan,
    ScoreTable,
    TensorLoader,
    compute_scores,
)
from pruning.blending import Blender
from pruning.targets import Targets, global_profile, lamp_scores

POOL = ["l1", "l2", "fpgm", "bn_gamma", "taylor", "apoz"]


@pytest.fixture(scope="module")
def parts(digits_base):
    b = digits_base
    model = b["model"]
    x = b["train"][0][:1].float()
    gm = GroupMap(model, x)
    batches = TensorLoader(*b["train"], batch_size=128, mean=b["mean"], std=b["std"]).batches(2)
    table = compute_scores(model, gm, POOL, batches)
    return table, gm, CostModel(model, gm, x)


def decoder(parts, targets, **options):
    table, gm, cost = parts
    layout = GenomeLayout.build(table, gm, max_ratio=0.8, min_channels=4, targets=targets,
                                **options)
    return Decoder(table, layout, cost)


def test_targets_pick_by_gene_and_reject_bad_lists():
    t = Targets((0.25, 0.3, 0.5))
    assert [t.at(g) for g in (0.0, 0.33, 0.34, 0.99, 1.0)] == [0.25, 0.25, 0.3, 0.5, 0.5]
    assert all(t.at(t.gene(v)) == v for v in t.values)
    r = Targets(span=(0.2, 0.6))
    assert r.at(0.5) == pytest.approx(0.4) and r.gene(0.3) == pytest.approx(0.25)
    assert r.seeding == pytest.approx((0.2, 0.2 + 0.4 / 3, 0.2 + 0.8 / 3, 0.6))
    for bad in [dict(values=(0.5, 0.3)), dict(values=(0.0,)), dict(), dict(span=(0.5, 0.4))]:
        with pytest.raises(ValueError, match="targets"):
            Targets(**bad)


def test_lamp_scores_and_global_profile_by_hand():
    np.testing.assert_allclose(lamp_scores(np.array([2.0, 1.0, 3.0])), [4 / 13, 1 / 14, 1.0])
    # Group A [1,1,1,1] -> .25 .333 .5 1; group B [1,2,3] -> .071 .308 1. The 3/7 quantile
    # of all seven lies between .308 and .333: A loses one channel of 4, B two of 3.
    ratios = global_profile([np.ones(4), np.array([1.0, 2.0, 3.0])], [0, 1], 2, 3 / 7, 0.8)
    assert ratios == pytest.approx([0.25, 2 / 3])
    assert global_profile([np.ones(4), np.array([1.0, 2.0, 3.0])], [0, 0], 1, 3 / 7, 0.5) == \
        pytest.approx([(0.25 + 0.5) / 2])  # one shared slot: the mean, B capped at 0.5


def test_every_genome_is_repaired_onto_its_target(parts):
    dec = decoder(parts, Targets((0.3, 0.5)))
    lo, hi = dec.layout.bounds()
    assert len(lo) == len(dec.layout) == len(POOL) + len(dec.layout.slots) + 1
    rng = np.random.default_rng(0)
    for _ in range(20):
        genome = list(rng.uniform(lo, hi))
        target = dec.layout.target(genome)
        assert target in (0.3, 0.5)
        assert target - 0.02 <= dec.flops_ratio(genome) <= target
    # The shape of the profile survives: a slot pruned harder than another stays so.
    alpha = np.eye(len(POOL))[0]
    profile = np.linspace(0.0, 0.6, len(dec.layout.slots))
    plan = dec.decode(dec.layout.make(alpha, profile, 0.5))
    kept = [len(v) / len(s) for v, s in zip(plan.kept.values(),
                                            dec.blender.blend(alpha).values())]
    assert kept[0] > kept[len(kept) // 2] > kept[-1]
    with pytest.raises(ValueError, match="FLOPs target is needed"):
        dec.layout.make(alpha, 0.5)


def test_unreachable_target_gives_the_smallest_plan(parts):
    dec = decoder(parts, Targets((0.01,)))
    genome = dec.layout.make(np.ones(len(POOL)), 0.0, 0.01)
    assert dec.flops_ratio(genome) == pytest.approx(dec.min_flops_ratio())


def test_target_seeds_cover_every_cluster_at_every_target_once(parts):
    dec = decoder(parts, Targets((0.3, 0.4, 0.5)))
    clusters = dec.blender.model_clusters()
    assert sorted(i for c in clusters for i in c) == list(range(len(POOL)))
    seeds = dec.target_seeds(100)
    uniform = [n for n, _ in seeds if "-global" not in n]
    reps = {POOL[c[0]] for c in clusters}
    assert {n.split("@")[0] for n in uniform} == reps
    assert len(uniform) == len(reps) * 3
    plans = [tuple(map(tuple, dec.decode(g).to_dict().values())) for _, g in seeds]
    assert len(set(plans)) == len(plans)  # each plan once
    for name, genome in seeds:
        t = float(name.split("@")[1])
        assert t - 0.02 <= dec.flops_ratio(genome) <= t
    few = dec.target_seeds(3)  # every uniform seed even so, and no global profile
    assert [n for n, _ in few] == [n for n, _ in seeds][:len(uniform)] == uniform
    first = [float(n.split("@")[1]) for n in uniform[:3]]
    assert sorted(first) == [0.3, 0.4, 0.5]  # a list cut short still spreads over targets
    filled = dec.target_seeds(len(uniform) + 2)
    assert [n for n, _ in filled] == [n for n, _ in seeds][:len(uniform) + 2]


def test_model_clusters_join_criteria_that_rank_alike_in_every_group():
    rng = np.random.default_rng(0)
    scores = {}
    for g, n in (("a", 16), ("b", 32)):
        x = rng.random(n)
        scores[g] = {"l1": x, "l2": x ** 2, "noise": rng.random(n)}
    table = ScoreTable(["a", "b"], ["l1", "noise", "l2"], scores)
    assert Blender(table, 0.1).model_clusters() == [[0, 2], [1]]


def test_stage_role_gives_each_stage_a_residual_and_an_internal_gene(parts):
    table, gm, _ = parts
    layout = GenomeLayout.build(table, gm, granularity="stage_role")
    assert sorted(layout.slots) == sorted(f"{s}/{r}" for s in ("8x8", "4x4", "2x2")
                                          for r in ("residual", "internal"))
    for name, slot in zip(table.groups, layout.slot_of):
        residual = len(gm[name].producers) > 1
        assert layout.slots[slot].endswith("/residual") == residual


def test_cluster_alpha_genes_set_every_member_and_shorten_the_genome(parts):
    table, gm, cost = parts
    clusters = tuple(tuple(c) for c in Decoder(
        table, GenomeLayout.build(table, gm), cost).blender.model_clusters())
    layout = GenomeLayout.build(table, gm, alpha_genes=clusters)
    assert layout.n_alpha == len(clusters) < len(POOL)
    assert len(layout) == len(clusters) + len(layout.slots)
    k = max(clusters, key=len)[0]  # a criterion sharing its cluster with another
    genome = layout.make(np.eye(len(POOL))[k], 0.4)
    alpha, values = layout.split(genome)
    members = next(c for c in clusters if k in c)
    assert [int(i) for i in np.flatnonzero(alpha)] == list(members)
    assert np.allclose(values, 0.4)


def test_keep_levels_snap_ratio_genes_so_nearby_genomes_share_a_plan(parts):
    table, gm, cost = parts
    dec = Decoder(table, GenomeLayout.build(table, gm, max_ratio=0.8, levels=4), cost)
    alpha = np.eye(len(POOL))[0]
    _, values = dec.layout.split(dec.layout.make(alpha, [0.09, 0.11, 0.29, 0.31] + [0.8] * (
        len(dec.layout.slots) - 4)))
    assert list(values[:4]) == pytest.approx([0.0, 0.2, 0.2, 0.4])  # steps of 0.8 / 4
    a, b = (dec.layout.make(alpha, v) for v in (0.31, 0.35))
    assert dec.decode(a) == dec.decode(b)
    with pytest.raises(ValueError, match="genome.levels"):
        GenomeLayout.build(table, gm, levels=-1)


def test_a_plan_seeds_a_genome_with_its_widths(parts):
    table, gm, cost = parts
    rng = np.random.default_rng(3)
    counts = {g.name: int(rng.integers(max(4, g.size // 5), g.size + 1)) for g in gm}
    plan = Plan({n: np.arange(c) for n, c in counts.items()})
    alpha = [float(c == "bn_gamma") for c in table.criteria]
    free = decoder(parts, None)  # no targets: the widths come back as they were
    assert free.decode(free.plan_genome(plan, alpha)).counts() == counts
    dec = decoder(parts, Targets((0.3, 0.5)))  # targets: the nearest one, widths repaired
    genome = dec.plan_genome(plan, alpha)
    ratio = dec.plan_flops_ratio(plan)
    assert dec.layout.target(genome) == min((0.3, 0.5), key=lambda t: abs(t - ratio))
    assert dec.flops_ratio(genome) <= dec.layout.target(genome)
