"""The non-finite check of a logging window: the first bad step is named with its loss parts;
a finite window passes; the check reads the means, so a finite window fetches nothing."""

import math
from pathlib import Path

import jax.numpy as jnp
import pytest
from diffseg3d.core.train.loop import window_means
from diffseg3d.experiments.trial.divergence import (
    NonFiniteTrainingError,
    check_window,
    window_is_finite,
)


def _step(loss, grad_norm, ce=0.5):
    return {"loss": jnp.float32(loss), "loss_ce": jnp.float32(ce),
            "grad_norm": jnp.float32(grad_norm), "lr": jnp.float32(1e-3)}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("key", ["loss", "grad_norm"])
def test_the_first_nonfinite_step_of_a_window_is_named_with_its_loss_parts(bad, key):
    window = [_step(1.0, 2.0), _step(1.0, 2.0), _step(1.0, 2.0), _step(1.0, 2.0)]
    window[2] = _step(bad if key == "loss" else 0.9, bad if key == "grad_norm" else 2.0, ce=0.25)
    window[3] = _step(math.nan, math.nan)  # later bad steps do not hide the first
    with pytest.raises(NonFiniteTrainingError) as info:
        check_window(window, window_means(window), 40, "t1", Path("ck/step_0000036"))
    assert info.value.step == 39  # steps 37..40: the third
    message = str(info.value)
    assert message.startswith("trial t1: non-finite training at step 39: ")
    assert f"{key}={float(bad):.6g}" in message
    assert "loss_ce=0.25" in message and "lr=0.001" in message
    assert "the last checkpoint, ck/step_0000036, is kept" in message


def test_a_finite_window_passes_and_no_checkpoint_is_said():
    window = [_step(1.0, 2.0), _step(3.0, 1e30)]
    check_window(window, window_means(window), 2, "t", None)
    assert window_is_finite({"loss": 1.0}) and window_is_finite({"lr": math.nan})
    with pytest.raises(NonFiniteTrainingError, match="no checkpoint was saved"):
        check_window([_step(math.nan, 1.0)], {"loss": math.nan}, 1, "t", None)
