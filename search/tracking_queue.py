"""MLflow calls off the driver's critical path: one sender thread behind a bounded queue.

A search acknowledges a candidate once its fsynced ledger line is written; sending it to
MLflow happens here, so a slow or absent tracking server never idles a worker. When the
queue is full the candidate simply stays unsent in the ledger (`run_id` null), and
`Tracker.send_missing` sends it at the end of the search or on `blendprune resume`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .tracking import Tracker

__all__ = ["TrackingQueue"]

Job = Callable[[], object]


class TrackingQueue:
    """Runs tracking jobs in order on one thread; `submit` never blocks."""

    def __init__(self, tracker: Tracker, save: Callable[[dict[str, Any]], None],
                 maxsize: int = 256) -> None:
        self.tracker, self.save = tracker, save
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize)
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="tracking", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job()
            finally:
                self.jobs.task_done()
        self.jobs.task_done()

    def submit(self, job: Job) -> bool:
        """Queue `job`; False (and nothing queued) when the queue is full."""
        try:
            self.jobs.put_nowait(job)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def candidate(self, record: dict[str, Any]) -> bool:
        """Send one ledger record; once sent, its run id is saved to the ledger too."""
        def send() -> None:
            # Skipped while the server is away, or once send_missing has sent it: the next
            # send_missing (each generation, the search's end, `resume`) catches it up.
            if record["run_id"] is None and not self.tracker.down:
                record["run_id"] = self.tracker.candidate(record)
                if record["run_id"] is not None:
                    self.save(record)

        return self.submit(send)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued job ran (at most `timeout` s); True if they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.jobs.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()
