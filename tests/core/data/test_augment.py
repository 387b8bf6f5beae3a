"""JAX random affine augmentation: exact identity, closed-form shifts/rotations, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.data.augment import apply_affine, random_affine


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    image = rng.random((2, 10, 10, 6, 1), dtype=np.float32)
    label = rng.integers(0, 5, (2, 10, 10, 6)).astype(np.int32)
    return jnp.asarray(image), jnp.asarray(label)


def _params(angles, translation, scale):
    return {"angles": jnp.asarray(angles, jnp.float32),
            "translation": jnp.asarray(translation, jnp.float32),
            "scale": jnp.asarray(scale, jnp.float32)}


def test_identity_parameters_reproduce_the_input_exactly(batch):
    image, label = batch
    fn = jax.jit(lambda k, im, lb: random_affine(k, im, lb, 0.0, 0.0, (1.0, 1.0),
                                               spacing=(1.5, 1.5, 3.0)))
    out_image, out_label = fn(jax.random.key(3), image, label)
    np.testing.assert_array_equal(np.asarray(out_image), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(out_label), np.asarray(label))
    image2d, label2d = image[:, :, :, 0], label[:, :, :, 0]
    out2d = random_affine(jax.random.key(0), image2d, label2d, 0.0, 0.0, (1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(out2d[0]), np.asarray(image2d))


def test_integer_translation_is_an_exact_shift(batch):
    image, label = batch
    params = _params(np.zeros((2, 3)), [[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]], [1.0, 1.0])
    out_image, out_label = apply_affine(image, label, params)
    np.testing.assert_array_equal(np.asarray(out_image)[0, 1:], np.asarray(image)[0, :-1])
    np.testing.assert_array_equal(np.asarray(out_image)[0, 0], 0.0)  # background fill
    np.testing.assert_array_equal(np.asarray(out_label)[1, :, :-2], np.asarray(label)[1, :, 2:])


def test_quarter_turn_about_z_matches_rot90_for_labels(batch):
    _, label = batch
    image = label[..., None].astype(jnp.float32)
    params = _params([[0.0, 0.0, np.pi / 2]] * 2, np.zeros((2, 3)), [1.0, 1.0])
    out_image, out_label = apply_affine(image, label, params)
    expected = np.rot90(np.asarray(label), k=1, axes=(1, 2))
    np.testing.assert_array_equal(np.asarray(out_label), expected)
    np.testing.assert_allclose(np.asarray(out_image)[..., 0], expected, atol=1e-4)


def test_labels_integer_in_class_list_and_deterministic(batch):
    image, label = batch
    fn = jax.jit(lambda k: random_affine(k, image, label, 20.0, 2.0, (0.85, 1.15),
                                         spacing=(1.5, 1.5, 3.0)))
    a_img, a_lbl = fn(jax.random.key(1))
    b_img, b_lbl = fn(jax.random.key(1))
    c_img, _ = fn(jax.random.key(2))
    assert a_lbl.dtype == jnp.int32 and a_img.dtype == image.dtype
    assert set(np.unique(np.asarray(a_lbl))) <= set(range(5))
    np.testing.assert_array_equal(np.asarray(a_img), np.asarray(b_img))
    np.testing.assert_array_equal(np.asarray(a_lbl), np.asarray(b_lbl))
    assert not np.array_equal(np.asarray(a_img), np.asarray(c_img))
    # Linear interpolation never leaves the input's intensity range.
    assert float(a_img.min()) >= 0.0 and float(a_img.max()) <= float(image.max())
