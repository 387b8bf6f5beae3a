"""The `paper` profiles follow the released ImgX-DiffSeg configuration where the paper is silent."""

from pathlib import Path

import jax.numpy as jnp
import pytest
import yaml
from diffseg3d.core.diffusion.parameterization import x0_from_output
from diffseg3d.core.diffusion.schedule import make_schedule
from diffseg3d.experiments.config.schema import Config

PROFILES = Path(__file__).resolve().parents[3] / "experiments" / "profiles"


@pytest.mark.parametrize("name", ["paper", "paper_tpu"])
def test_paper_profiles_do_not_clip_x0_from_noise(name):
    raw = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
    config = Config.model_validate(raw)
    assert config.diffusion.clip_x0 is False
    # ... and unclipped really lets eq. 10 leave [-1, 1]: x_t = 3, eps_hat = 0 at the last step.
    schedule = make_schedule(num_timesteps=1000, num_steps=5)
    k = jnp.array([4])
    x_t = jnp.full((1, 2, 2, 2, 3), 3.0)
    x0 = x0_from_output(schedule, "eps", jnp.zeros_like(x_t), x_t, k,
                        clip_x0=config.diffusion.clip_x0)
    assert float(x0.max()) > 1.0


def test_quick_and_smoke_keep_the_recorded_clipping():
    for name in ("quick", "smoke"):
        raw = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
        assert Config.model_validate(raw).diffusion.clip_x0 is True
