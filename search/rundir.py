"""A search's local folder: the source of truth that makes resume lose nothing.

    runs/<name>-<stamp>/
        config.yaml        the resolved config
        state.json         strategy state, MLflow ids, counts (replaced atomically)
        candidates.jsonl   one line per finished candidate, appended and fsynced
        rungs.jsonl        cheap-rung scores of successive halving, one line each
        final/<rank>/      exported models of the final stage

A candidate is first appended to the ledger, then sent to MLflow; a record whose
`run_id` is null has not reached the tracking server yet and is re-sent later.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RunDir"]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def create(cls, root: str | os.PathLike[str], name: str, config: dict[str, Any]) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{name}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path(root) / f"{name}-{stamp}-{n}"
        path.mkdir(parents=True)
        run = cls(path)
        _atomic_write(path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        return run

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def exists(self) -> bool:
        return (self.path / "config.yaml").exists()

    def config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_path.read_text())

    def state(self) -> dict[str, Any]:
        p = self.path / "state.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def save_state(self, state: dict[str, Any]) -> None:
        _atomic_write(self.path / "state.json", json.dumps(state))

    def records(self) -> list[dict[str, Any]]:
        """Finished candidates, latest entry per index (updates rewrite `run_id`)."""
        p = self.path / "candidates.jsonl"
        if not p.exists():
            return []
        by_index: dict[int, dict[str, Any]] = {}
        for line in p.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write: its candidate is re-run
            by_index[rec["index"]] = rec
        return [by_index[i] for i in sorted(by_index)]

    def append(self, record: dict[str, Any]) -> None:
        """Add a ledger line (fsynced); the tracking thread appends too, hence the lock."""
        with self._lock:
            self._append(record, "candidates.jsonl")

    def append_rung(self, record: dict[str, Any]) -> None:
        """Add one cheap-rung score (successive halving) to its own ledger."""
        with self._lock:
            self._append(record, "rungs.jsonl")

    def rung_records(self) -> list[dict[str, Any]]:
        p = self.path / "rungs.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def _append(self, record: dict[str, Any], name: str) -> None:
        p = self.path / name
        torn = False
        if p.exists() and p.stat().st_size > 0:
            with open(p, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        with open(p, "a") as f:
            f.write(("\n" if torn else "") + json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
