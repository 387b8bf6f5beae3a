"""Recycling (eq. 3-5, 8-11): stop-gradient, x_t built from the prediction, last-step rule."""

import jax
import jax.numpy as jnp
import numpy as np
from diffseg3d.core.diffusion import (
    eps_from_x0,
    label_to_mask,
    make_schedule,
    next_step_index,
    q_sample,
    recycled_noisy_mask,
    x0_predictor_from_eps,
)

B, X, Y, C = 2, 3, 4, 3


def _inputs(seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    label = jax.random.randint(keys[0], (B, X, Y), 0, C)
    x0 = label_to_mask(label, C)
    return x0, jax.random.normal(keys[1], x0.shape), jax.random.normal(keys[2], x0.shape)


def _toy_predictor(params):
    """A per-class affine map of x_t squashed to [-1, 1]; depends on params and k."""

    def predict_x0(x_t, k):
        return jnp.tanh(x_t * params["w"] + params["b"] + 0.1 * k[:, None, None, None])

    return predict_x0


def _loss(params, schedule, x0, k, noise_next, noise, recycle):
    x_t = recycle(_toy_predictor(params), schedule, x0, k, noise_next, noise)
    return jnp.sum(_toy_predictor(params)(x_t, k) * x0)


def _recycled_without_stop_gradient(predict_x0, schedule, x0, k, noise_next, noise):
    k_next = next_step_index(schedule, k)
    x0_hat = predict_x0(q_sample(schedule, x0, k_next, noise_next), k_next)
    return q_sample(schedule, x0_hat, k, noise)


def test_gradient_flows_only_through_the_step_k_prediction():
    schedule = make_schedule(1000, 5)
    x0, noise_next, noise = _inputs()
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array([0.1, 0.2, -0.3])}
    k = jnp.array([1, 3])
    grad = jax.grad(_loss)(params, schedule, x0, k, noise_next, noise, recycled_noisy_mask)

    # Reference: x_t computed outside the differentiated function (the prediction as a constant).
    x_t_const = recycled_noisy_mask(_toy_predictor(params), schedule, x0, k, noise_next, noise)
    grad_const = jax.grad(lambda p: jnp.sum(_toy_predictor(p)(x_t_const, k) * x0))(params)
    for name in params:
        np.testing.assert_allclose(grad[name], grad_const[name], rtol=1e-6)

    grad_leaky = jax.grad(_loss)(
        params, schedule, x0, k, noise_next, noise, _recycled_without_stop_gradient
    )
    assert not np.allclose(grad_leaky["w"], grad["w"], rtol=1e-3)


def test_noisy_mask_is_built_from_the_prediction_not_the_ground_truth():
    schedule = make_schedule(1000, 5)
    x0, noise_next, noise = _inputs(1)
    constant = jnp.full(x0.shape, 0.25)
    k = jnp.array([0, 2])
    x_t = recycled_noisy_mask(lambda x, kk: constant, schedule, x0, k, noise_next, noise)
    np.testing.assert_allclose(x_t, q_sample(schedule, constant, k, noise), rtol=1e-6)
    assert not np.allclose(x_t, q_sample(schedule, x0, k, noise), atol=1e-2)


def test_predictor_sees_x_at_k_plus_one_and_last_step_reuses_k_minus_one():
    schedule = make_schedule(1000, 5)
    x0, noise_next, noise = _inputs(2)
    seen = {}

    def record(x_next, k_next):
        seen["x"], seen["k"] = x_next, k_next
        return x0

    k = jnp.array([4, 2])  # K - 1 = 4 has no k + 1: the paper uses t + 1 = T there.
    recycled_noisy_mask(record, schedule, x0, k, noise_next, noise)
    np.testing.assert_array_equal(seen["k"], [4, 3])
    np.testing.assert_allclose(seen["x"], q_sample(schedule, x0, jnp.array([4, 3]), noise_next))


def test_eps_predictor_wrapper_recovers_x0_via_eq_10():
    schedule = make_schedule(1000, 5)
    x0, noise_next, noise = _inputs(3)
    k = jnp.array([1, 2])
    x_t = q_sample(schedule, x0, k, noise)
    oracle_eps = lambda x, kk: eps_from_x0(schedule, x, kk, x0)  # noqa: E731
    np.testing.assert_allclose(x0_predictor_from_eps(oracle_eps, schedule)(x_t, k), x0, atol=1e-4)
