import pytest

from ..helpers import has_avx2, heap_checked_env


@pytest.fixture(params=["AVX2", "native"])
def onednn_env(request):
    if not has_avx2():
        pytest.skip("needs an x86_64 CPU with AVX2 (the oneDNN kernels of oneDNN#6035)")
    return heap_checked_env(request.param)
