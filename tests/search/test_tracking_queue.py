"""The driver hands MLflow calls to one background thread: submitting never waits on the
server, records reach MLflow (and their run ids the ledger) in order, and a hung server
costs a worker nothing."""

import socket
import threading
import time

import pytest

from search.rundir import RunDir
from search.tracking import Tracker
from search.tracking_queue import TrackingQueue

from ..helpers import mlflow_runs


def record(i):
    return {"index": i, "trial_id": f"t{i}", "genome": [0.5], "generation": 0, "seed": None,
            "run_id": None, "result": {"accuracy": 0.5, "flops": 10, "params": 3,
                                       "flops_ratio": 0.5, "params_ratio": 0.5, "plan": {},
                                       "timings": {"total": 1.0}, "status": "ok",
                                       "reason": ""}}


def test_records_reach_mlflow_and_their_run_ids_the_ledger(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    tracker = Tracker(uri, "q")
    tracker.start("search", {}, "")
    run = RunDir(tmp_path)
    sender = TrackingQueue(tracker, run.append)
    records = [record(i) for i in range(5)]
    for r in records:
        run.append(r)
        assert sender.candidate(r)
    assert sender.drain(timeout=60)
    sender.close()
    assert [r["run_id"] is not None for r in run.records()] == [True] * 5
    _, _, kids = mlflow_runs(uri, "q")
    assert sorted(int(k.data.tags["blendprune.index"]) for k in kids) == list(range(5))


@pytest.fixture
def hung_server():
    """Accepts connections and never answers: the worst tracking server there is."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held, stop = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for c in held:
        c.close()
    sock.close()


def test_a_hung_server_never_blocks_the_driver(tmp_path, hung_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracker = Tracker(hung_server, "q")
    tracker.experiment_id, tracker.parent_id = "0", "p"
    run = RunDir(tmp_path)
    sender = TrackingQueue(tracker, run.append, maxsize=8)
    start = time.perf_counter()
    accepted = [sender.candidate(record(i)) for i in range(50)]
    assert time.perf_counter() - start < 0.5  # 50 candidates acknowledged at once
    assert accepted[:8] == [True] * 8 and sender.dropped >= 50 - 9
    # The first send times out and marks the server down; the rest are skipped, not tried.
    assert sender.drain(timeout=30) and tracker.down
    sender.close()
    assert run.records() == []  # nothing was sent, so no run id was written
