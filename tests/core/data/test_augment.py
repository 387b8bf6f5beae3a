"""JAX random affine augmentation: exact identity, closed-form shifts/rotations/scalings,
determinism, per-axis ranges and the per-data-set presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.data.augment import (
    AUGMENT_PRESETS,
    apply_affine,
    augment_preset,
    random_affine,
    sample_affine_params,
)


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
    fn = jax.jit(lambda k, im, lb: random_affine(k, im, lb, 0.0, 0.0, 0.0,
                                               spacing=(1.5, 1.5, 3.0)))
    out_image, out_label = fn(jax.random.key(3), image, label)
    np.testing.assert_array_equal(np.asarray(out_image), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(out_label), np.asarray(label))
    image2d, label2d = image[:, :, :, 0], label[:, :, :, 0]
    out2d = random_affine(jax.random.key(0), image2d, label2d, 0.0, 0.0, 0.0)
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
    fn = jax.jit(lambda k: random_affine(k, image, label, np.deg2rad(20.0), 2.0, 0.15,
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


def test_per_axis_scale_is_a_closed_form_stretch_about_the_centre():
    # Ramps along axes 0 and 1: linear interpolation of a linear function is exact inside.
    shape = (9, 9, 5)
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    image = jnp.asarray(np.stack([grid[0], grid[1]], axis=-1)[None])
    label = jnp.zeros((1, *shape), jnp.int32)
    params = _params(np.zeros((1, 3)), np.zeros((1, 3)), [[2.0, 1.0, 1.0]])
    out, _ = apply_affine(image, label, params, spacing=(1.0, 1.0, 2.5))
    out = np.asarray(out)[0]
    # Output p samples the input at c + (p - c) / 2 along axis 0 (content stretched by 2), and
    # at p along axis 1.
    np.testing.assert_allclose(out[..., 0], 4.0 + (grid[0] - 4.0) / 2.0, atol=1e-5)
    np.testing.assert_allclose(out[..., 1], grid[1], atol=1e-5)


@pytest.mark.parametrize("name", ["prostate-mr", "amos-ct", "phantom"])
def test_sampled_parameters_stay_within_the_per_axis_ranges_and_reach_their_edges(name):
    preset = augment_preset(name)
    params = sample_affine_params(jax.random.key(7), 4000, 3, preset["max_rotation"],
                                  preset["max_translation"], preset["max_scale"],
                                  preset["isotropic_scale"])
    for key, bound, centre in (("angles", preset["max_rotation"], 0.0),
                               ("translation", preset["max_translation"], 0.0),
                               ("scale", preset["max_scale"], 1.0)):
        deviation = np.abs(np.asarray(params[key], np.float64) - centre)
        bound = np.asarray(bound)
        assert deviation.shape == (4000, 3)
        assert np.all(deviation <= bound * (1 + 1e-6)), key
        # 4000 uniform draws come within 1 % of each edge (probability of failing < 1e-17).
        assert np.all(deviation.max(axis=0) >= 0.99 * bound), key
    scale = np.asarray(params["scale"])
    if preset["isotropic_scale"]:
        np.testing.assert_array_equal(scale, scale[:, :1].repeat(3, axis=1))
    else:  # independent factors per axis
        assert abs(np.corrcoef(scale[:, 0], scale[:, 1])[0, 1]) < 0.1


def test_presets_are_the_released_ranges_and_the_phantom_keeps_the_former_ones():
    released = {"max_rotation": (0.088,) * 3, "max_scale": (0.15,) * 3, "isotropic_scale": False}
    assert AUGMENT_PRESETS["prostate-mr"] == {**released, "max_translation": (20.0, 20.0, 4.0)}
    assert AUGMENT_PRESETS["amos-ct"] == {**released, "max_translation": (10.0, 10.0, 10.0)}
    phantom = AUGMENT_PRESETS["phantom"]
    np.testing.assert_allclose(np.rad2deg(phantom["max_rotation"]), 15.0, rtol=1e-12)
    assert phantom["max_translation"] == (3.0,) * 3 and phantom["isotropic_scale"]
    assert (1 - phantom["max_scale"][0], 1 + phantom["max_scale"][0]) == (0.9, 1.1)
    assert augment_preset("brain-mr") == phantom  # unlisted names: the former ranges


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_translation": (1.0, 2.0)}, "max_translation needs 1 or 3"),
        ({"max_rotation": -0.1}, "max_rotation must be >= 0"),
        ({"max_scale": 1.0}, "max_scale must be < 1"),
        ({"max_scale": (0.1, 0.2, 0.1), "isotropic_scale": True}, "one max_scale"),
    ],
)
def test_bad_ranges_are_rejected_naming_the_range(kwargs, match):
    ranges = {"max_rotation": 0.1, "max_translation": 1.0, "max_scale": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_affine_params(jax.random.key(0), 2, 3, **ranges)
