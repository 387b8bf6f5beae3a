"""Fixtures that keep the core tests exact on a GPU as on the CPU (``make test-gpu``).

- ``highest_precision``: float32 convs and matmuls traced inside the test run at
  ``Precision.HIGHEST``. A GPU runs them in TF32 by default (10-bit mantissa, relative error up
  to 2^-11 per operand), which breaks ``atol=1e-5`` comparisons of two conv forms; XLA:CPU
  computes float32 at full precision whatever the setting, so on the CPU the tests are exactly as
  strict as without the fixture.
- ``cpu_backend``: ``jax.debug.callback`` copies its operands to a CPU device; with
  ``JAX_PLATFORMS=cuda`` there is none, so tests that record what the network sees through a
  callback skip, saying to list ``cpu`` (``JAX_PLATFORMS=cuda,cpu``), instead of crashing.

``DIFFSEG3D_EMULATE_PRECISION=tf32`` (or ``bf16``) rehearses the GPU's arithmetic on the CPU:
every float32 conv/matmul not pinned to HIGHEST rounds its operands first
(``tests/core/gpu_arithmetic.py``). A test that compares two forms without the pin then fails
here as it would on a GPU.
"""

import os

import jax
import pytest

_EMULATE = os.environ.get("DIFFSEG3D_EMULATE_PRECISION")
if _EMULATE:
    from tests.core.gpu_arithmetic import emulate_reduced_precision

    emulate_reduced_precision(_EMULATE)


@pytest.fixture
def highest_precision():
    """Run the test's float32 convs and matmuls at full float32 (``Precision.HIGHEST``)."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture
def cpu_backend():
    """Skip unless a CPU backend exists (``jax.debug.callback`` places its operands on one)."""
    try:
        jax.local_devices(backend="cpu")  # the look-up jax.debug.callback makes
    except RuntimeError:  # "Unknown backend cpu" when JAX_PLATFORMS does not list it
        pytest.skip(
            "jax.debug.callback needs a CPU device: list cpu in JAX_PLATFORMS "
            "(e.g. JAX_PLATFORMS=cuda,cpu)"
        )
