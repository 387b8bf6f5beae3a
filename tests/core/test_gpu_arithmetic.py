"""The TF32 rounding that ``DIFFSEG3D_EMULATE_PRECISION=tf32`` rehearses GPU arithmetic with.

Only the rounding is tested here: installing the emulation is process-wide and irreversible.
"""

import jax.numpy as jnp
import numpy as np

from tests.core.gpu_arithmetic import round_to_tf32

ULP = 2.0**-10  # TF32 keeps 10 mantissa bits: the spacing of its values in [1, 2)


def test_tf32_rounds_to_nearest_with_ties_to_even():
    x = np.array([1.0, 1 + ULP, 1 + 0.4 * ULP, 1 + 0.6 * ULP, 1 + 0.5 * ULP, 1 + 1.5 * ULP,
                  -(1 + 0.6 * ULP), 3.0 * (1 + 0.6 * ULP)], np.float32)
    # In [2, 4) TF32 values are 2 ULP apart: 3 + 1.8 ULP rounds to 3 + 2 ULP.
    expected = [1.0, 1 + ULP, 1.0, 1 + ULP, 1.0, 1 + 2 * ULP, -(1 + ULP), 3.0 + 2 * ULP]
    np.testing.assert_array_equal(np.asarray(round_to_tf32(jnp.asarray(x))),
                                  np.asarray(expected, np.float32))


def test_tf32_relative_error_is_at_most_half_an_ulp():
    x = np.random.default_rng(0).normal(size=10_000).astype(np.float32) * 1e3
    r = np.asarray(round_to_tf32(jnp.asarray(x)))
    assert np.all(r.view(np.uint32) & 0x1FFF == 0)  # 13 low mantissa bits cleared
    rel = np.abs(r - x) / np.abs(x)
    assert rel.max() <= 2.0**-11 and rel.max() > 2.0**-12  # rounding, not truncation or no-op
