"""Helpers shared by the benchmark scripts: machine info, data lookup, result writing."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pruning import EvalSettings
from search.config import load_config
from search.resident import eval_settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
CACHE = Path(os.environ.get("BLENDPRUNE_CACHE", Path.home() / ".cache" / "blendprune"))
# Resumable state of long runs (training checkpoints, finished-unit ledgers), committed: each
# session starts from a fresh clone, so only what is in the repo carries a run across sessions.
PROGRESS = REPO / "benchmarks" / "progress"


def candidate_settings(seed: int = 0, **evaluation: object) -> EvalSettings:
    """The candidates' EvalSettings for `evaluation.*` overrides, mapped as a search maps them."""
    overrides = [f"evaluation.{k}={v}" for k, v in evaluation.items()]
    return eval_settings(load_config(None, [*overrides, f"search.seed={seed}"]))


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cifar10_npz(data_root: Path) -> Path | None:
    """Decode the shared JPEG CIFAR-10 once into a cache .npz (outside the repo)."""
    target = CACHE / "cifar10.npz"
    if target.exists():
        return target
    src = data_root / "cifar10-jpeg"
    if not (src / "build_npz.py").exists():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "build_npz.py", str(target)], cwd=src, check=True)
    return target


def command() -> str:
    """This process's command line, as run from the repo root (no machine paths)."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(REPO) and script.suffix == ".py":
        module = ".".join(script.relative_to(REPO).with_suffix("").parts)
        return shlex.join(["python", "-m", module, *sys.argv[1:]])
    return shlex.join(["python", *sys.argv])


def _repo_relative(value: Any) -> Any:
    """Absolute paths near the repo (data roots, say) as paths relative to it."""
    if isinstance(value, dict):
        return {k: _repo_relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_repo_relative(v) for v in value]
    if isinstance(value, str) and value.startswith(str(REPO.parent) + os.sep):
        return os.path.relpath(value, REPO)
    return value


def write_progress(path: Path, data: Any) -> None:
    """Write a progress file so that a run stopped mid-write leaves the previous one whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    payload = {"benchmark": name, "command": command(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
               **_repo_relative(payload)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path
