"""Starting or joining Ray for a search: a private local Ray on loopback, or a cluster.

`ray.address: null` always starts a new local Ray; `auto` joins the cluster the last
`ray start` on this machine recorded; anything else is that cluster's address. Joining a
cluster that does not answer fails within seconds, naming the address (Ray itself would
retry for minutes).
"""

from __future__ import annotations

import logging
import os
import socket

import ray

__all__ = ["RayUnavailable", "check_ray", "init_ray", "loopback_only", "resolve"]

PROBE_SECONDS = 5.0


class RayUnavailable(RuntimeError):
    """The Ray cluster to join cannot be found or reached."""


def _join_address(address: str | None) -> str | None:
    """The cluster to join: `address`, else RAY_ADDRESS (as under `ray job submit`)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def resolve(address: str) -> str:
    """host:port of the cluster `address` names; `auto` is the one the last `ray start`
    on this machine recorded (never just any Ray process found running)."""
    from ray._private.services import find_bootstrap_address

    if address == "auto":
        found = find_bootstrap_address(None)
        if not found:
            raise RayUnavailable("ray.address: 'auto' found no cluster started with "
                                 "`ray start` on this machine")
        return str(found)
    return address.removeprefix("ray://")


def check_ray(address: str | None) -> str | None:
    """The cluster to join, checked to answer within seconds; None when a new local Ray
    will be started."""
    target = _join_address(address)
    if target is None or target == "local":
        return None
    resolved = resolve(target)
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except (OSError, ValueError) as exc:
        where = resolved if resolved == target else f"{resolved} (from {target!r})"
        raise RayUnavailable(f"ray.address: cannot reach a Ray cluster at {where}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    return target if target.startswith("ray://") else resolved


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Join `address` (or RAY_ADDRESS), else start a local Ray bound to 127.0.0.1 with
    the dashboard off.

    The local Ray is always a new one (`address="local"`): left to itself, `ray.init()`
    joins whatever cluster the last `ray start` on this machine recorded in
    /tmp/ray/ray_current_cluster, another user's or another search's included.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    target = check_ray(address)
    if target is not None:
        ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
    else:
        loopback_only()
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
                 log_to_driver=False)


def loopback_only() -> None:
    """Make a local Ray advertise (and so bind) 127.0.0.1, not the machine's address.

    Ray maps 127.0.0.1 to the routable address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
    is 0, and it reads that variable once, at import; set both for this process and for
    the processes Ray starts.
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
