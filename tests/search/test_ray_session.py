"""Joining Ray never hangs: `auto` means the cluster the last `ray start` recorded, and a
cluster that does not answer is one line naming it, exit 1, before anything is written."""

import time

import pytest

from search.cli import main
from search.ray_session import RayUnavailable, check_ray

from ..helpers import free_port


@pytest.fixture
def stale_cluster_file(tmp_path, monkeypatch):
    """What `ray start --head` leaves behind when its processes are killed without
    `ray stop`: ray_current_cluster naming a head that is gone."""
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    port = free_port()
    (ray_tmp / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # Ray reads $RAY_TMPDIR/ray/
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return port


@pytest.mark.parametrize("address", ["auto", "127.0.0.1:{port}"])
def test_a_dead_cluster_fails_fast_naming_it(stale_cluster_file, address, tmp_path, capsys):
    address = address.format(port=stale_cluster_file)
    out = tmp_path / "runs"
    start = time.perf_counter()
    code = main(["search", "--set", f"ray.address={address}", "--output-dir", str(out),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert code == 1 and time.perf_counter() - start < 60
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"127.0.0.1:{stale_cluster_file}" in err
    assert err.startswith("error: ray.address: cannot reach a Ray cluster at")
    assert not out.exists()  # nothing half-written


def test_auto_without_a_recorded_cluster_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(RayUnavailable, match="'auto' found no cluster started with `ray start`"):
        check_ray("auto")


def test_a_local_ray_needs_no_check(stale_cluster_file):
    assert check_ray(None) is None and check_ray("local") is None
