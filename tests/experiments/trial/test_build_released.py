"""`trial.build` turns the released-code options into the core objects: the network and its
time scale, the schedule's time input, the augmentation's space and translation limit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion import model_time
from diffseg3d.core.models.imgx_v010 import ImgXV010UNet
from diffseg3d.core.models.unet import UNet
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.trial import build
from diffseg3d.experiments.trial.checkpoint import BestValidation


def _config(profile, **over):
    return validate_config(deep_merge(load_profile(profile), over), source="test")


def test_paper_profile_builds_the_released_network_with_index_time():
    config = _config("paper")
    net = build.model(config, 9)
    assert isinstance(net, ImgXV010UNet) and net.time_scale == 1.0
    assert net.dtype == jnp.bfloat16 and not net.remat  # batch 8 fits one pass (its GPU plan)
    schedule = build.schedule(config, config.diffusion.sample_steps)
    np.testing.assert_array_equal(np.asarray(model_time(schedule, jnp.arange(5))), range(5))


def test_quick_profile_keeps_the_project_network_and_fraction_time():
    config = _config("quick")
    net = build.model(config, 9)
    assert isinstance(net, UNet) and net.time_scale == 1000.0
    schedule = build.schedule(config, 5)
    assert float(model_time(schedule, jnp.array([4]))[0]) == 1.0


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
def test_augment_space_and_translation_limit_reach_the_augmentation():
    paper = build.augment(_config("paper"), spacing=(0.75, 0.75, 2.5))
    assert paper.keywords["spacing"] is None and paper.keywords["limit_translation"] is True
    quick = build.augment(_config("quick"), spacing=(0.75, 0.75, 2.5))
    assert quick.keywords["spacing"] == (0.75, 0.75, 2.5)
    assert quick.keywords["limit_translation"] is False
    # The bound function runs: foreground spanning x entirely leaves no x translation, so a
    # translation-only draw keeps every voxel (rotation/scaling off to isolate it).
    label = jnp.zeros((1, 32, 32, 16), jnp.int32).at[0, :, 10:20, 4:8].set(1)
    image = label[..., None].astype(jnp.float32)
    only_shift = paper.func(jax.random.key(3), image, label, 0.0, (20.0, 20.0, 4.0), 0.0,
                            spacing=None, limit_translation=True)
    assert int((only_shift[1] == 1).sum()) == int((label == 1).sum())


def test_best_validation_ties_follow_eval_val_ties():
    """Validations 0.7, 0.8, 0.8 (tie), 0.75 at steps 500..2000: earlier keeps 1000, the
    released later rule 1500; the rule travels with `from_meta` (a resumed trial)."""
    params = {"w": jnp.ones(2)}
    for ties, expected in (("earlier", 1000), ("later", 1500)):
        best = BestValidation.from_meta(True, None, ties=ties)
        for step, score in ((500, 0.7), (1000, 0.8), (1500, 0.8), (2000, 0.75)):
            best.update(step, score, params)
        assert best.step == expected and best.val_dice == 0.8
        resumed = BestValidation.from_meta(True, best.info(), ties=ties)
        resumed.update(2500, 0.8, params)
        assert resumed.step == (2500 if ties == "later" else expected)


def _released_alphas_cumprod(num_timesteps_beta=1001, keep=5):
    """ImgX-DiffSeg v0.1.0 `downsample_beta_schedule` (variance_schedule.py:113-156) on its
    linear betas (1e-4 to 0.02 over `num_timesteps_beta`), written out in float64: the
    cumulative products at every (T_beta - 1) / (keep - 1)-th step, from the first."""
    betas = np.linspace(1e-4, 0.02, num_timesteps_beta, dtype=np.float64)
    return np.cumprod(1.0 - betas)[:: (num_timesteps_beta - 1) // (keep - 1)]


def test_paper_profile_five_step_schedule_is_the_released_one():
    released = _released_alphas_cumprod()
    # Hand check of the released numbers: abar at the last kept step is about exp(-10.05).
    assert released.shape == (5,) and abs(released[-1] - 3.995e-5) < 1e-8
    paper = build.schedule(_config("paper"), 5)
    np.testing.assert_allclose(np.asarray(paper.alphas_cumprod, np.float64), released, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(paper.timesteps), [1, 251, 501, 751, 1001])
    # The project's default base (T = 1000) is about 1 % off at the noisier steps.
    quick = np.asarray(build.schedule(_config("quick"), 5).alphas_cumprod, np.float64)
    assert 0.005 < np.max(np.abs(quick / released - 1)) < 0.02
