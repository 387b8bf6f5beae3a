"""A new NIfTI volume through the recorded preparation and back: same chain as preparation,
exact input shape/affine on the way back, labels equal except where the crop cut them."""

import json

import nibabel as nib
import numpy as np
import pytest
from diffseg3d.core.data.inference import (
    PreparationRecipe,
    prepare_volume,
    restore_label,
    restore_map,
)
from diffseg3d.core.data.nifti.io import DataError, FileRef
from diffseg3d.core.data.preprocess import Intensity, preprocess_case
from scipy import ndimage

from .nifti_builders import image_for, oblique_affine, octant_label, write_nii

CLASSES = 5
PREPARED_SPACING = (1.0, 1.0, 2.0)
PREPARED_SHAPE = (16, 12, 8)


def _record(intensity, crop_centre="image"):
    """A dataset.json `preprocessing` record as `preparation.prepare_pairs` writes it."""
    return {
        "orientation": "RAS (nibabel.as_closest_canonical)",
        "intensity": intensity.to_dict(), "normalise": "clip window -> [0, 1]",
        "spacing": list(PREPARED_SPACING), "shape": list(PREPARED_SHAPE),
        "resample": {"image": "linear", "label": "nearest", "library": "scipy.ndimage"},
        "crop_centre": crop_centre, "pad_value": 0.0,
    }


def _permuted_lps_affine():
    """Stored axes (z, x, y) with x and y flipped (LPS-like) at 2 x 2 x 4 mm: voxel axis 0 is
    world S at 4 mm, axis 1 world -R at 2 mm, axis 2 world -A at 2 mm. Twice the prepared
    spacing, so nearest resampling there and back loses nothing."""
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2] = 4.0, -2.0, -2.0
    affine[:, 3] = (30.5, -12.25, 5.0, 1.0)
    return affine


def _random_label(shape, seed):
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((CLASSES,
                                                                                 *shape)),
                                    (0, 1, 1, 1))
    return np.argmax(field, axis=0).astype(np.int16)


def _inside_window(geometry):
    """Input voxels whose centre lies inside the prepared window (prepared index in
    (-0.5, n - 0.5) on every axis); the test grids keep every centre >= 1 voxel from that edge."""
    grid = np.indices(geometry.original_shape).reshape(3, -1)
    points = np.vstack([grid, np.ones(grid.shape[1])])
    index = (np.linalg.inv(geometry.affine) @ geometry.original_affine @ points)[:3]
    upper = np.asarray(geometry.shape)[:, None] - 0.5
    inside = np.all((index > -0.5) & (index < upper), axis=0)
    return inside.reshape(geometry.original_shape)


def test_label_round_trip_equals_the_input_except_where_cropped(tmp_path):
    """Stored shape (6, 10, 4) = canonical (10, 4, 6) at 2 x 2 x 4 mm -> (20, 8, 12) at the
    prepared spacing -> window (16, 12, 8): x and z cropped by 2 (one input voxel each side),
    y padded. The label goes through as an image with a [0, 4] window (k -> k / 4, exact)."""
    label = _random_label((6, 10, 4), seed=0)
    path = write_nii(tmp_path / "case.nii.gz", label, _permuted_lps_affine())
    record = _record(Intensity(kind="range", low=0.0, high=CLASSES - 1.0))
    prepared, geometry = prepare_volume(path, record, order=0)
    assert prepared.shape == PREPARED_SHAPE and prepared.dtype == np.float32
    prepared_label = np.rint(prepared * (CLASSES - 1)).astype(np.int32)

    restored = restore_label(prepared_label, geometry)
    original = nib.load(str(path))
    assert restored.shape == original.shape
    np.testing.assert_array_equal(restored.affine, original.affine)
    inside = _inside_window(geometry)
    assert 0 < inside.sum() < inside.size  # the crop really cut input voxels
    assert np.any(label[~inside] > 0)
    expected = np.where(inside, label, 0)
    np.testing.assert_array_equal(np.asarray(restored.dataobj), expected)

    # Through a file and back: the written NIfTI keeps the input's geometry exactly.
    nib.save(restored, str(tmp_path / "restored.nii.gz"))
    reread = nib.load(str(tmp_path / "restored.nii.gz"))
    np.testing.assert_array_equal(reread.affine, original.affine)
    np.testing.assert_array_equal(np.asarray(reread.dataobj), expected)


def test_content_inside_the_window_comes_back_exactly(tmp_path):
    label = np.zeros((6, 10, 4), np.int16)
    label[1:5, 2:8, 1:3] = octant_label((4, 6, 2), 4, margin=0)
    path = write_nii(tmp_path / "case.nii", label, _permuted_lps_affine())
    record = _record(Intensity(kind="range", low=0.0, high=CLASSES - 1.0))
    prepared, geometry = prepare_volume(nib.load(str(path)), record, order=0)
    restored = restore_label(np.rint(prepared * (CLASSES - 1)).astype(np.uint8), geometry)
    np.testing.assert_array_equal(np.asarray(restored.dataobj), label)


@pytest.mark.parametrize(("intensity", "crop_centre"), [
    (Intensity(kind="percentile", low=0.5, high=99.5), "image"),
    (Intensity(kind="range", low=-50.0, high=80.0), "body"),
])
def test_prepare_volume_is_the_preparation_chain(tmp_path, intensity, crop_centre):
    """On an oblique LPS image of another spacing and size, prepare_volume gives exactly the
    image (and prepared affine) that preparation writes for the same file."""
    shape, spacing = (22, 9, 7), (0.8, 1.3, 2.6)
    affine = oblique_affine(spacing)
    label = octant_label(shape, 3, margin=1)
    image = image_for(label, np.random.default_rng(1), scale=100.0, offset=-40.0)
    image_path = write_nii(tmp_path / "img.nii.gz", image, affine)
    label_path = write_nii(tmp_path / "lbl.nii.gz", label, affine)
    prepared_case = preprocess_case(
        FileRef(image_path), FileRef(label_path), num_classes=4, spacing=PREPARED_SPACING,
        shape=PREPARED_SHAPE, intensity=intensity, crop_centre=crop_centre)
    prepared, geometry = prepare_volume(image_path, _record(intensity, crop_centre))
    np.testing.assert_array_equal(prepared, prepared_case.image)
    np.testing.assert_allclose(geometry.affine, prepared_case.affine, atol=1e-9)

    # The label map back on the input grid: exact shape/affine, agreeing with the input label
    # wherever nearest resampling can (a coarser-then-finer round trip moves boundaries).
    restored = restore_label(prepared_case.label, geometry)
    assert restored.shape == shape
    np.testing.assert_array_equal(restored.affine, nib.load(str(image_path)).affine)
    inside = _inside_window(geometry)
    agreement = np.mean(np.asarray(restored.dataobj)[inside] == label[inside])
    assert agreement > 0.85
    entropy = restore_map(np.ones(PREPARED_SHAPE, np.float32), geometry)
    assert entropy.shape == shape and entropy.get_data_dtype() == np.float32
    np.testing.assert_array_equal(entropy.affine, restored.affine)
    values = np.asarray(entropy.dataobj)
    assert values.max() == pytest.approx(1.0) and values.min() >= 0.0


def test_recipe_from_a_real_record_and_old_records(tmp_path):
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    out = make_phantom(tmp_path / "phantom", PhantomSpec(cases=3, shape=(16, 16, 8)))
    record = json.loads((out / "dataset.json").read_text())["preprocessing"]
    recipe = PreparationRecipe.from_record(record)
    assert recipe.intensity == Intensity(kind="range", low=0.0, high=1.0)
    assert recipe.crop_centre == "image" and recipe.pad_value == 0.0
    assert recipe.shape == (16, 16, 8)
    full = PreparationRecipe.from_record(_record(Intensity(), crop_centre="body"))
    assert full.intensity == Intensity() and full.crop_centre == "body"


@pytest.mark.parametrize(("change", "message"), [
    ({"spacing": [1.0, 1.0]}, "spacing"),
    ({"shape": [16, 0, 8]}, "shape"),
    ({"intensity": "unknown"}, "intensity"),
    ({"intensity": {"kind": "range", "low": 0.0}}, "intensity"),
    ({"crop_centre": "label"}, "crop_centre"),
    ({"orientation": "LPS"}, "orientation"),
])
def test_bad_records_name_the_key(change, message):
    record = dict(_record(Intensity()), **change)
    with pytest.raises(DataError, match=message):
        PreparationRecipe.from_record(record)


def test_bad_volumes_and_outputs(tmp_path):
    record = _record(Intensity())
    bad = np.ones((6, 6, 6), np.float32)
    bad[1, 1, 1] = np.nan
    with pytest.raises(DataError, match="case7.nii.gz: 1 NaN"):
        prepare_volume(nib.Nifti1Image(bad, np.eye(4)), record, name="case7.nii.gz")
    with pytest.raises(DataError, match="3D"):
        prepare_volume(nib.Nifti1Image(np.ones((4, 4, 4, 2), np.float32), np.eye(4)), record)
    _, geometry = prepare_volume(nib.Nifti1Image(np.ones((6, 6, 6), np.float32), np.eye(4)),
                                 record)
    with pytest.raises(DataError, match="prepared shape"):
        restore_label(np.zeros((4, 4, 4), np.int32), geometry)
    with pytest.raises(DataError, match="integer"):
        restore_label(np.zeros(PREPARED_SHAPE, np.float32), geometry)
