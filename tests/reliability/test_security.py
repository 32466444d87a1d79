"""Security defaults: loopback-only local Ray, weights-only checkpoints, no credentials
in what blendprune prints or sends to MLflow."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from search.redaction import redact

from ..helpers import REPO, isolated

LOOPBACK = re.compile(r"^(127\.0\.0\.1|::ffff:127\.0\.0\.1|::1):\d+$")


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only():
    out = subprocess.run(isolated([sys.executable, "-m", "tests.reliability.listening"]),
                         capture_output=True, text=True, timeout=180, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    sockets = json.loads(out.stdout.strip().splitlines()[-1])
    names = {s["process"] for s in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the scan saw Ray's own servers
    exposed = [s for s in sockets if not LOOPBACK.match(s["address"])]
    assert not exposed, f"listening beyond 127.0.0.1: {exposed}"


@pytest.mark.slow
def test_local_ray_never_joins_a_cluster_recorded_by_ray_start():
    """`ray start` records its cluster in <tmp>/ray/ray_current_cluster, and a bare
    `ray.init()` joins it: blendprune's local Ray must start its own instead."""
    tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # AF_UNIX paths must stay short
    try:
        (tmp / "ray").mkdir()
        (tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")  # nobody there
        code = ("import ray; from search.ray_session import init_ray; init_ray(None, 1); "
                "print(ray.get_runtime_context().gcs_address)")
        out = subprocess.run(isolated([sys.executable, "-c", code]), capture_output=True,
                             text=True, timeout=180, cwd=REPO, env={**os.environ, "TMPDIR":
                                                                    str(tmp)})
        assert out.returncode == 0, out.stderr[-2000:]
        gcs = out.stdout.strip().splitlines()[-1]
        assert LOOPBACK.match(gcs) and gcs != "127.0.0.1:1", gcs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_every_checkpoint_read_is_weights_only():
    calls = []
    for folder in ("pruning", "search"):
        for path in (REPO / folder).rglob("*.py"):
            for line in path.read_text().splitlines():
                if "torch.load(" in line:
                    calls.append((path.name, line.strip()))
    assert calls and all("weights_only=True" in line for _, line in calls), calls


@pytest.mark.parametrize("text, expected", [
    ("http://alice:s3cret@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
    ("https://ghp_token@mlflow.example.com/", "https://***@mlflow.example.com/"),
    ("uri postgresql://u:p%40ss@db/mlflow, s3://k:v@b", "uri postgresql://u:***@db/mlflow, "
                                                       "s3://k:***@b"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("mail me at a@b.c", "mail me at a@b.c"),
])
def test_redact_hides_secrets_in_uris(text, expected):
    assert redact(text) == expected


def test_config_params_are_redacted_before_mlflow(tmp_path):
    from search.config import load_config
    from search.tracking import Tracker

    cfg = load_config("digits", ["tracking.uri=http://alice:s3cret@127.0.0.1:1"])
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "sec")
    parent = tracker.start(cfg.name, cfg.flat(), Path(REPO / "search/presets/digits.yaml")
                           .read_text() + "\n# http://alice:s3cret@127.0.0.1:1\n")
    run = tracker.client.get_run(parent)
    assert run.data.params["tracking.uri"] == "http://alice:***@127.0.0.1:1"
    local = tracker.client.download_artifacts(parent, "config.yaml", str(tmp_path))
    text = Path(local).read_text()
    assert "s3cret" not in text and "alice:***@" in text
    assert not any("s3cret" in v for v in run.data.params.values())
