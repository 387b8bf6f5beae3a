"""Training and sampling agree on the network's time input (design card: "a model trained with
1000 steps and sampled with 5 must see the same time inputs it was trained on").

- K = T training draws every t in [1, T] (t / T in the network input), never the index k.
- A 1000-step-trained model sampled with a 5-step schedule is fed, at each sampling step, a time
  value it received in training (bit-for-bit the same float32), and the noise level
  abar_{t_k} of the 5-step schedule is the one the 1000-step training used at that t.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from diffseg3d.core.diffusion import make_schedule, model_time
from diffseg3d.core.infer import make_sampler
from diffseg3d.core.train.state import create_train_state
from diffseg3d.core.train.steps import make_train_step

# Every test records t through jax.debug.callback, which needs a CPU backend.
pytestmark = pytest.mark.usefixtures("cpu_backend")

NUM_CLASSES = 2
T = 1000
SEEN_T: list[np.ndarray] = []


class TimeRecorder(nn.Module):
    """Per-voxel linear model that records the time input t of every call."""

    num_classes: int = NUM_CLASSES
    diffusion: bool = True

    @nn.compact
    def __call__(self, image, x_t, t):
        jax.debug.callback(lambda a: SEEN_T.append(np.asarray(a)), t, ordered=True)
        t_map = jnp.broadcast_to(t.reshape((-1,) + (1,) * (image.ndim - 1)), image.shape)
        return nn.Dense(self.num_classes)(jnp.concatenate([image, x_t, t_map], axis=-1))


def _training_times(schedule, batch_size, recycling=False):
    """Every t the network received in one train step with `batch_size` examples."""
    model = TimeRecorder()
    shape = (batch_size, 1, 1, 1)
    tx = optax.sgd(0.0)
    state = create_train_state(model, tx, jax.random.key(0), (*shape, 1), diffusion=True)
    step = make_train_step(model, tx, lambda s: 0.0, method="diffusion", schedule=schedule,
                           recycling=recycling)
    label = np.arange(batch_size, dtype=np.int32).reshape(shape) % NUM_CLASSES
    batch = {"image": jnp.asarray(label[..., None], jnp.float32), "label": jnp.asarray(label)}
    SEEN_T.clear()
    _, metrics = step(state, batch, jax.random.key(4))
    jax.effects_barrier()
    assert np.isfinite(float(metrics["loss"]))
    return [np.asarray(t) for t in SEEN_T]


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
def test_k_equal_t_training_uses_every_t_in_1_to_T():
    schedule = make_schedule(T, T)
    # 20,000 draws of k ~ U{0..999}: P(some t never drawn) < 1000 * exp(-20) ~ 2e-6.
    (times,) = _training_times(schedule, 20_000)
    assert times.dtype == np.float32
    np.testing.assert_array_equal(
        np.unique(times), np.arange(1, T + 1, dtype=np.float32) / np.float32(T)
    )
    # Uniform: each t about 20 times (binomial sd ~4.5); an index k or t off by one would not
    # give exactly the set above, a biased draw would fail this bound.
    counts = np.unique(times, return_counts=True)[1]
    assert counts.min() >= 2 and counts.max() <= 45


def test_five_step_sampling_feeds_times_and_noise_levels_seen_in_1000_step_training():
    train_schedule = make_schedule(T, T)
    sample_schedule = make_schedule(T, 5)
    trained_times = set(_training_times(train_schedule, 20_000)[0].tolist())

    model = TimeRecorder()
    image = jnp.zeros((2, 2, 2, 2, 1), jnp.float32)
    params = model.init(jax.random.key(0), image, jnp.zeros((2, 2, 2, 2, NUM_CLASSES)),
                        jnp.ones((2,)))["params"]
    SEEN_T.clear()
    make_sampler(model, sample_schedule)(params, image, jax.random.key(1))
    jax.effects_barrier()
    sampled = np.stack(SEEN_T)[:, 0]
    # Sampling order t_K = T first; the 5-step grid is t = 1, 251, 500, 750, 1000.
    np.testing.assert_array_equal(
        sampled, np.array([1000, 750, 500, 251, 1], np.float32) / np.float32(T)
    )
    assert set(sampled.tolist()) <= trained_times  # exact float32 values, not approximately

    # The same t means the same noise level: abar_{t_k} of the 5-step schedule is row t_k - 1
    # of the 1000-step schedule the model was trained with.
    rows = np.asarray(sample_schedule.timesteps) - 1
    np.testing.assert_array_equal(
        np.asarray(sample_schedule.alphas_cumprod), np.asarray(train_schedule.alphas_cumprod)[rows]
    )
    np.testing.assert_array_equal(
        np.asarray(model_time(sample_schedule, jnp.arange(5))),
        np.asarray(model_time(train_schedule, jnp.asarray(rows))),
    )


@pytest.mark.slow
def test_recycling_with_k_equal_t_predicts_at_t_plus_one_and_trains_at_t():
    """Recycling at K = T: first call at t_{k'} = min(t + 1, T), second at t (paper 3.2)."""
    schedule = make_schedule(T, T)
    first, second = _training_times(schedule, 4_000, recycling=True)
    expected_next = np.minimum(second * T + 1, T) / np.float32(T)
    np.testing.assert_allclose(first, expected_next, rtol=0, atol=1e-6)
    assert np.any(second == 1.0)  # the k = K - 1 case (t = T) occurs and uses t + 1 = T
    np.testing.assert_array_equal(first[second == 1.0], 1.0)
