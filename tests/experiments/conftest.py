"""Fixtures shared by the tests that run grids on a real local Ray."""

import os

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """The in-process Ray that run_grid starts itself (no RAY_ADDRESS); shut down at the end of
    the module, RAY_ADDRESS put back."""
    saved = os.environ.pop("RAY_ADDRESS", None)
    yield
    import ray

    ray.shutdown()
    if saved is not None:
        os.environ["RAY_ADDRESS"] = saved
