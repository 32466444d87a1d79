"""Whole searches on digits with 2 Ray workers, checked through the MLflow store."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from search.cli import main
from search.pareto import non_dominated

from ..helpers import mlflow_runs

pytestmark = pytest.mark.slow

BUDGET = 16
FAST = ["--set", "search.population=8", "--set", "search.generations=2",
        "--set", "search.workers=2", "--set", "evaluation.finetune_steps=8",
        "--set", "evaluation.bn_batches=4", "--set", "base_training.epochs=12",
        "--set", "final.top_k=1", "--set", "final.epochs=1",
        "--set", "constraints.max_flops_ratio=0.6"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    old = {k: os.environ.get(k) for k in ("BLENDPRUNE_CACHE", "MLFLOW_TRACKING_URI")}
    os.environ["BLENDPRUNE_CACHE"] = str(root / "cache")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield root
    import ray

    ray.shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def check_front(client, parent, children, max_flops_ratio=0.6):
    ok = [c for c in children if c.info.status == "FINISHED"
          and c.data.metrics["flops_ratio"] <= max_flops_ratio]
    pts = np.array([[c.data.metrics["accuracy"], c.data.metrics["flops_ratio"]] for c in ok])
    expected = sorted(ok[i].info.run_id for i in non_dominated(pts, (1.0, -1.0)))
    local = client.download_artifacts(parent.info.run_id, "pareto")
    front = json.loads((Path(local) / "front.json").read_text())["front"]
    assert sorted(r["run_id"] for r in front) == expected
    assert (Path(local) / "front.png").stat().st_size > 10_000
    assert (Path(local) / "front.csv").read_text().count("\n") == len(front) + 1


@pytest.mark.parametrize("algorithm, executor", [
    ("optuna-tpe", "actors"), ("deap-nsga2", "actors"), ("deap-nsga2", "tune"),
    ("deap-steady", "actors"), ("optuna-nsga2", "actors"), ("random", "actors")])
def test_search_records_budget_and_front(algorithm, executor, env, capsys, monkeypatch):
    uri = f"sqlite:///{env / algorithm}-{executor}.db"
    out_dir = env / f"runs-{algorithm}-{executor}"
    assert main(["search", *FAST, "--set", f"search.algorithm={algorithm}",
                 "--set", f"search.executor={executor}",
                 "--tracking-uri", uri, "--output-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "mlflow ui --backend-store-uri" in out
    assert out.count("gen ") == 2  # one progress line per generation
    # not a terminal: one plain line per finished candidate, counting up to the budget
    done = [int(m) for m in re.findall(rf"^\[\s*(\d+)/{BUDGET}\] candidate \d+: ", out, re.M)]
    assert done == list(range(1, BUDGET + 1))
    client, parents, children = mlflow_runs(uri)
    assert len(parents) == 1 and len(children) == BUDGET
    assert sum(c.info.status == "FINISHED" for c in children) == BUDGET
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(int(c.data.tags["blendprune.index"]) for c in children) == list(range(BUDGET))
    for c in children:
        assert {"accuracy", "flops", "param_count", "flops_ratio", "params_ratio",
                "eval_seconds", "on_front"} <= set(c.data.metrics)
        # the run spans the evaluation itself, not the instant it was logged
        span = (c.info.end_time - c.info.start_time) / 1000
        assert span == pytest.approx(c.data.metrics["eval_seconds"], abs=0.01)
        assert c.data.tags["blendprune.generation"] in {"0", "1"}
    check_front(client, parent, children)
    on_front = [c for c in children if c.data.tags["blendprune.on_front"] == "true"]
    assert on_front and all(c.data.metrics["on_front"] == 1.0 for c in on_front)
    assert sorted(int(c.data.tags["blendprune.front_rank"]) for c in on_front) == \
        list(range(len(on_front)))
    assert "| front rank |" in parent.data.tags["mlflow.note.content"]
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert f"#/experiments/{exp.experiment_id}/runs?searchFilter=" in out
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "criteria")}
    assert arts == {"criteria/correlation.png", "criteria/clusters.json",
                    "criteria/prunability.json"}
    hv = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert [m.step for m in hv] == [0, 1] and hv[1].value >= hv[0].value - 1e-12
    if executor == "actors":
        assert "workers: 2 started, 0 restarted, 0 candidates requeued" in out
    if algorithm == "optuna-tpe":  # the default: the final stage and the CLI around it
        model_dir = client.download_artifacts(parent.info.run_id, "final/0")
        from pruning import load_pruned

        model, meta = load_pruned(Path(model_dir) / "model.pt")
        assert model(__import__("torch").zeros(2, 1, 8, 8)).shape == (2, 10)
        # one short epoch: without BatchNorm re-estimated first it lost ~0.2 here
        final = json.loads(Path(client.download_artifacts(
            parent.info.run_id, "final/summary.json")).read_text())["final"][0]
        assert final["test_accuracy"] > final["holdout_accuracy"] - 0.08, final
        finals = [c for c in children if c.data.tags["blendprune.final_rank"] != ""]
        assert [c.data.tags["blendprune.final_rank"] for c in finals] == ["0"]
        # the final model, logged with a signature and registered: one version per search
        import mlflow.pytorch

        name = f"digits-resnet20-{parent.info.run_id[:8]}"
        (version,) = client.search_model_versions(f"name = '{name}'")
        mlflow.set_tracking_uri(uri)
        logged = mlflow.pytorch.load_model(f"models:/{name}/{version.version}")
        assert logged(__import__("torch").zeros(2, 1, 8, 8)).shape == (2, 10)
        assert main(["register", parent.info.run_id, "--rank", "0", "--name", "picked",
                     "--tracking-uri", uri]) == 0
        assert "registered rank 0 as picked version 1" in capsys.readouterr().out
        assert main(["register", parent.info.run_id, "--rank", "3", "--name", "picked",
                     "--tracking-uri", uri]) == 2
        assert main(["front", parent.info.run_id, "--tracking-uri", uri,
                     "--plot", str(env / "f.png")]) == 0
        assert "accuracy" in capsys.readouterr().out and (env / "f.png").exists()
        monkeypatch.chdir(env)  # --plot alone: the default name, here
        assert main(["front", parent.info.run_id, "--tracking-uri", uri, "--plot"]) == 0
        assert (env / f"front-{parent.info.run_id}.png").exists()
        assert main(["export", parent.info.run_id, "--rank", "0", "--out",
                     str(env / "m.pt"), "--tracking-uri", uri]) == 0


def test_nan_candidates_are_failed_and_search_completes(env, capsys):
    uri = f"sqlite:///{env / 'nan'}.db"
    assert main(["search", *FAST, "--set", "evaluation.lr=1e12", "--set",
                 "search.algorithm=random", "--tracking-uri", uri,
                 "--output-dir", str(env / "runs-nan")]) == 0
    client, parents, children = mlflow_runs(uri)
    assert len(children) == BUDGET
    assert all(c.info.status == "FAILED" for c in children)
    assert all("DivergedError" in c.data.params["failure"] for c in children)


def test_search_at_flops_targets_prunes_every_candidate_onto_one(env, capsys):
    uri = f"sqlite:///{env / 'targets'}.db"
    assert main(["search", *FAST, "--set", "constraints.flops_targets=[0.3,0.5]",
                 "--tracking-uri", uri, "--output-dir", str(env / "runs-targets")]) == 0
    client, parents, children = mlflow_runs(uri)
    assert sum(c.info.status == "FINISHED" for c in children) == BUDGET
    ratios = [c.data.metrics["flops_ratio"] for c in children]
    assert all(0.28 <= r <= 0.3 or 0.48 <= r <= 0.5 for r in ratios), ratios
    seeds = {c.data.params["seed"] for c in children} - {""}
    assert {s.split("@")[1] for s in seeds} == {"0.3", "0.5"}  # every target seeded
    check_front(client, parents[0], children)


def test_successive_halving_evaluates_in_full_the_cheap_rungs_best_at_each_target(env, capsys):
    uri = f"sqlite:///{env / 'halving'}.db"
    out_dir = env / "runs-halving"
    # Three criteria: generation 0 holds every cluster at every target, which with the
    # whole pool (7 clusters here) would be 14 of the 16 candidates.
    assert main(["search", *FAST, "--set", "constraints.flops_targets=[0.3,0.5]",
                 "--set", "criteria.pool=[l1,bn_gamma,hrank]",
                 "--set", "search.algorithm=deap-nsga2", "--set", "search.halving=3",
                 "--tracking-uri", uri,
                 "--output-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "(best of 24 cheap)" in out and "rank agreement with the full score" in out
    client, parents, children = mlflow_runs(uri)
    assert sum(c.info.status == "FINISHED" for c in children) == BUDGET  # cheap ones apart
    from search.rundir import RunDir

    (run,) = (RunDir(p) for p in out_dir.iterdir())
    rungs = run.rung_records()
    # generation 0: 6 seeds in full, 3 x 2 random cheaply; generation 1: 3 x 8 cheaply
    assert [sum(r["generation"] == g for r in rungs) for g in (0, 1)] == [6, 24]
    assert all(r["status"] == "ok" and 0 <= r["accuracy"] <= 1 for r in rungs)
    full = [r for r in run.records() if r["generation"] == 1]
    for t in (0.3, 0.5):
        mine = [r["genome"] for r in full if t - 0.02 <= r["result"]["flops_ratio"] <= t]
        best = sorted((r for r in rungs if r["generation"] == 1
                       and t - 0.02 <= r["flops_ratio"] <= t), key=lambda r: -r["accuracy"])
        assert len(mine) == 4  # each target keeps its share
        cut = best[len(mine) - 1]["accuracy"]  # ties at the cut may go either way
        assert all(r["accuracy"] >= cut for r in best if r["genome"] in mine)
        assert all(r["genome"] in mine for r in best if r["accuracy"] > cut)
    local = client.download_artifacts(parents[0].info.run_id, "rungs/halving.json")
    report = json.loads(Path(local).read_text())
    assert report["cheap_evaluations"] == 30 and set(report["rank_agreement"]) == {"0.3", "0.5"}


def test_screening_leaves_dropped_clusters_out_of_every_candidate(env, capsys):
    uri = f"sqlite:///{env / 'screen'}.db"
    out_dir = env / "runs-screen"
    assert main(["search", *FAST, "--set", "search.screen=true",
                 "--set", "search.screen_margin=0.0", "--tracking-uri", uri,
                 "--output-dir", str(out_dir)]) == 0
    assert "screening:" in capsys.readouterr().out
    client, parents, children = mlflow_runs(uri)
    assert sum(c.info.status == "FINISHED" for c in children) == BUDGET  # screens not counted
    local = client.download_artifacts(parents[0].info.run_id, "criteria/screening.json")
    verdict = json.loads(Path(local).read_text())
    assert verdict["kept"] and verdict["dropped"]  # margin 0: only the best (or a tie) stays
    from search.rundir import RunDir

    (run,) = (RunDir(p) for p in out_dir.iterdir())
    criteria = run.config()["criteria"]["pool"]
    gone = [criteria.index(c) for n in verdict["dropped"] for c in verdict["clusters"][n]]
    genomes = [r["genome"] for r in run.records()]
    assert len(genomes) == BUDGET and all(g[i] == 0.0 for g in genomes for i in gone)
    kept = [criteria.index(c) for n in verdict["kept"] for c in verdict["clusters"][n]]
    assert all(max(g[i] for i in kept) >= 1e-3 for g in genomes)  # never all kept at 0
    assert run.state()["screening"] == verdict  # a resume reuses it


def _cli(*args):
    return [sys.executable, "-m", "search.cli", *args]


def test_resume_after_driver_sigkill(env):
    uri = f"sqlite:///{env / 'resume'}.db"
    out_dir = env / "runs-resume"
    cmd = ["unshare", "--fork", "--kill-child", "--pid", "--mount-proc",
           *_cli("search", *FAST, "--tracking-uri", uri, "--output-dir", str(out_dir))]
    log = open(env / "driver.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parents[2])
    deadline = time.time() + 300
    state = None
    while time.time() < deadline:
        states = list(out_dir.glob("*/state.json"))
        if states:
            try:
                state = json.loads(states[0].read_text())
            except json.JSONDecodeError:
                state = None
            if state and state["completed"] >= 10:  # mid generation 1 (population 8)
                break
        assert proc.poll() is None, (env / "driver.log").read_text()
        time.sleep(0.2)
    assert state and state["completed"] >= 10
    proc.send_signal(signal.SIGKILL)  # unshare --kill-child takes the whole PID namespace
    proc.wait(timeout=30)
    run_dir = states[0].parent
    before = [json.loads(ln) for ln in (run_dir / "candidates.jsonl").read_text().splitlines()
              if ln.strip()]
    done_before = {r["index"]: r["genome"] for r in before}
    assert 10 <= len(done_before) < BUDGET
    resumed = subprocess.run(
        ["unshare", "--fork", "--kill-child", "--pid", "--mount-proc",
         *_cli("resume", str(run_dir))], capture_output=True, text=True, timeout=600,
        cwd=Path(__file__).resolve().parents[2])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    client, parents, children = mlflow_runs(uri)
    assert len(parents) == 1 and len(children) == BUDGET
    indices = sorted(int(c.data.tags["blendprune.index"]) for c in children)
    assert indices == list(range(BUDGET))
    records = {}
    for ln in (run_dir / "candidates.jsonl").read_text().splitlines():
        r = json.loads(ln)
        records[r["index"]] = r
    assert len(records) == BUDGET
    for i, genome in done_before.items():  # not re-evaluated: same genome, same result
        assert records[i]["genome"] == genome
    check_front(client, parents[0], children)


def test_search_streams_an_image_folder(env, capsys):
    """A JPEG folder of two image sizes, streamed by DataLoader workers at a 32-pixel crop."""
    from ..pruning.test_folder import write_folder

    root = write_folder(env / "jpegs", per_class=(20, 6))
    uri = f"sqlite:///{env / 'folder'}.db"
    assert main(["search", *FAST, "--set", "search.algorithm=random",
                 "--set", "data.dataset=imagefolder", "--set", f"data.root={root}",
                 "--set", "data.image_size=32", "--set", "data.workers=1",
                 "--set", "data.holdout=9", "--set", "base_training.epochs=4",
                 "--tracking-uri", uri, "--output-dir", str(env / "runs-folder")]) == 0
    assert "Pareto front" in capsys.readouterr().out
    client, parents, children = mlflow_runs(uri)
    assert len(children) == BUDGET
    assert sum(c.info.status == "FINISHED" for c in children) == BUDGET
    final = client.download_artifacts(parents[0].info.run_id, "final/0")
    from pruning import load_pruned

    model, meta = load_pruned(Path(final) / "model.pt")
    assert meta["input_shape"] == [1, 3, 32, 32]
    assert model(__import__("torch").zeros(2, 3, 32, 32)).shape == (2, 3)
