"""`run_init`: the one-off init program compiled at XLA:CPU optimisation level 1 gives the same
state, bit for bit, as the default-compiled jit."""

import functools

import jax
import numpy as np
import pytest
from diffseg3d.core.models import UNet
from diffseg3d.core.train import create_train_state, make_optimizer
from diffseg3d.core.train.state import INIT_COMPILER_OPTIONS, run_init


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


@pytest.mark.slow
def test_run_init_is_bit_identical_to_the_default_jit():
    diffusion = True
    model = UNet(num_classes=3, channels=(8, 16), num_res_blocks=1, num_groups=4,
                 diffusion=diffusion)
    tx, _ = make_optimizer(1e-3, warmup_steps=1, total_steps=10, weight_decay=1e-4,
                           grad_clip_norm=1.0)
    init = functools.partial(create_train_state, model, tx, image_shape=(2, 8, 8, 4, 1),
                             diffusion=diffusion)
    key = jax.random.key(3)

    fast = run_init(init, key)
    default = jax.jit(init)(key)

    assert jax.tree_util.tree_structure(fast) == jax.tree_util.tree_structure(default)
    for a, b in zip(_leaves(fast), _leaves(default), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert int(fast.step) == 0
    # Another key gives other parameters: the key reaches the initialisers.
    other = run_init(init, jax.random.key(4))
    assert any(not np.array_equal(x, y)
               for x, y in zip(_leaves(other.params), _leaves(fast.params), strict=True))


def test_init_compiler_options_are_accepted_by_this_backend():
    # An option XLA does not know would fail the compile; this pins the spelling.
    compiled = jax.jit(lambda k: jax.random.normal(k, (4,))).lower(jax.random.key(0)).compile(
        compiler_options=INIT_COMPILER_OPTIONS)
    assert compiled(jax.random.key(0)).shape == (4,)
