"""Run inside its own PID namespace (mount-proc): start blendprune's local Ray, run a task,
print every TCP socket that a process of this namespace listens on, as JSON."""

import json
import os
import socket
import struct
from pathlib import Path

from search.ray_session import init_ray


def _address(hex_addr: str) -> str:
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{int(port, 16)}"
    words = struct.unpack("<4I", raw)  # /proc/net/tcp6 stores four little-endian words
    return f"{socket.inet_ntop(socket.AF_INET6, struct.pack('>4I', *words))}:{int(port, 16)}"


def listening() -> list[dict[str, str]]:
    owner = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owner[target[8:-1]] = name
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in owner:  # LISTEN, owned by this namespace
                out.append({"process": owner[f[9]], "address": _address(f[1])})
    return out


if __name__ == "__main__":
    import ray

    init_ray(None, 2)
    ray.get(ray.remote(lambda: 1).remote())
    print(json.dumps(listening()))
