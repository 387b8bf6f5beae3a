"""Warmup + cosine schedule against hand-computed values; clipping caps the update's norm."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from diffseg3d.core.train.optimizer import make_lr_schedule, make_optimizer


def test_warmup_cosine_values_by_hand():
    schedule = make_lr_schedule(1e-3, warmup_steps=10, total_steps=110, end_lr=1e-4)
    # warmup: linear from 0; then end + (peak - end) * (1 + cos(pi * frac)) / 2.
    expected = {
        0: 0.0,
        5: 0.5e-3,
        10: 1e-3,
        35: 1e-4 + 0.9e-3 * (1 + math.cos(math.pi * 0.25)) / 2,
        60: 1e-4 + 0.9e-3 * 0.5,
        110: 1e-4,
        500: 1e-4,
    }
    for step, lr in expected.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-5, abs=1e-10), step


def test_released_schedule_at_steps_0_100_10000_12500():
    """ImgX-DiffSeg's lr_schedule: warmup 100 steps 1e-5 -> 1e-4, cosine to 1e-6 at 10,000."""
    schedule = make_lr_schedule(
        1e-4, warmup_steps=100, total_steps=12_500, init_lr=1e-5, decay_steps=10_000, end_lr=1e-6
    )
    expected = {
        0: 1e-5,
        50: 1e-5 + 0.9e-4 * 0.5,
        100: 1e-4,
        # Half-way through the cosine (step 100 + 9900 / 2): the mean of peak and end.
        5050: (1e-4 + 1e-6) / 2,
        10_000: 1e-6,
        12_500: 1e-6,
    }
    for step, lr in expected.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-5), step


def test_default_schedule_is_the_former_one_from_zero_to_zero_at_total_steps():
    schedule = make_lr_schedule(1e-3, warmup_steps=20, total_steps=300)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(0.5e-3, rel=1e-6)
    assert float(schedule(20)) == pytest.approx(1e-3, rel=1e-6)
    assert float(schedule(160)) == pytest.approx(0.5e-3, rel=1e-5)
    assert float(schedule(300)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"decay_steps": 50}, "warmup_steps \\(100\\).*decay_steps \\(50\\)"),
        ({"init_lr": 2e-4}, "init_lr"),
        ({"end_lr": -1e-6}, "end_lr"),
    ],
)
def test_schedule_rejects_inconsistent_released_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_lr_schedule(1e-4, warmup_steps=100, total_steps=1000, **kwargs)


def test_adam_moments_are_passed_through():
    tx, schedule = make_optimizer(1e-2, 1, 100, weight_decay=1e-8, grad_clip_norm=0.0,
                                  b1=0.5, b2=0.9)
    ref = optax.adamw(schedule, b1=0.5, b2=0.9, weight_decay=1e-8)
    params = {"a": jnp.ones(2)}
    s, rs = tx.init(params), ref.init(params)
    for g in ({"a": jnp.array([1.0, -2.0])}, {"a": jnp.array([0.3, 0.1])}):
        u, s = tx.update(g, s, params)
        ru, rs = ref.update(g, rs, params)
    np.testing.assert_allclose(u["a"], ru["a"], rtol=1e-6)


def test_schedule_rejects_warmup_longer_than_training():
    with pytest.raises(ValueError, match="warmup_steps \\(20\\).*total_steps \\(10\\)"):
        make_lr_schedule(1e-3, warmup_steps=20, total_steps=10)


def test_gradient_clipping_caps_global_norm():
    tx, schedule = make_optimizer(1e-2, 1, 100, weight_decay=0.0, grad_clip_norm=1.0)
    params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
    big = {"a": jnp.array([3.0, 0.0, 4.0]), "b": jnp.full((2, 2), 6.0)}  # global norm 13
    small = {"a": jnp.array([0.1, 0.2, 0.0]), "b": jnp.full((2, 2), 0.05)}  # norm < 1
    clipped_big = jax.tree.map(lambda g: g / 13.0, big)
    # Adam is invariant to a common gradient scale, so alternate norms: clipping changes the
    # relative size of the steps. Reference: unclipped AdamW fed the clipped gradients by hand.
    ref = optax.adamw(schedule, weight_decay=0.0)
    raw = optax.adamw(schedule, weight_decay=0.0)
    state, ref_state, raw_state = tx.init(params), ref.init(params), raw.init(params)
    for grads, by_hand in [(big, clipped_big), (small, small), (big, clipped_big)]:
        upd, state = tx.update(grads, state, params)
        ref_upd, ref_state = ref.update(by_hand, ref_state, params)
        raw_upd, raw_state = raw.update(grads, raw_state, params)
        for key in params:
            np.testing.assert_allclose(upd[key], ref_upd[key], rtol=1e-5, atol=1e-9)
    assert not np.allclose(upd["a"], raw_upd["a"], rtol=1e-3)


def test_no_clipping_when_disabled():
    tx, _ = make_optimizer(1e-2, 1, 100, weight_decay=0.0, grad_clip_norm=0.0)
    ref = optax.adamw(make_lr_schedule(1e-2, 1, 100), weight_decay=0.0)
    params = {"a": jnp.zeros(2)}
    # Adam normalises by the second moment, so use two steps with different gradient scales:
    # clipping to norm 1 would change the ratio of the two updates.
    grads = [{"a": jnp.array([30.0, -40.0])}, {"a": jnp.array([1.0, 2.0])}]
    s, rs = tx.init(params), ref.init(params)
    for g in grads:
        u, s = tx.update(g, s, params)
        ru, rs = ref.update(g, rs, params)
    np.testing.assert_allclose(u["a"], ru["a"], rtol=1e-6)
