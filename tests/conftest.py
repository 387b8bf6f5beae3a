"""Session-wide test settings: CPU JAX, quiet Ray, no network services unless a test starts one."""

import glob
import importlib
import os
import shutil
import sys

import pytest
from diffseg3d.experiments.cluster.environment import set_ray_env_defaults

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


def _pdflatex_missing() -> str | None:
    return None if shutil.which("pdflatex") else "pdflatex not found on PATH"


def _postgresql_missing() -> str | None:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb") and not shutil.which("initdb"):
        return "PostgreSQL server binaries (initdb) not found"
    return _import_missing("psycopg2")


def _import_missing(*modules: str) -> str | None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            return f"cannot import {module} ({err})"
    return None


#: Name -> (why it is missing or None, how to install it). `.ci/run` installs every one of them.
_REQUIREMENTS = {
    "pdflatex": (_pdflatex_missing, "make tex (Debian: apt-get install texlive-latex-recommended)"),
    "postgresql": (_postgresql_missing, "Debian: apt-get install postgresql"),
    "monai": (
        lambda: _import_missing("torch", "monai.metrics"),
        'pip install -e ".[test]" (torch==2.13.0 CPU build and MONAI)',
    ),
    "ray": (lambda: _import_missing("ray", "ray.tune"), 'pip install -e ".[dev]"'),
}


def in_ci() -> bool:
    """True under CI (`CI=true`, as `.ci/run` and CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(*names: str) -> None:
    """Stop the calling test when one of `names` (keys of `_REQUIREMENTS`) is missing: in CI
    (`CI=true`) a failure naming what is missing, since CI installs all of them and a silent skip
    would hide a broken install step; elsewhere a skip saying how to install it. Also used as
    the marker `@pytest.mark.requires(*names)`."""
    for name in names:
        if name not in _REQUIREMENTS:
            known = sorted(_REQUIREMENTS)
            raise ValueError(f"require: unknown requirement {name!r}; known: {known}")
        check, how = _REQUIREMENTS[name]
        missing = check()
        if missing is None:
            continue
        if in_ci():
            pytest.fail(f"{name} is required in CI and missing: {missing}", pytrace=False)
        pytest.skip(f"{name} missing: {missing}; install it with: {how}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """`@pytest.mark.requires("pdflatex", ...)` on a test, class or module: `require` them."""
    for mark in item.iter_markers("requires"):
        require(*mark.args)
