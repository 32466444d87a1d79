"""Why a candidate's worker died: its fatal signal and the first line of its error log.

A worker that dies natively (a segfault, or glibc aborting on a corrupted heap) reaches
the driver as Ray's ActorDiedError, which says only that the process is gone. The
worker's own stderr log says why: glibc's message ("corrupted double-linked list"), then
Ray's "*** SIGABRT received ***" banner and Python's faulthandler stack. `death_reason`
turns Ray's error text into "SIGABRT: corrupted double-linked list", reading that log on
this node or, on a cluster, through Ray's state API.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["death_reason", "describe_crash", "worker_log"]

_BANNER = re.compile(r"\*\*\* (SIG[A-Z]+) received at time")
_FATAL = re.compile(r"Fatal Python error: (.+)")
_FRAME = re.compile(r'File "(.+)", line (\d+) in (\S+)')
_FATAL_SIGNALS = {"Segmentation fault": "SIGSEGV", "Aborted": "SIGABRT", "Bus error": "SIGBUS",
                  "Floating-point exception": "SIGFPE", "Floating point exception": "SIGFPE",
                  "Illegal instruction": "SIGILL"}
_ACTOR_DIED = ("ActorDiedError", "The actor died", "actor died unexpectedly")


def describe_crash(err_log: str) -> str | None:
    """"SIGABRT: <glibc's message>" or "SIGSEGV in file.py:N function" from a dead worker's
    stderr; None when the log shows no fatal signal."""
    lines = err_log.splitlines()
    for first, line in enumerate(lines):
        if banner := _BANNER.search(line):
            signal = banner.group(1)
            break
        if fatal := _FATAL.search(line):
            signal = _FATAL_SIGNALS.get(fatal.group(1).strip(), "fatal error")
            break
    else:
        return None
    if signal == "SIGABRT":  # abort() follows the message that explains it
        for line in reversed(lines[max(0, first - 5):first]):
            if line.strip():
                return f"{signal}: {line.strip()[:300]}"
    for line in lines[first:]:
        frame = _FRAME.search(line)
        if frame:
            return f"{signal} in {Path(frame.group(1)).name}:{frame.group(2)} {frame.group(3)}"
    return signal


def worker_log(pid: int, node_ip: str | None = None) -> str:
    """The stderr log of worker `pid`: from this node's Ray session, else via the state
    API (a cluster with a dashboard); "" when neither has it."""
    try:
        import ray._private.worker as ray_worker

        logs = Path(ray_worker.global_worker.node.get_logs_dir_path())
        found = sorted(logs.glob(f"worker-*-{pid}.err"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1].read_text(errors="replace")
    except (AttributeError, OSError):
        pass
    try:
        from ray.util.state import get_log

        return "".join(get_log(pid=pid, node_ip=node_ip, suffix="err", tail=400, timeout=10))
    except Exception:  # no dashboard, node gone, log rotated: say what Ray said instead
        return ""


def death_reason(error_text: str) -> str:
    """A one-line reason for a failed trial from Ray's error text (the last failure in it)."""
    text = error_text.rsplit("Failure # ", 1)[-1]
    if any(marker in text for marker in _ACTOR_DIED):
        pid = re.search(r"^\s*pid: (\d+)", text, re.M)
        ip = re.search(r"^\s*ip: (\S+)", text, re.M)
        crash = describe_crash(worker_log(int(pid.group(1)), ip.group(1) if ip else None)) \
            if pid else None
        if crash:
            return crash
        detail = re.search(r"Worker exit detail: ([^.]+\.)", text)
        return "worker died" + (f": {detail.group(1)}" if detail else "") + \
            " (no fatal signal in its log: killed by SIGKILL or the OOM killer?)"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "trial failed"
