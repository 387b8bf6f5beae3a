"""Session-wide test settings: CPU JAX, quiet Ray, no network services unless a test starts one."""

import glob
import importlib
import os
import shutil
import sys

import pytest
from diffseg3d.experiments.cluster.environment import (
    forget_cached_ray_token,
    set_ray_env_defaults,
)

#: `pytester`: tests of this file's hooks run small pytest sessions (tests/test_require.py).
pytest_plugins = ["pytester"]

os.environ.setdefault("JAX_PLATFORMS", "cpu")
set_ray_env_defaults()
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


#: Ray's process-wide settings a test can leave changed (a local `ray.init` exports
#: RAY_AUTH_MODE=token; cluster fixtures set the address and token), as the session began.
RAY_PROCESS_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                    "RAY_TMPDIR")
_SESSION_RAY_ENV = {key: os.environ.get(key) for key in RAY_PROCESS_VARS}

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


@pytest.fixture(autouse=True, scope="module")
def _ray_state_per_module():
    """After each test module: disconnect a Ray driver it left, put Ray's variables back as the
    session began, and make Ray read them afresh (it caches the auth mode and token per process;
    `forget_cached_ray_token`). So no module's Ray settings reach the next one, whatever the
    selection or order of the modules."""
    yield
    if "ray" not in sys.modules:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()
    for key, value in _SESSION_RAY_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    forget_cached_ray_token()


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


#: Where `make gpu-plan-deps` installs the CUDA PJRT plugin (a folder put on PYTHONPATH of the
#: deviceless GPU compiles only; `experiments/gpu_plan/targets.py`).
GPU_PLAN_SITE = os.environ.get("GPU_PLAN_SITE") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv", "gpu-plan-site")


def _gpu_plan_missing() -> str | None:
    if not os.path.isdir(os.path.join(GPU_PLAN_SITE, "jax_plugins", "xla_cuda12")):
        return f"no CUDA PJRT plugin in {GPU_PLAN_SITE}"
    return None


#: Where `make gpu-plan-deps` installs libtpu (a folder put on PYTHONPATH of the deviceless TPU
#: compiles only; `experiments/gpu_plan/tpu.py`).
TPU_PLAN_SITE = os.environ.get("TPU_PLAN_SITE") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv", "tpu-plan-site")


def _tpu_plan_missing() -> str | None:
    if not os.path.isfile(os.path.join(TPU_PLAN_SITE, "libtpu", "libtpu.so")):
        return f"no libtpu in {TPU_PLAN_SITE}"
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
    "nnunet": (lambda: _import_missing("torch", "nnunetv2"),
               'pip install -e ".[nnunet]" (nnunetv2 and the torch==2.13.0 CPU build)'),
    "gpu-plan": (_gpu_plan_missing, "make gpu-plan-deps"),
    "tpu-plan": (_tpu_plan_missing, "make gpu-plan-deps"),
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


#: In CI a skip whose reason names one of these is a failure too (a `skipif` or `importorskip`
#: written without `require`): CI installs all of them.
_CI_REQUIRED_WORDS = ("pdflatex", "postgresql", "monai", "torch", "gpu-plan", "tpu-plan",
                      "nnunet")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and in_ci() and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2])
    if any(word in reason.lower() for word in _CI_REQUIRED_WORDS):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where it must run: {reason}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """`@pytest.mark.requires("pdflatex", ...)` on a test, class or module: `require` them."""
    for mark in item.iter_markers("requires"):
        require(*mark.args)
