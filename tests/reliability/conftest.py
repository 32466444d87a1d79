import pytest


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One BLENDPRUNE_CACHE for every search of the reliability tests."""
    return tmp_path_factory.mktemp("cache")
