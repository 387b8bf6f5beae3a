"""Fixtures shared by the tests that run grids on a real local Ray."""

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
from diffseg3d.experiments.cluster.environment import forget_cached_ray_token

from tests.conftest import RAY_PROCESS_VARS


@pytest.fixture(scope="module")
def local_ray():
    """The in-process Ray that run_grid starts itself (no RAY_ADDRESS), isolated from every
    other Ray on the machine: its own temp folder (RAY_TMPDIR; short, as Ray's unix socket paths
    must stay under 108 bytes) and its own token file (RAY_AUTH_TOKEN_PATH; RAY_AUTH_MODE is left
    unset, so Ray turns token authentication on by itself, as for a user). At the end of the
    module: Ray shut down, every Ray variable put back and Ray's cached auth settings dropped."""
    saved = {key: os.environ.get(key) for key in RAY_PROCESS_VARS}
    temp = Path(tempfile.mkdtemp(prefix="dsl", dir="/tmp"))
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        os.environ.pop(key, None)
    os.environ.update(RAY_TMPDIR=str(temp), RAY_AUTH_TOKEN_PATH=str(token))
    forget_cached_ray_token()
    try:
        yield
    finally:
        import ray

        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        forget_cached_ray_token()
        shutil.rmtree(temp, ignore_errors=True)
