"""Fixtures shared by the tests that run grids on a real local Ray."""

import os

import pytest
from diffseg3d.experiments.cluster.environment import forget_cached_ray_token


@pytest.fixture(scope="module")
def local_ray():
    """The in-process Ray that run_grid starts itself (no RAY_ADDRESS); shut down at the end of
    the module, RAY_ADDRESS put back, and Ray's cached token dropped (a later module may connect
    this process to a test cluster with its own token)."""
    saved = os.environ.pop("RAY_ADDRESS", None)
    yield
    import ray

    ray.shutdown()
    forget_cached_ray_token()
    if saved is not None:
        os.environ["RAY_ADDRESS"] = saved
