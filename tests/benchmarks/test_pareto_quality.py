import multiprocessing as mp
from argparse import Namespace

import pytest
import torch

from benchmarks import pareto_quality
from benchmarks.base_models import weights_digest
from benchmarks.pareto_quality import (
    Store,
    evaluated,
    final_jobs,
    finetune_seeds,
    parser,
    picks,
    status,
    summarize,
)


def rec(acc, flops, status="ok"):
    return {"accuracy": acc, "bn_accuracy": acc - 0.1, "flops_ratio": flops, "status": status,
            "seconds": 2.0, "plan": {"g": [0]}}


ARGS = Namespace(targets=[0.3, 0.5], seeds=[0, 1], final_seeds=2, final_steps=800,
                 methods=["optuna-tpe-seeded", "random"], modes=["cdp"])


def test_picks_and_paired_differences_share_fine_tune_seeds():
    searches = {
        "optuna-tpe-seeded/0": {"method": "optuna-tpe-seeded", "seed": 0,
                         "records": [rec(0.90, 0.29), rec(0.95, 0.31), rec(0.88, 0.5)]},
        "optuna-tpe-seeded/1": {"method": "optuna-tpe-seeded", "seed": 1,
                         "records": [rec(0.91, 0.3), rec(0.87, 0.49)]},
        "random/0": {"method": "random", "seed": 0, "records": [rec(0.8, 0.295)]},
        "random/1": {"method": "random", "seed": 1, "records": [rec(0.7, 0.2)]},
    }
    singles = [{"method": "single:l1", "records": [rec(0.85, 0.3), rec(0.86, 0.5)]},
               {"method": "single:fpgm", "records": [rec(0.84, 0.3), rec(0.87, 0.49)]}]
    chosen = picks(ARGS, searches, singles)
    assert chosen["optuna-tpe-seeded/0/0.3"]["accuracy"] == 0.90  # 0.31 is over the target
    assert "random/1/0.3" not in chosen  # 0.2 is below the window
    assert chosen["single/0/0.5"]["accuracy"] == 0.87
    assert finetune_seeds(ARGS, "optuna-tpe-seeded/1/0.3") == [2, 3]
    assert finetune_seeds(ARGS, "single/0/0.3") == [0, 1, 2, 3]
    finals = {}
    for key in chosen:
        for f in finetune_seeds(ARGS, key):
            base = 0.80 if key.startswith("single") else 0.82
            finals[f"800:{key}/{f}"] = base + 0.001 * f  # the same batches: the same shift
    del finals["800:optuna-tpe-seeded/1/0.5/3"]  # a final still to come: left out, not mispaired
    # a training mode at a target: keyed like the single criterion (no search seed)
    finals.update({"800:cdp/0/0.3/0": 0.83, "800:cdp/0/0.3/1": 0.84})
    spent = {"800:cdp/0/0.3/0": 100.0, "800:cdp/0/0.3/1": 120.0}
    out = summarize(ARGS, searches, singles, finals, chosen, base_test=0.92,
                    mode_seconds=spent)
    assert out["matched"]["0.3"]["cdp"]["n"] == 2 and "cdp" not in out["matched"]["0.5"]
    assert out["compute_seconds"]["cdp"] == 110.0 and "cdp" not in out["hypervolume"]
    diff = out["paired_vs_best_single"]
    assert diff["0.3"]["mean"] == pytest.approx(0.02) and diff["0.3"]["n"] == 4
    assert diff["0.3"]["lo"] == pytest.approx(0.02)  # identical differences: no spread
    assert diff["0.5"]["n"] == 3
    assert out["matched"]["0.3"]["single"]["n"] == 4
    # every method against the single criterion, on its own seeds: random/0 paired on 0, 1
    assert out["paired_vs_single"]["0.3"]["random"]["n"] == 2
    assert out["paired_vs_single"]["0.3"]["optuna-tpe-seeded"] == diff["0.3"]
    assert out["paired_vs_single"]["0.3"]["cdp"]["mean"] == pytest.approx(0.835 - 0.8005)
    assert out["candidates"] == {"optuna-tpe-seeded": 2.5, "random": 1, "single": 4}
    assert out["compute_seconds"]["optuna-tpe-seeded"] == 5.0 and out["paused_candidates"] == 0
    searches["optuna-tpe-seeded/1"]["records"].append(rec(0.5, 0.9))
    searches["optuna-tpe-seeded/1"]["records"][-1]["seconds"] = 2400.0  # stopped during a CI run
    out = summarize(ARGS, searches, singles, finals, chosen, base_test=0.92,
                    mode_seconds=spent)
    assert out["compute_seconds"]["optuna-tpe-seeded"] == 6.0 and out["paused_candidates"] == 1
    assert out["hypervolume"]["optuna-tpe-seeded"] > out["hypervolume"]["random"]
    # bn_accuracy = accuracy - 0.1 here: adaptive BN ranks exactly as the fine-tune does
    assert out["bn_vs_finetuned_spearman"]["0.3"] == pytest.approx(1.0)


def test_a_mode_on_the_searchs_picks_is_keyed_by_search_seed():
    args = Namespace(**{**vars(ARGS), "modes": ["dcff-searched"]})
    searches = {f"optuna-tpe-seeded/{s}": {"method": "optuna-tpe-seeded", "seed": s,
                                    "records": [rec(0.9, 0.3), rec(0.9, 0.5)]} for s in (0, 1)}
    singles = [{"method": "single:l1", "records": [rec(0.85, 0.3), rec(0.86, 0.5)]}]
    chosen = picks(args, searches, singles)
    # search seed 1 with its own fine-tune seeds 2, 3; a seed-0 key for seed 1 is not read
    finals = {"800:dcff-searched/1/0.3/2": 0.81, "800:dcff-searched/1/0.3/3": 0.83,
              "800:dcff-searched/0/0.3/3": 0.10}
    out = summarize(args, searches, singles, finals, chosen, base_test=0.92,
                    mode_seconds={"800:dcff-searched/1/0.3/2": 50.0})
    assert out["matched"]["0.3"]["dcff-searched"]["n"] == 2
    assert out["matched"]["0.3"]["dcff-searched"]["mean"] == pytest.approx(0.82)
    assert out["compute_seconds"]["dcff-searched"] == 50.0


def test_progress_is_keyed_by_the_base_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(pareto_quality, "PROGRESS", tmp_path)
    model = torch.nn.Linear(3, 2)
    before = weights_digest(model)
    args = parser().parse_args(["--dataset", "cifar10"])
    Store(args, before).put("searches", "optuna-tpe-seeded/0", {"records": []})
    with torch.no_grad():
        model.weight[0, 0] += 1e-3  # a retrained base
    after = weights_digest(model)
    assert after != before
    assert Store(args, after).data["searches"] == {}  # starts afresh
    assert list(Store(args, before).data["searches"]) == ["optuna-tpe-seeded/0"]  # resumes


def test_a_final_repeated_by_plan_and_seed_is_run_once_or_reused():
    same, other = {"g": [0, 1]}, {"g": [1]}
    chosen = {"single/0/0.3": {"plan": same}, "optuna-tpe-seeded/0/0.3": {"plan": {"g": [0, 1]}},
              "optuna-tpe-seeded/1/0.3": {"plan": same}, "random/1/0.3": {"plan": other}}
    # single's seed 2 is stored: optuna-tpe-seeded/1's seed 2 takes it; seeds 0, 1 run once for two
    todo, reused = final_jobs(ARGS, chosen, {"800:single/0/0.3/2": 0.91})
    assert reused == {"800:optuna-tpe-seeded/1/0.3/2": 0.91}
    runs = {(tuple(sorted(keys)), seed) for keys, _, seed in todo}
    assert runs == {(("800:optuna-tpe-seeded/0/0.3/0", "800:single/0/0.3/0"), 0),
                    (("800:optuna-tpe-seeded/0/0.3/1", "800:single/0/0.3/1"), 1),
                    (("800:optuna-tpe-seeded/1/0.3/3", "800:single/0/0.3/3"), 3),
                    (("800:random/1/0.3/2",), 2), (("800:random/1/0.3/3",), 3)}
    assert all((plan == other) == keys[0].startswith("800:random") for keys, plan, _ in todo)


def test_status_shows_partial_finals_against_the_single_criterion(tmp_path, monkeypatch):
    monkeypatch.setattr(pareto_quality, "PROGRESS", tmp_path)
    args = parser().parse_args(["--dataset", "cifar10", "--targets", "0.3", "0.5",
                                "--seeds", "0", "--methods", "optuna-tpe-seeded", "--modes"])
    store = Store(args, "abc")
    store.data["searches"]["optuna-tpe-seeded/0"] = {"method": "optuna-tpe-seeded", "seed": 0,
                                              "records": [rec(0.9, 0.3)]}
    store.data["singles"] = [{"method": "single:l1", "records": [rec(0.85, 0.3)]}]
    store.data["finals"] = {"800:optuna-tpe-seeded/0/0.3/0": 0.83,
                            "800:optuna-tpe-seeded/0/0.3/1": 0.85,
                            "800:single/0/0.3/0": 0.82, "800:single/0/0.3/1": 0.82}
    lines = status(args, store, 0.9).splitlines()
    assert "1 of 1 searches, 4 finals" in lines[0]
    row = next(x for x in lines if x.startswith("| **optuna-tpe-seeded**"))
    # two finals at 0.3 (t interval on 1 degree of freedom), nothing at 0.5 yet
    assert row.startswith("| **optuna-tpe-seeded** | 84.00 [71.29, 96.71] n=2; +2.00 [-10.71, "
                          "+14.71] | – |"), row


def test_stored_evaluations_are_found_by_plan_first_one_kept():
    a = {**rec(0.8, 0.3), "plan": {"g": [0, 1], "h": [2]}}
    b = {**rec(0.7, 0.5), "plan": {"g": [0]}}
    again = {**rec(0.8, 0.3), "plan": {"g": [0, 1], "h": [2]}, "seconds": 9.0}
    data = {"singles": [{"records": [a]}],
            "searches": {"x/0": {"records": [again, b, {"accuracy": 0.1}]}}}  # no plan: skipped
    found = evaluated(data)
    assert set(found) == {((0, 1), (2,)), ((0,),)}
    assert found[((0, 1), (2,))] is a and found[((0,),)] is b


def test_store_keeps_what_two_writers_put_and_the_modes_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(pareto_quality, "PROGRESS", tmp_path)
    args = parser().parse_args(["--dataset", "cifar10"])
    a, b = Store(args, "abc"), Store(args, "abc")  # two processes on one progress file
    a.put("finals", "800:x/0/0.3/0", 0.8)
    b.put("mode_seconds", "800:cdp/0/0.3/0", 12.5)
    b.put("singles", None, [{"method": "single:l1", "records": []}])
    a.put("finals", "800:x/0/0.3/1", 0.9)
    again = Store(args, "abc").data
    assert again["finals"] == {"800:x/0/0.3/0": 0.8, "800:x/0/0.3/1": 0.9}
    assert again["mode_seconds"] == {"800:cdp/0/0.3/0": 12.5}
    assert again["singles"][0]["method"] == "single:l1"
    assert [f.name for f in tmp_path.iterdir() if f.suffix == ".tmp"] == []


def test_a_mode_pairs_on_the_first_search_seed_when_it_is_not_zero():
    args = Namespace(**{**vars(ARGS), "seeds": [1, 2]})
    searches = {f"optuna-tpe-seeded/{s}": {"method": "optuna-tpe-seeded", "seed": s,
                                    "records": [rec(0.9, 0.3)]} for s in (1, 2)}
    singles = [{"method": "single:l1", "records": [rec(0.85, 0.3)]}]
    chosen = picks(args, searches, singles)
    finals = {"800:cdp/1/0.3/2": 0.83, "800:cdp/1/0.3/3": 0.84,
              "800:single/0/0.3/2": 0.80, "800:single/0/0.3/3": 0.80}
    out = summarize(args, searches, singles, finals, chosen, base_test=0.92, mode_seconds={})
    assert out["matched"]["0.3"]["cdp"]["n"] == 2
    assert out["paired_vs_single"]["0.3"]["cdp"]["mean"] == pytest.approx(0.035)


def _put_many(args, tag):
    store = Store(args, "abc", quiet=True)
    for i in range(40):
        store.put("finals", f"800:{tag}/0/0.3/{i}", float(i))


def test_processes_writing_one_store_at_once_lose_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(pareto_quality, "PROGRESS", tmp_path)  # forked children inherit it
    args = parser().parse_args(["--dataset", "cifar10"])
    procs = [mp.get_context("fork").Process(target=_put_many, args=(args, tag))
             for tag in ("a", "b", "c")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    assert len(Store(args, "abc", quiet=True).data["finals"]) == 120
