"""experiments.trial.build: each config section reaches the core object it configures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.train.state import init_params
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.trial import build

SPATIAL = (8, 8, 4)


def _config(**over):
    raw = deep_merge(load_profile("smoke"), {"data": {"root": "/unused"}})
    return validate_config(deep_merge(raw, over))


def test_model_follows_method_channels_and_dtype():
    unet = build.model(_config(method="unet"), num_classes=4)
    assert not unet.diffusion and unet.num_classes == 4 and unet.channels == (4, 8)
    assert unet.dtype == jnp.float32
    ddpm = build.model(_config(method="diffusion", model={"compute_dtype": "bfloat16"}), 4)
    assert ddpm.diffusion and ddpm.dtype == jnp.bfloat16


@pytest.mark.parametrize("k", [1, 5])
def test_schedule_has_k_steps_ending_at_t(k):
    schedule = build.schedule(_config(diffusion={"num_timesteps": 100}), k)
    assert schedule.timesteps.shape == (k,) and int(schedule.timesteps[-1]) == 100


def test_augment_off_is_none_and_zero_ranges_are_the_identity():
    assert build.augment(_config(data={"augment": False})) is None
    zero = {"augment": True, "max_rotation": [0, 0, 0], "max_translation": [0, 0, 0],
            "max_scale": [0, 0, 0]}
    augment = build.augment(_config(data=zero), spacing=(1.0, 1.0, 2.0))
    assert augment.keywords["spacing"] == (1.0, 1.0, 2.0)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, *SPATIAL, 1)).astype(np.float32)
    label = rng.integers(0, 3, (2, *SPATIAL)).astype(np.int32)
    out_image, out_label = augment(jax.random.key(0), image, label)
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_label, label)
    wide = build.augment(_config(data={"augment": True, "max_rotation": [0.1, 0.2, 0.3]}))
    assert wide.keywords["max_rotation"] == (0.1, 0.2, 0.3)


def test_optimizer_schedule_follows_optim_and_train_steps():
    config = _config(optim={"learning_rate": 1e-3, "warmup_steps": 4, "init_lr": 1e-4,
                            "end_lr": 1e-5}, train={"steps": 20})
    _, lr = build.optimizer(config)
    assert float(lr(0)) == pytest.approx(1e-4)
    assert float(lr(4)) == pytest.approx(1e-3)  # peak at the end of warmup
    assert float(lr(20)) == pytest.approx(1e-5)  # cosine ends at train.steps


@pytest.mark.slow
def test_unet_predictor_is_the_argmax_and_ignores_the_key():
    config = _config(method="unet")
    model = build.model(config, num_classes=3)
    params = init_params(model, jax.random.key(0), (2, *SPATIAL, 1), diffusion=False)
    image = np.random.default_rng(1).standard_normal((2, *SPATIAL, 1)).astype(np.float32)
    predict = build.predictor(config, model, num_classes=3)
    labels = np.asarray(predict(params, image, jax.random.key(1)))
    logits = model.apply({"params": params}, image)
    np.testing.assert_array_equal(labels, np.argmax(np.asarray(logits), axis=-1))
    np.testing.assert_array_equal(labels, np.asarray(predict(params, image, jax.random.key(2))))


@pytest.mark.slow
def test_diffusion_predictor_samples_label_maps():
    config = _config(method="diffusion", diffusion={"sample_steps": 2})
    model = build.model(config, num_classes=3)
    params = init_params(model, jax.random.key(0), (1, *SPATIAL, 1), diffusion=True)
    image = np.zeros((1, *SPATIAL, 1), np.float32)
    labels = np.asarray(build.predictor(config, model, 3)(params, image, jax.random.key(0)))
    assert labels.shape == (1, *SPATIAL) and labels.min() >= 0 and labels.max() < 3
