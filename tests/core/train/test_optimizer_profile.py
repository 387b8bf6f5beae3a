"""The `paper` profile's optimiser settings are the released ones; other profiles keep the former
schedule (warmup from 0, cosine to 0 at train.steps)."""

import pytest
from diffseg3d.core.train.optimizer import make_optimizer
from diffseg3d.experiments.config.layering import load_profile
from diffseg3d.experiments.config.schema import validate_config


def _lr_schedule(profile: str):
    config = validate_config(load_profile(profile))
    o = config.optim
    _, schedule = make_optimizer(
        o.learning_rate, o.warmup_steps, config.train.steps, o.weight_decay, o.grad_clip_norm,
        init_lr=o.init_lr, decay_steps=o.decay_steps, end_lr=o.end_lr,
    )
    return config, schedule


def test_paper_profile_follows_the_released_optimiser():
    config, schedule = _lr_schedule("paper")
    assert (config.optim.weight_decay, config.optim.grad_clip_norm) == (1e-8, 1.0)
    assert config.train.steps == 12_500
    hand = {0: 1e-5, 100: 1e-4, 10_000: 1e-6, 12_500: 1e-6}
    for step, lr in hand.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-5), step


@pytest.mark.parametrize("profile", ["quick", "smoke"])
def test_other_profiles_keep_warmup_from_zero_and_decay_to_zero(profile):
    config, schedule = _lr_schedule(profile)
    assert float(schedule(0)) == 0.0
    assert float(schedule(config.optim.warmup_steps)) == pytest.approx(config.optim.learning_rate)
    assert float(schedule(config.train.steps)) == pytest.approx(0.0, abs=1e-12)
