"""Starting and stopping real servers for integration tests: bound to 127.0.0.1, each in
its own PID namespace so stopping it (by pid) takes every process it spawned."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def has_avx2() -> bool:
    try:
        return platform.machine() == "x86_64" and " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def heap_checked_env(isa: str = "native") -> dict[str, str]:
    """glibc's heap checks on (an out-of-bounds write aborts at the next free), with oneDNN
    capped at its AVX2 kernels (`isa="AVX2"`, where oneDNN#6035 first showed) or free to
    pick the CPU's best."""
    env = {"MALLOC_CHECK_": "3", "MALLOC_PERTURB_": "165"}
    return env | ({"ONEDNN_MAX_CPU_ISA": "AVX2"} if isa == "AVX2" else {})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated(cmd: list[str]) -> list[str]:
    return ["unshare", "--fork", "--kill-child", "--pid", "--mount-proc", *cmd]


def start(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(isolated(cmd), stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            **kw)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answered (e.g. 401 from a token-protected Ray dashboard)
        except Exception:
            time.sleep(0.3)
    raise TimeoutError(url)


def wait_port_free(port: int, timeout: float = 60.0) -> None:
    """Until nothing answers on 127.0.0.1:port (a killed server's processes may linger)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"port {port} still answers")


def mlflow_server(tmp: Path, port: int) -> subprocess.Popen:
    wait_port_free(port)  # else /health may be answered by a dying predecessor
    proc = start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                  "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
                  "--artifacts-destination", str(tmp / "artifacts"), "--workers", "1"],
                 tmp / f"mlflow-{port}.log", env={**os.environ})
    wait_http(f"http://127.0.0.1:{port}/health", 90, proc)
    return proc


def namespace_pids(proc: subprocess.Popen) -> list[int]:
    """Host pids of every process in the PID namespace that `isolated` gave `proc`."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    if not children:
        return []
    ns = os.readlink(f"/proc/{children[0]}/ns/pid")
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == ns:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def driver_pid(proc: subprocess.Popen) -> int:
    """Host pid of the command `isolated` runs (pid 1 of its namespace)."""
    return int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} for pid {pid}")


def ledger(out_dir: Path) -> list[dict]:
    """The candidates a search under `out_dir` has recorded so far (last line per index)."""
    import json

    records: dict[int, dict] = {}
    for path in out_dir.glob("*/candidates.jsonl"):
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line being written
            records[r["index"]] = r
    return [records[i] for i in sorted(records)]


def mlflow_runs(uri: str, experiment: str = "blendprune", role: str = "search"):
    """(client, parent runs of `role`, candidate runs) of an experiment in a store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=2000)
    parents = [r for r in runs if r.data.tags.get("blendprune.role") == role]
    children = [r for r in runs if r.data.tags.get("blendprune.role") == "candidate"]
    return client, parents, children
