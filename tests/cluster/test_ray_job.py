"""A real Ray head on 127.0.0.1 and a tiny search submitted with `ray job submit`."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from ..helpers import BIN, REPO, free_port, start, stop, wait_http

pytestmark = pytest.mark.slow


def test_ray_job_submit_runs_a_search(tmp_path):
    port, dash = free_port(), free_port()
    ray_tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # AF_UNIX paths must stay short
    head = start([str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
                  "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                  f"--dashboard-port={dash}", "--num-cpus=2", "--include-dashboard=true",
                  f"--temp-dir={ray_tmp}"],
                 tmp_path / "head.log",
                 env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    address = f"http://127.0.0.1:{dash}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": address}
    try:
        wait_http(f"{address}/api/version", 120, head)
        db = tmp_path / "store.db"
        runtime_env = {"env_vars": {"BLENDPRUNE_CACHE": str(tmp_path / "cache"),
                                    "OMP_NUM_THREADS": "1"},
                       "excludes": [".venv", "runs", "mlruns", "*.db", ".git"]}
        submit = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", address, "--no-wait",
             "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--",
             str(BIN / "python"), "-m", "search.cli", "search",
             "--set", "search.population=4", "--set", "search.generations=1",
             "--set", "evaluation.finetune_steps=2", "--set", "evaluation.bn_batches=2",
             "--set", "base_training.epochs=5", "--set", "final.top_k=0",
             "--set", "criteria.pool=[l1,fpgm]",
             "--set", f"output_dir={tmp_path / 'runs'}", "--tracking-uri", f"sqlite:///{db}"],
            capture_output=True, text=True, timeout=180, env=env)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submit.stdout + submit.stderr).group(0)
        deadline, status = time.time() + 420, ""
        while time.time() < deadline:
            status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address,
                                     job_id], capture_output=True, text=True, env=env)
            status = (status.stdout + status.stderr).lower()
            if any(f"' {s}" in status for s in ("succeeded", "failed", "stopped")):
                break
            time.sleep(2)
        logs = subprocess.run([str(BIN / "ray"), "job", "logs", "--address", address, job_id],
                              capture_output=True, text=True, env=env)
        logs = logs.stdout + logs.stderr
        assert "' succeeded" in status, status + logs
        assert "Pareto front" in logs
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        exp = client.get_experiment_by_name("blendprune")
        runs = client.search_runs([exp.experiment_id])
        assert sum(r.data.tags["blendprune.role"] == "candidate" for r in runs) == 4
        assert sum(r.data.tags["blendprune.role"] == "search" for r in runs) == 1
    finally:
        stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
