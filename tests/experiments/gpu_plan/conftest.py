"""The requirement of the TPU-program tests: libtpu in its own folder (`make gpu-plan-deps`),
registered beside the session's requirements (`tests/conftest.py: require`), so that
``@pytest.mark.requires("tpu-plan")`` skips with the install command where it is missing and
fails in CI, which installs it."""

import os

from tests.conftest import _REQUIREMENTS

#: Where `make gpu-plan-deps` installs libtpu (a folder put on PYTHONPATH of the deviceless TPU
#: compiles only; `experiments/gpu_plan/tpu.py`).
TPU_PLAN_SITE = os.environ.get("TPU_PLAN_SITE") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))), ".venv", "tpu-plan-site")


def _tpu_plan_missing() -> str | None:
    if not os.path.isfile(os.path.join(TPU_PLAN_SITE, "libtpu", "libtpu.so")):
        return f"no libtpu in {TPU_PLAN_SITE}"
    return None


_REQUIREMENTS.setdefault("tpu-plan", (_tpu_plan_missing, "make gpu-plan-deps"))
