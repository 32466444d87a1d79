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

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
CACHE = Path(os.environ.get("BLENDPRUNE_CACHE", Path.home() / ".cache" / "blendprune"))


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
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


def write_result(name: str, payload: dict[str, Any]) -> Path:
    payload = {"benchmark": name, "command": "python " + shlex.join(sys.argv),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), **payload}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path
