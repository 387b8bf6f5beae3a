"""The released augmentation options: translation limited per example so that the foreground
box stays inside (foreground touching a border), and rotation in voxel-index space vs in mm
on an anisotropic grid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.data.augment import (
    foreground_box,
    random_affine,
    sample_affine_params,
    sampling_matrix,
    translation_bounds,
)
from diffseg3d.core.data.augment_presets import AUGMENT_SPACES, augment_spacing

SHAPE = (10, 8, 6)


def _border_labels():
    """Example 0: class 1 on x 0..2 (touches the low x border), y 3..4, z 5 (touches the high z
    border), class 2 at (2, 4, 5). Example 1: class 1 filling all of x, y 2..5, z 1..2.
    Example 2: no foreground."""
    label = np.zeros((3, *SHAPE), np.int32)
    label[0, 0:3, 3:5, 5] = 1
    label[0, 2, 4, 5] = 2
    label[1, :, 2:6, 1:3] = 1
    return jnp.asarray(label)


def test_foreground_box_and_bounds_by_hand():
    label = _border_labels()
    lo, hi, any_fg = foreground_box(label)
    np.testing.assert_array_equal(np.asarray(lo[:2]), [[0, 3, 5], [0, 2, 1]])
    np.testing.assert_array_equal(np.asarray(hi[:2]), [[2, 4, 5], [9, 5, 2]])
    np.testing.assert_array_equal(np.asarray(any_fg), [True, True, False])
    low, high = translation_bounds(label, (4.0, 4.0, 4.0))
    # Example 0: x [max(-4, -0), min(4, 9 - 2)] = [0, 4]; y [max(-4, -3), min(4, 7 - 4)] =
    # [-3, 3]; z [max(-4, -5), min(4, 5 - 5)] = [-4, 0].
    # Example 1: x [0, 0] (the foreground spans x); y [-2, 2]; z [-1, 3]. Example 2: +-4.
    np.testing.assert_array_equal(np.asarray(low), [[0, -3, -4], [0, -2, -1], [-4, -4, -4]])
    np.testing.assert_array_equal(np.asarray(high), [[4, 3, 0], [0, 2, 3], [4, 4, 4]])


def _class_counts(label):
    return np.stack([(np.asarray(label) == c).sum(axis=(1, 2, 3)) for c in (1, 2)], axis=1)


def test_limited_translation_keeps_every_foreground_voxel_and_free_one_does_not():
    """Translation only (no rotation, no scaling), large range, 40 keys: with the limit each
    example keeps its per-class voxel counts (nothing leaves the volume); without it some draw
    pushes example 0's border-touching foreground out."""
    label = _border_labels()
    image = label[..., None].astype(jnp.float32)
    counts = _class_counts(label)

    def run(limit):
        fn = jax.jit(lambda k: random_affine(k, image, label, 0.0, 4.0, 0.0,
                                             limit_translation=limit))
        return [fn(jax.random.key(i))[1] for i in range(40)]

    for out in run(True):
        np.testing.assert_array_equal(_class_counts(out), counts)
    assert any((_class_counts(out)[0] < counts[0]).any() for out in run(False))


def test_limited_translation_draws_inside_the_bounds_with_the_same_uniforms():
    label = _border_labels()
    bounds = translation_bounds(label, 4.0)
    key = jax.random.key(5)
    limited = sample_affine_params(key, 3, 3, 0.1, 4.0, 0.1, bounds=bounds)["translation"]
    free = sample_affine_params(key, 3, 3, 0.1, 4.0, 0.1)["translation"]
    low, high = (np.asarray(b) for b in bounds)
    t = np.asarray(limited)
    assert np.all(t >= low - 1e-6) and np.all(t <= high + 1e-6)
    assert t[1, 0] == 0.0 and np.all(t[0, [0]] >= 0) and np.all(t[0, [2]] <= 0)
    # Same uniform u per entry: t = low + u (high - low); the free draw is -4 + 8 u.
    u = (np.asarray(free) + 4.0) / 8.0
    np.testing.assert_allclose(t, low + u * (high - low), atol=1e-5)


def test_voxel_space_rotation_vs_mm_on_an_anisotropic_grid_by_hand():
    """A quarter turn about X (the y-z plane) on spacing (0.75, 0.75, 2.5): in voxel space the
    output offset (0, 0, 1) samples the input offset (0, -1, 0) (R^T = rotation by -90 degrees);
    in mm, 1 voxel in z is 2.5 mm = 2.5 / 0.75 = 3.33 voxels in y: M = D^-1 R^T D."""
    spacing = (0.75, 0.75, 2.5)
    angles = jnp.array([np.pi / 2, 0.0, 0.0])
    voxel = np.asarray(sampling_matrix(angles, 1.0, (1.0, 1.0, 1.0)))
    mm = np.asarray(sampling_matrix(angles, 1.0, spacing))
    np.testing.assert_allclose(voxel @ [0, 0, 1], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(mm @ [0, 0, 1], [0, 2.5 / 0.75, 0], atol=1e-5)
    np.testing.assert_allclose(mm @ [0, 1, 0], [0, 0, -0.75 / 2.5], atol=1e-6)
    assert augment_spacing("voxel", spacing) is None
    assert augment_spacing("mm", spacing) == spacing
    assert AUGMENT_SPACES == ("mm", "voxel")
    with pytest.raises(ValueError, match="'index'"):
        augment_spacing("index", spacing)


def test_voxel_space_augmentation_differs_from_mm_only_through_the_spacing():
    """Same key on an anisotropic grid: voxel space equals spacing None (isotropic voxels) and
    differs from mm space."""
    label = _border_labels()
    image = label[..., None].astype(jnp.float32)
    key = jax.random.key(11)
    spacing = (0.75, 0.75, 2.5)
    vox = random_affine(key, image, label, 0.3, 2.0, 0.1,
                        spacing=augment_spacing("voxel", spacing), limit_translation=True)
    iso = random_affine(key, image, label, 0.3, 2.0, 0.1, spacing=None, limit_translation=True)
    mm = random_affine(key, image, label, 0.3, 2.0, 0.1,
                       spacing=augment_spacing("mm", spacing), limit_translation=True)
    np.testing.assert_array_equal(np.asarray(vox[0]), np.asarray(iso[0]))
    assert float(jnp.max(jnp.abs(vox[0] - mm[0]))) > 0.5
