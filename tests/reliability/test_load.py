"""Load: 200 candidates on digits with 2 workers; none fails, the driver's memory stays flat.

Workers run with glibc's heap checks on and, where the CPU has it, oneDNN capped at its
AVX2 kernels: the configuration in which oneDNN#6035 corrupted workers' heaps."""

import json

import pytest

from ..helpers import driver_pid, has_avx2, heap_checked_env, ledger, mlflow_runs, rss_mb, stop
from .searches import FAST, budget, launch, wait_for

pytestmark = pytest.mark.slow


def test_two_hundred_candidates_with_steady_driver_memory(tmp_path, cache):
    n = 200
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    out = tmp_path / "runs"
    proc = launch(["search", *FAST, *budget(20, 10, 2), "--set", "evaluation.bn_batches=1",
                   "--set", "search.algorithm=random", "--set", "final.top_k=0",
                   "--tracking-uri", uri, "--output-dir", str(out)], tmp_path, cache,
                  env=heap_checked_env("AVX2" if has_avx2() else "native"))
    log = tmp_path / "search.log"
    try:
        wait_for(lambda: len(ledger(out)) >= 50, proc, 900, "50 candidates", log)
        pid = driver_pid(proc)
        at_50, now_50 = rss_mb(pid), rss_mb(pid, "VmRSS")
        wait_for(lambda: len(ledger(out)) >= n, proc, 1500, f"{n} candidates", log)
        at_200, now_200 = rss_mb(pid), rss_mb(pid, "VmRSS")
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
    growth, growth_now = at_200 / at_50 - 1, now_200 / now_50 - 1
    print(json.dumps({"peak_rss_mb_at_50": round(at_50, 1),
                      "peak_rss_mb_at_200": round(at_200, 1), "peak_growth": round(growth, 4),
                      "rss_mb_at_50": round(now_50, 1), "rss_mb_at_200": round(now_200, 1),
                      "rss_growth": round(growth_now, 4)}))
    assert growth <= 0.20, f"driver peak RSS grew {growth:.1%}: {at_50:.0f} -> {at_200:.0f} MB"
    assert growth_now <= 0.20, f"driver RSS grew {growth_now:.1%}: {now_50:.0f} -> {now_200:.0f}"
    _, parents, kids = mlflow_runs(uri)
    assert len(parents) == 1 and len(kids) == n
    assert sorted(int(k.data.tags["blendprune.index"]) for k in kids) == list(range(n))
    # A healthy run fails no candidate: a crashed worker would be a FAILED child.
    failed = {r["index"]: r["result"]["reason"] for r in ledger(out)
              if r["result"]["status"] != "ok"}
    assert not failed, f"{len(failed)} candidates failed: {failed}"
    assert all(k.info.status == "FINISHED" for k in kids)
