"""Faults injected for real while a search runs: a Ray worker SIGKILLed mid-evaluation,
the MLflow server stopped (and restarted, or not), out-of-memory candidates, corrupted
caches. Each search is a real `blendprune` process in its own PID namespace."""

import json
import os
import signal
from pathlib import Path

import pytest

from ..helpers import (
    cmdline,
    free_port,
    ledger,
    mlflow_runs,
    mlflow_server,
    namespace_pids,
    stop,
)
from .searches import FAST, assert_exactly_once, budget, launch, wait_for

pytestmark = pytest.mark.slow


# What a worker busy with a candidate calls itself (its process title).
BUSY = {"actors": "EvaluatorActor.evaluate", "tune": "Trainable.train"}


@pytest.mark.parametrize("executor", ["actors", "tune"])
def test_worker_killed_mid_evaluation_is_retried(tmp_path, cache, executor):
    n = 12
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    out = tmp_path / "runs"
    proc = launch(["search", *FAST, *budget(6, 2, 60), "--set", f"search.executor={executor}",
                   "--tracking-uri", uri, "--output-dir", str(out)], tmp_path, cache)
    log = tmp_path / "search.log"

    def kill_a_busy_worker():
        if len(ledger(out)) < 2:
            return False
        for pid in namespace_pids(proc):
            title = cmdline(pid).split(" ")[0]  # e.g. ray::EvaluatorActor.evaluate
            if title.startswith("ray::") and title.endswith(BUSY[executor]):
                os.kill(pid, signal.SIGKILL)  # the actor dies inside evaluate()
                return True
        return False

    try:
        wait_for(kill_a_busy_worker, proc, 400, "a worker busy evaluating", log)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
    records = ledger(out)
    assert len(records) == n and len({r["trial_id"] for r in records}) == n
    assert all(r["result"]["status"] == "ok" for r in records)  # the retry succeeded
    if executor == "tune":
        errors = list((out).glob("*/tune/*/candidate_*/error.txt"))
        assert errors, "Tune recorded no failed attempt: the kill did not hit a trial"
    else:
        text = log.read_text()
        assert "requeued a candidate after its worker died" in text, text[-3000:]
        assert "workers: 2 started, 1 restarted, 1 candidates requeued" in text, text[-3000:]
    _, parents, kids = mlflow_runs(uri)
    assert len(parents) == 1 and len(kids) == n
    assert_exactly_once(kids, n)
    assert all(k.info.status == "FINISHED" for k in kids)


def _server_search(tmp_path, cache, n_pop, n_gen):
    """A fresh `mlflow server` and a search logging to it; the URI carries credentials the
    server ignores and blendprune must never show."""
    port = free_port()
    server = mlflow_server(tmp_path, port)
    proc = launch(["search", *FAST, *budget(n_pop, n_gen, 40), "--tracking-uri",
                   f"http://alice:s3cret@127.0.0.1:{port}", "--output-dir",
                   str(tmp_path / "runs")], tmp_path, cache)
    return port, server, proc, tmp_path / "search.log", tmp_path / "runs"


def test_tracking_server_stopped_and_restarted_loses_nothing(tmp_path, cache):
    n_pop, n_gen = 8, 3
    n = n_pop * n_gen
    port, server, proc, log, out = _server_search(tmp_path, cache, n_pop, n_gen)
    try:
        wait_for(lambda: len(ledger(out)) >= 3, proc, 400, "3 candidates", log)
        stop(server)
        down_at = len(ledger(out))
        wait_for(lambda: len(ledger(out)) >= down_at + 4, proc, 300,
                 "candidates finished while the server is down", log)
        unsent = [r["index"] for r in ledger(out) if r["run_id"] is None]
        server = mlflow_server(tmp_path, port)  # same port, same store
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
        text = log.read_text()
        assert "warning: tracking server unavailable" in text
        assert len(unsent) >= 4
        _, parents, kids = mlflow_runs(f"http://127.0.0.1:{port}")
        assert len(parents) == 1 and len(kids) == n
        assert_exactly_once(kids, n)  # the buffered ones arrived, none twice
        assert all(r["run_id"] for r in ledger(out))
        params = parents[0].data.params
        assert f"--tracking-uri http://alice:***@127.0.0.1:{port}" in text
        assert "s3cret" not in text and not any("s3cret" in v for v in params.values())
    finally:
        stop(proc)
        stop(server)


def test_tracking_server_that_never_returns_then_resume_pushes(tmp_path, cache):
    n_pop, n_gen = 6, 2
    n = n_pop * n_gen
    port, server, proc, log, out = _server_search(tmp_path, cache, n_pop, n_gen)
    try:
        wait_for(lambda: len(ledger(out)) >= 2, proc, 400, "2 candidates", log)
        stop(server)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
    text = log.read_text()
    assert "candidates are not in MLflow yet" in text and "blendprune resume" in text
    records = ledger(out)
    assert len(records) == n and sum(r["run_id"] is None for r in records) >= n - 2
    run_dir = next(out.iterdir())
    server = mlflow_server(tmp_path, port)
    try:
        resumed = launch(["resume", str(run_dir)], tmp_path, cache, "resume.log")
        assert resumed.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
        client, parents, kids = mlflow_runs(f"http://127.0.0.1:{port}")
        assert len(parents) == 1 and len(kids) == n
        assert_exactly_once(kids, n)
        front = client.download_artifacts(parents[0].info.run_id, "pareto/front.json",
                                          str(tmp_path))
        assert json.loads(Path(front).read_text())["front"]
        assert len(ledger(out)) == n  # nothing was evaluated again
    finally:
        stop(server)


def _search_on(fault_model, tmp_path, cache, timeout, executor="actors"):
    """8 random candidates of `tests.fault_models:<fault_model>`; (uri, run folder root)."""
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    out = tmp_path / "runs"
    proc = launch(["search", *FAST, *budget(4, 2, 4), "--set", "search.algorithm=random",
                   "--set", f"search.executor={executor}",
                   "--set", f"model.arch=tests.fault_models:{fault_model}",
                   "--set", "constraints.max_flops_ratio=1.0",
                   "--tracking-uri", uri, "--output-dir", str(out)], tmp_path, cache)
    try:
        assert proc.wait(timeout=timeout) == 0, (tmp_path / "search.log").read_text()[-3000:]
    finally:
        stop(proc)
    return uri, out


@pytest.mark.parametrize("executor", ["actors", "tune"])
def test_out_of_memory_candidates_fail_and_the_search_completes(tmp_path, cache, executor):
    n = 8
    uri, _ = _search_on("memory_hungry_resnet20", tmp_path, cache, 600, executor)
    _, _, kids = mlflow_runs(uri)
    assert_exactly_once(kids, n)
    failed = [k for k in kids if k.info.status == "FAILED"]
    assert failed and len(failed) < n
    assert all(k.data.params["failure"].startswith("OutOfMemoryError: ") for k in failed)
    assert all("can't allocate memory" in k.data.params["failure"] for k in failed)


@pytest.mark.parametrize("executor", ["actors", "tune"])
def test_native_crash_is_recorded_with_its_signal_and_message(tmp_path, cache, executor):
    n = 8
    uri, out = _search_on("heap_corrupting_resnet20", tmp_path, cache, 900, executor)
    records = ledger(out)
    assert len(records) == n
    failed = [r["result"] for r in records if r["result"]["status"] == "failed"]
    assert failed and len(failed) < n  # the narrow candidates died, the others finished
    expected = "SIGABRT: free(): double free detected in tcache 2"
    assert all(r["reason"] == expected for r in failed), [r["reason"] for r in failed]
    _, _, kids = mlflow_runs(uri)
    assert_exactly_once(kids, n)
    assert sorted(k.data.params["failure"] for k in kids if k.info.status == "FAILED") == \
        [expected] * len(failed)
