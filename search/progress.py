"""Progress a person can follow: a live bar on a terminal, one plain line per finished
candidate elsewhere (CI logs, `ray job submit`, a file)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress"]


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Candidates done out of `total`, the best accuracy within the budget, failures and
    the time left, from `done` already finished (a resumed search)."""

    def __init__(self, total: int, done: int = 0, stream: TextIO | None = None) -> None:
        self.total, self.done, self.failed = total, done, 0
        self.best: float | None = None
        self.stream = stream or sys.stdout
        self.start, self.first = time.time(), done
        self.bar: Any = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="cand", file=self.stream,
                            dynamic_ncols=True, smoothing=0.1)

    def eta(self) -> float:
        rate = (time.time() - self.start) / max(self.done - self.first, 1)
        return rate * (self.total - self.done)

    def update(self, index: int, result: dict[str, Any], feasible: bool) -> None:
        """One finished candidate."""
        self.done += 1
        ok = result["status"] == "ok"
        self.failed += not ok
        if ok and feasible and (self.best is None or result["accuracy"] > self.best):
            self.best = result["accuracy"]
        best = "-" if self.best is None else f"{self.best:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"best {best}  failed {self.failed}", refresh=False)
            self.bar.update(1)
            return
        what = (f"acc {result['accuracy']:.4f}  FLOPs {result['flops_ratio']:.3f}" if ok
                else "failed")
        print(f"[{self.done:>{len(str(self.total))}}/{self.total}] candidate {index}: {what}  "
              f"best within budget {best}  failed {self.failed}  eta {_clock(self.eta())}",
              file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """A line that must not tear the bar."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
