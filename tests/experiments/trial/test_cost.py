"""A trial's cost figures against a hand count: one 3x3x3 conv layer costs 2 Cin Cout FLOPs (a
multiply and an add) per kernel tap that lands on the input, and the per-case inference cost is
passes x that."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.trial import cost

# One input channel: `forward_flops` feeds the network (1, *S, 1) images, as the trial's.
SHAPE, CIN, COUT = (8, 8, 4), 1, 5
# Per dimension of size n a 3-tap SAME window has 3n - 2 taps on the input (not the padding).
HAND = 2 * CIN * COUT * (3 * 8 - 2) * (3 * 8 - 2) * (3 * 4 - 2)  # 24,200 multiply-adds x 2


class OneConv(nn.Module):
    diffusion: bool = False

    @nn.compact
    def __call__(self, x):
        return nn.Conv(COUT, (3, 3, 3), padding="SAME", use_bias=False)(x)


@pytest.fixture(scope="module")
def params():
    return OneConv().init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE, CIN)))["params"]


def test_step_flops_of_one_conv_is_the_hand_count(params):
    fn = jax.jit(lambda p, x: OneConv().apply({"params": p}, x))
    flops = cost.step_flops(fn, params, jnp.zeros((1, *SHAPE, CIN)))
    assert flops == pytest.approx(HAND, rel=0.02)


def test_forward_flops_is_per_case_and_trial_cost_multiplies_passes(params):
    forward = cost.forward_flops(OneConv(), params, SHAPE, num_classes=COUT)
    assert forward == pytest.approx(HAND, rel=0.02)
    out = cost.trial_cost(train_step_flops=10.0, steps_run=600, train_seconds=1.0,
                          eval_seconds=2.0, forward=forward, passes_per_sample=5, samples=4,
                          seconds_per_case_1=0.1, seconds_per_case_ensemble=0.3)
    assert set(out) == set(record.COST_METRICS)
    assert out["cost_train_flops"] == 6000.0
    assert out["cost_inference_flops_1"] == 5 * forward
    assert out["cost_inference_flops_ensemble"] == 20 * forward


def test_step_flops_is_nan_when_it_cannot_compile():
    assert math.isnan(cost.step_flops(object()))
