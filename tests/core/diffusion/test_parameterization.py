"""Network output -> x0_hat (`x0_from_output`): hand values, the clip setting, bad output names."""

import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion import (
    OUTPUTS,
    label_to_mask,
    make_schedule,
    q_sample,
    x0_from_output,
    x0_predictor_from_eps,
)
from diffseg3d.core.diffusion.parameterization import (
    noise_head_shortfall,
    noise_last_step_shortfall,
)


def _eps_for(schedule, x0, x_t, k):
    """The eps that eq. 10 maps back to x0, from the schedule's abar in float64."""
    abar = np.asarray(schedule.alphas_cumprod, np.float64)[k].reshape(-1, 1)
    return (x_t - np.sqrt(abar) * x0) / np.sqrt(1.0 - abar)


def test_eps_mode_clips_only_when_asked():
    schedule = make_schedule(1000, 5)
    k = np.array([1, 3])
    x0 = np.array([[1.5, -2.0, 0.25], [0.9, -1.0, 3.0]])  # out-of-range values on purpose
    x_t = np.array([[0.2, -0.4, 0.1], [0.0, 1.0, -0.5]])
    eps = _eps_for(schedule, x0, x_t, k)
    args = (jnp.asarray(eps, jnp.float32), jnp.asarray(x_t, jnp.float32), jnp.asarray(k))
    raw = x0_from_output(schedule, "eps", *args, clip_x0=False)
    clipped = x0_from_output(schedule, "eps", *args, clip_x0=True)
    np.testing.assert_allclose(raw, x0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        clipped, [[1.0, -1.0, 0.25], [0.9, -1.0, 1.0]], rtol=1e-5, atol=1e-5
    )
    default = x0_from_output(schedule, "eps", *args)  # default keeps the recorded behaviour
    np.testing.assert_array_equal(default, clipped)


@pytest.mark.parametrize("clip_x0", [True, False])
def test_x0_mode_is_two_softmax_minus_one_whatever_the_clip(clip_x0):
    schedule = make_schedule(1000, 5)
    logits = jnp.asarray([[0.0, np.log(3.0)]], jnp.bfloat16)  # softmax (1/4, 3/4)
    x_t = jnp.asarray([[7.0, -7.0]])
    out = x0_from_output(schedule, "x0", logits, x_t, jnp.asarray([2]), clip_x0=clip_x0)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, [[-0.5, 0.5]], atol=1e-2)  # bf16 logits


def test_unknown_output_names_the_value():
    schedule = make_schedule(1000, 5)
    with pytest.raises(ValueError, match="'v'"):
        x0_from_output(schedule, "v", jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.asarray([0]))
    assert OUTPUTS == ("x0", "eps")


@pytest.mark.parametrize("clip_x0", [True, False])
def test_recycling_eps_wrapper_is_x0_from_output(clip_x0):
    schedule = make_schedule(1000, 5)
    x_t = jnp.asarray([[0.3, -0.2, 0.8]])
    k = jnp.asarray([4])
    predict_eps = lambda x, kk: 3.0 * x - 2.0  # noqa: E731  (pushes x0 out of range)
    got = x0_predictor_from_eps(predict_eps, schedule, clip_x0=clip_x0)(x_t, k)
    want = x0_from_output(schedule, "eps", predict_eps(x_t, k), x_t, k, clip_x0=clip_x0)
    np.testing.assert_array_equal(got, want)
    assert (np.abs(np.asarray(got)).max() > 1.0) is not clip_x0


def test_a_head_of_c_minus_one_features_cannot_output_the_noise():
    """The limit `noise_head_shortfall` names, by least squares: a linear head from C - 1 = 8
    features to C = 9 outputs (the quick profile on the phantom) leaves the noise along its
    normal n unpredicted, rms 1/sqrt(C) per element, and eq. 10 at t = T multiplies it by
    sqrt((1 - abar_T)/abar_T) = 157.4 (float64 base schedule). C features reach the noise."""
    schedule = make_schedule(1000, 5)
    num_classes, rng = 9, np.random.default_rng(0)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[999]
    gain = np.sqrt((1 - abar) / abar)
    assert gain == pytest.approx(157.41, abs=0.01)
    x0 = label_to_mask(jnp.asarray(rng.integers(0, num_classes, (1, 2000))), num_classes)
    eps = rng.standard_normal(x0.shape)
    k = jnp.asarray([4])
    x_t = q_sample(schedule, x0, k, jnp.asarray(eps, jnp.float32))
    errors = {}
    for features in (num_classes - 1, num_classes):
        head = rng.standard_normal((features, num_classes))
        best = np.linalg.lstsq(head.T, eps[0].T, rcond=None)[0].T @ head  # closest head output
        x0_hat = x0_from_output(schedule, "eps", jnp.asarray(best[None], jnp.float32), x_t, k,
                                clip_x0=False)
        errors[features] = float(np.sqrt(np.mean((np.asarray(x0_hat) - np.asarray(x0)) ** 2)))
    assert errors[num_classes - 1] == pytest.approx(gain / 3.0, rel=0.1)
    assert errors[num_classes] < 0.05


def test_noise_head_shortfall_names_the_widths_only_for_narrow_noise_heads():
    message = noise_head_shortfall("eps", 8, 9)
    assert "8 features for 9 classes" in message and "157" in message
    assert "channels[0] >= 9" in message
    assert noise_head_shortfall("eps", 9, 9) is None
    assert noise_head_shortfall("x0", 8, 9) is None  # softmax needs only C - 1
    assert noise_head_shortfall("eps", None, 9) is None


def test_last_step_shortfall_speaks_for_fixed_large_noise_models_with_resampled_steps():
    five = make_schedule(1000, 5)
    # Hand values: beta_1 = 1 - abar_251 / abar_1 = 1 - 0.521423 / 0.9999 = 0.47853 (std 0.6918);
    # the last step moves x by sqrt(1 - abar_1) = sqrt(1e-4) = 0.01 per unit of eps_hat.
    message = noise_last_step_shortfall("eps", five, "fixed_large")
    assert message is not None
    assert "adds noise of std 0.692" in message and "move x by only 0.01 eps_hat" in message
    assert "K = 5 steps" in message
    # beta_tilde_1 = (1 - abar_0) / (1 - abar_1) beta_1 = 1e-4: std 0.01, what the step can take.
    assert noise_last_step_shortfall("eps", five, "fixed_small") is None
    assert noise_last_step_shortfall("eps", five, "fixed_large", method="ddim") is None
    assert noise_last_step_shortfall("x0", five, "fixed_large") is None
    # Without resampling beta at t = 2 is 1.2e-4 (std 0.011): no shortfall.
    assert noise_last_step_shortfall("eps", make_schedule(1000, 1000), "fixed_large") is None
    assert noise_last_step_shortfall("eps", make_schedule(1000, 1), "fixed_large") is None
