import platform
from pathlib import Path

import pytest


def _has_avx2() -> bool:
    try:
        return platform.machine() == "x86_64" and " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.fixture(params=["AVX2", "native"])
def onednn_env(request):
    """glibc's heap checks on (an out-of-bounds write aborts at the next free), with oneDNN
    capped at its AVX2 kernels or free to pick the CPU's best."""
    if not _has_avx2():
        pytest.skip("needs an x86_64 CPU with AVX2 (the oneDNN kernels of oneDNN#6035)")
    env = {"MALLOC_CHECK_": "3", "MALLOC_PERTURB_": "165"}
    return env | ({"ONEDNN_MAX_CPU_ISA": "AVX2"} if request.param == "AVX2" else {})
