"""Soak: 500 random and extreme genomes through one resident Evaluator, without a crash,
leaving the base model bit-identical (see soak.py). Run in a child process with glibc's
heap checks on, so a native fault fails this test with its signal instead of killing it."""

import json
import os
import subprocess
import sys

import pytest

from ..helpers import REPO, has_avx2, heap_checked_env

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("isa,channels_last", [("AVX2", True), ("AVX2", False),
                                                ("native", True)])
def test_five_hundred_genomes_in_one_evaluator(isa, channels_last):
    if isa == "AVX2" and not has_avx2():
        pytest.skip("needs an x86_64 CPU with AVX2")
    env = {**os.environ, "PYTHONPATH": str(REPO), **heap_checked_env(isa)}
    args = [] if channels_last else ["--no-channels-last"]
    r = subprocess.run([sys.executable, "-m", "tests.reliability.soak", "--genomes", "500",
                        *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    tail = (r.stdout + r.stderr)[-3000:]
    assert r.returncode == 0, f"soak exited {r.returncode}:\n{tail}"
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["evaluated"] == summary["ok"] == 500, tail
    assert summary["base_changed"] == [], tail
    assert summary["narrowest_layer_at_upper_corner"] == 1, tail  # the extreme was reached
