"""`diffusion.time_input`: what the network is given for step index k, checked by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion import make_schedule, model_time
from diffseg3d.core.diffusion.schedule import TIME_INPUTS, resample


def test_index_gives_k_and_fraction_gives_t_over_T_for_five_steps():
    """K = 5 of T = 1000: t_k = round(linspace(1, 1000, 5)) = round(1, 250.75, 500.5, 750.25,
    1000) = 1, 251, 500 (half to even), 750, 1000; index gives k = 0..4 itself."""
    k = jnp.arange(5)
    index = make_schedule(1000, 5, time_input="index")
    fraction = make_schedule(1000, 5, time_input="fraction")
    np.testing.assert_array_equal(np.asarray(jax.jit(model_time)(index, k)), [0, 1, 2, 3, 4])
    np.testing.assert_allclose(np.asarray(jax.jit(model_time)(fraction, k)),
                               [0.001, 0.251, 0.5, 0.75, 1.0], rtol=1e-7)
    assert model_time(index, k).dtype == jnp.float32
    assert make_schedule(1000, 5).time_input == "fraction"


def test_table3c_mismatch_a_1000_step_model_sampled_with_5_steps():
    """Trained with K = 1000, sampled with K = 5: under "index" the sampler's inputs 0..4 are
    the training inputs of t = 1..5 (almost clean masks); under "fraction" they are the training
    inputs of the same noise levels t_k = 1, 251, 500, 750, 1000."""
    for time_input, trained_rows in (("index", [0, 1, 2, 3, 4]),
                                     ("fraction", [0, 250, 499, 749, 999])):
        train = make_schedule(1000, 1000, time_input=time_input)
        sample = resample(train, 5)
        assert sample.time_input == time_input
        np.testing.assert_array_equal(np.asarray(model_time(sample, jnp.arange(5))),
                                      np.asarray(model_time(train, jnp.asarray(trained_rows))))


def test_unknown_time_input_is_named():
    assert TIME_INPUTS == ("fraction", "index")
    with pytest.raises(ValueError, match="'step'"):
        make_schedule(1000, 5, time_input="step")
