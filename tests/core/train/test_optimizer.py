"""Warmup + cosine schedule against hand-computed values; clipping caps the update's norm."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from diffseg3d.core.train.optimizer import make_lr_schedule, make_optimizer


def test_warmup_cosine_values_by_hand():
    schedule = make_lr_schedule(1e-3, warmup_steps=10, total_steps=110, end_lr_ratio=0.1)
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
