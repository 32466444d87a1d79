"""Starting or joining Ray for a search: a private local Ray on loopback, or a cluster."""

from __future__ import annotations

import logging
import os

import ray

__all__ = ["init_ray"]


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Join `address` (or RAY_ADDRESS, as under `ray job submit`), else start a local Ray
    bound to 127.0.0.1 with the dashboard off.

    The local Ray is always a new one (`address="local"`): left to itself, `ray.init()`
    joins whatever cluster the last `ray start` on this machine recorded in
    /tmp/ray/ray_current_cluster, another user's or another search's included.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"], logging_level=logging.WARNING,
                 log_to_driver=False)
    else:
        _loopback_only()
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
                 log_to_driver=False)


def _loopback_only() -> None:
    """Make a local Ray advertise (and so bind) 127.0.0.1, not the machine's address.

    Ray maps 127.0.0.1 to the routable address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
    is 0, and it reads that variable once, at import; set both for this process and for
    the processes Ray starts.
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
