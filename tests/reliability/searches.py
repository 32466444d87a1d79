"""Running real `blendprune` searches for the fault tests: each in its own PID namespace,
sharing one cache so the digits base model is trained once per session."""

import os
import subprocess
import sys
import time

from ..helpers import REPO, isolated

FAST = ["--set", "search.workers=2", "--set", "evaluation.bn_batches=4",
        "--set", "base_training.epochs=12", "--set", "final.top_k=1",
        "--set", "final.epochs=1", "--set", "constraints.max_flops_ratio=0.6"]


def budget(population, generations, steps):
    return ["--set", f"search.population={population}", "--set",
            f"search.generations={generations}", "--set", f"evaluation.finetune_steps={steps}"]


def launch(args, tmp, cache, log_name="search.log", env=None):
    env = {**os.environ, "BLENDPRUNE_CACHE": str(cache), "PYTHONPATH": str(REPO), **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp / log_name, "w")
    return subprocess.Popen(isolated([sys.executable, "-m", "search.cli", *args]), cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, proc, timeout, what, log):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"search exited ({proc.returncode}) before {what}:\n"
                                 + log.read_text()[-3000:])
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n" + log.read_text()[-3000:])


def assert_exactly_once(kids, n):
    indices = sorted(int(c.data.tags["blendprune.index"]) for c in kids)
    assert indices == list(range(n)), indices
