"""A search against a real `mlflow server` on 127.0.0.1, read back with the client."""

import os
import subprocess
import sys

import pytest

from ..helpers import REPO, free_port, mlflow_server, stop

pytestmark = pytest.mark.slow

FAST = ["--set", "search.population=4", "--set", "search.generations=2",
        "--set", "evaluation.finetune_steps=4", "--set", "evaluation.bn_batches=2",
        "--set", "base_training.epochs=10", "--set", "final.top_k=1",
        "--set", "final.epochs=1", "--set", "criteria.pool=[l1,fpgm,bn_gamma]"]


def test_search_against_mlflow_server(tmp_path):
    port = free_port()
    server = mlflow_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BLENDPRUNE_CACHE": str(tmp_path / "cache")}
    try:
        out = subprocess.run(
            ["unshare", "--fork", "--kill-child", "--pid", "--mount-proc", sys.executable,
             "-m", "search.cli", "search", *FAST, "--tracking-uri", uri,
             "--output-dir", str(tmp_path / "runs")],
            capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("blendprune")
        runs = client.search_runs([exp.experiment_id])
        parent = [r for r in runs if r.data.tags["blendprune.role"] == "search"][0]
        children = [r for r in runs if r.data.tags["blendprune.role"] == "candidate"]
        assert len(children) == 8
        front = client.download_artifacts(parent.info.run_id, "pareto/front.json")
        assert os.path.getsize(front) > 0
        shown = subprocess.run([sys.executable, "-m", "search.cli", "front",
                                parent.info.run_id, "--tracking-uri", uri,
                                "--plot", str(tmp_path / "front.png")],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path,
                               env={**env, "PYTHONPATH": str(REPO)})
        assert shown.returncode == 0, shown.stderr
        assert "accuracy" in shown.stdout and (tmp_path / "front.png").exists()
    finally:
        stop(server)
