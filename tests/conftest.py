"""Session-wide test settings: CPU JAX, quiet Ray, no network services unless a test starts one."""

import os
import sys

import pytest
from diffseg3d.experiments.ray_env import set_ray_env_defaults

os.environ.setdefault("JAX_PLATFORMS", "cpu")
set_ray_env_defaults()
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri(monkeypatch):
    """`mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI (and keeps a module global):
    undo both after each test, so a later test's runner never logs into another test's store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    tracking_utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if tracking_utils is not None:
        tracking_utils._tracking_uri = None
