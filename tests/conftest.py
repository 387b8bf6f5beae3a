"""Session-wide test settings: CPU JAX, quiet Ray, no network services unless a test starts one."""

import os
import sys

import pytest
from diffseg3d.experiments.ray_env import set_ray_env_defaults

os.environ.setdefault("JAX_PLATFORMS", "cpu")
set_ray_env_defaults()
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


#: The tracking URI the session started with (`make test` unsets it).
_SESSION_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri():
    """`mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI and keeps a module global, also
    when a session- or module-scoped fixture calls it: after each test put both back as the
    session began, so a later test's runner never logs into another test's store."""
    yield
    tracking_utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if tracking_utils is not None:
        tracking_utils.set_tracking_uri(None)
    if _SESSION_TRACKING_URI is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = _SESSION_TRACKING_URI
