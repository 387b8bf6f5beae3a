"""A new volume through the preparation of a data set, and the model's output back to its grid.

`prepare_volume` replays, on one image that was never prepared, the chain of
`preprocess.preprocess_case` with the settings a prepared set records in its dataset.json
`preprocessing`:
1. reorient to the closest RAS axis order (`resample.to_canonical`, lossless);
2. clip and rescale intensities to [0, 1] (`preprocess.normalise_intensity`: the recorded fixed
   window, or the recorded percentiles of this image);
3. resample to the prepared spacing (`resample.resample_to_spacing`, linear for images);
4. centre crop/pad to the prepared shape (`crop.crop_start` on this image, image centre or body
   mask as recorded, then `crop.crop_or_pad` with the recorded pad value).
It returns the prepared array and a `VolumeGeometry` (input grid and prepared grid).

`restore_label` / `restore_map` undo the chain for an output on the prepared grid with ONE
resampling through world coordinates (`resample.resample_to_grid`, as `writeback` does for the
prepared cases): reorientation, resampling and crop/pad are all affine index maps between the two
grids, so the result has the input's exact shape and affine. Labels use nearest neighbour; float
maps (entropy, disagreement) linear interpolation by default. Input voxels outside the prepared
window (cut off by the crop) get background 0 in labels and `fill` (0.0) in maps: the model never
saw them.

Records older than the replay keys: `orientation` absent means RAS (the only orientation any
preparation has used), `crop_centre` absent means "image", `pad_value` absent means 0.0, and the
phantom's intensity note "synthetic, clipped to [0, 1]" means the fixed window [0, 1] (phantom
images are generated in [0, 1]).
"""

from __future__ import annotations

import dataclasses
import os

import nibabel as nib
import numpy as np
from diffseg3d.core.data.crop import CROP_CENTRES, crop_or_pad, crop_start
from diffseg3d.core.data.nifti.io import DataError, Volume, check_finite, nifti_image, read_volume
from diffseg3d.core.data.preprocess import Intensity, normalise_intensity
from diffseg3d.core.data.resample import resample_to_grid, resample_to_spacing, to_canonical

#: Intensity notes of generated data sets (no file was ever normalised) -> the window to replay.
GENERATED_INTENSITY = {"synthetic, clipped to [0, 1]": Intensity(kind="range", low=0.0, high=1.0)}
_INTENSITY_KINDS = ("range", "percentile")


@dataclasses.dataclass(frozen=True)
class PreparationRecipe:
    """What `prepare_volume` replays: prepared spacing (mm) and shape (X, Y, Z), intensity
    window, crop centre ("image" | "body") and the value of padded voxels."""

    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    intensity: Intensity
    crop_centre: str = "image"
    pad_value: float = 0.0

    @classmethod
    def from_record(cls, record: dict, where: str = "dataset.json preprocessing"
                    ) -> PreparationRecipe:
        """Parse a dataset.json `preprocessing` record; `DataError` names the bad key/value."""
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a mapping, got {type(record).__name__}")
        spacing = _three(record, "spacing", float, where)
        shape = _three(record, "shape", int, where)
        orientation = str(record.get("orientation", "RAS"))
        if not orientation.startswith("RAS"):
            raise DataError(f"{where}: orientation {orientation!r} is not RAS; only RAS is "
                            "replayed")
        image_resample = (record.get("resample") or {}).get("image", "linear")
        if image_resample != "linear":
            raise DataError(f"{where}: resample.image {image_resample!r} is not 'linear'")
        crop_centre = record.get("crop_centre", "image")
        if crop_centre not in CROP_CENTRES:
            raise DataError(f"{where}: crop_centre {crop_centre!r} is not one of {CROP_CENTRES}")
        return cls(spacing=spacing, shape=shape, intensity=_intensity(record, where),
                   crop_centre=crop_centre, pad_value=float(record.get("pad_value", 0.0)))


def _three(record: dict, key: str, kind, where: str) -> tuple:
    values = record.get(key)
    try:
        out = tuple(kind(v) for v in values)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(np.isfinite(v) and v > 0 for v in out):
        raise DataError(f"{where}: {key} must be 3 positive numbers, got {values!r}")
    return out


def _intensity(record: dict, where: str) -> Intensity:
    value = record.get("intensity")
    if isinstance(value, str) and value in GENERATED_INTENSITY:
        return GENERATED_INTENSITY[value]
    if not isinstance(value, dict) or value.get("kind") not in _INTENSITY_KINDS:
        raise DataError(f"{where}: intensity {value!r} is not a window "
                        f"{{'kind': 'range' | 'percentile', 'low': .., 'high': ..}}")
    try:
        return Intensity(kind=value["kind"], low=float(value["low"]), high=float(value["high"]))
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{where}: intensity {value!r}: bad or missing low/high ({err})") from None


@dataclasses.dataclass(frozen=True)
class VolumeGeometry:
    """The input grid (affine (4, 4), shape) and the prepared grid it was mapped to."""

    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    affine: np.ndarray
    shape: tuple[int, int, int]


def _as_volume(image: Volume | nib.spatialimages.SpatialImage | str | os.PathLike,
               name: str) -> Volume:
    if isinstance(image, Volume):
        volume = image
    elif isinstance(image, nib.spatialimages.SpatialImage):
        volume = Volume(np.asarray(image.dataobj), np.asarray(image.affine, np.float64))
    else:
        return read_volume(image)  # checks 3D, finite voxels and a valid affine, naming the file
    if volume.array.ndim != 3:
        raise DataError(f"{name}: expected a 3D volume, got shape {volume.array.shape}")
    check_finite(volume.array, name)
    return volume


def prepare_volume(image: Volume | nib.spatialimages.SpatialImage | str | os.PathLike,
                   preprocessing: dict | PreparationRecipe, *, order: int = 1,
                   name: str = "input volume") -> tuple[np.ndarray, VolumeGeometry]:
    """Replay the preparation of a data set on one new volume (module docstring, steps 1-4).

    Args:
        image: a `Volume`, a nibabel image or a NIfTI path; (X, Y, Z) in any orientation.
        preprocessing: the data set's dataset.json `preprocessing` record (or a parsed recipe).
        order: resampling order, 1 (linear) as preparation does for images; 0 pushes a label map
            through the same grid change.
        name: how errors name the volume (a file name).

    Returns:
        (prepared array (X, Y, Z) float32 of the recipe's shape, its `VolumeGeometry`).
    """
    recipe = (preprocessing if isinstance(preprocessing, PreparationRecipe)
              else PreparationRecipe.from_record(preprocessing))
    volume = _as_volume(image, name)
    original_affine = np.asarray(volume.affine, np.float64)
    original_shape = tuple(int(n) for n in volume.array.shape)
    volume = to_canonical(volume)
    volume = Volume(normalise_intensity(volume.array, recipe.intensity), volume.affine)
    volume = resample_to_spacing(volume, recipe.spacing, order=order)
    start = crop_start(volume.array, recipe.shape, recipe.crop_centre)
    volume = crop_or_pad(volume, start, recipe.shape, pad_value=recipe.pad_value)
    geometry = VolumeGeometry(original_affine=original_affine, original_shape=original_shape,
                              affine=np.asarray(volume.affine, np.float64), shape=recipe.shape)
    return volume.array.astype(np.float32, copy=False), geometry


def _to_original_grid(values: np.ndarray, geometry: VolumeGeometry, *, order: int,
                      fill: float) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != tuple(geometry.shape):
        raise DataError(f"output shape {values.shape} differs from the prepared shape "
                        f"{tuple(geometry.shape)}")
    return resample_to_grid(values, geometry.affine, geometry.original_affine,
                            geometry.original_shape, order=order, cval=fill)


def restore_label(label: np.ndarray, geometry: VolumeGeometry) -> nib.Nifti1Image:
    """Label map (X, Y, Z) int on the prepared grid -> NIfTI on the input's grid (its shape and
    affine), nearest neighbour; voxels outside the prepared window are background 0."""
    label = np.asarray(label)
    if label.dtype.kind not in "iub":
        raise DataError(f"restore_label needs an integer label map, got dtype {label.dtype}")
    if label.size and label.min() < 0:
        raise DataError(f"restore_label: negative label {label.min()}")
    restored = _to_original_grid(label.astype(np.int32), geometry, order=0, fill=0)
    return nifti_image(restored, geometry.original_affine, is_label=True)


def restore_map(values: np.ndarray, geometry: VolumeGeometry, *, order: int = 1,
                fill: float = 0.0) -> nib.Nifti1Image:
    """Float map (X, Y, Z) on the prepared grid (entropy, disagreement) -> float32 NIfTI on the
    input's grid; linear interpolation by default (`order=0` for nearest), `fill` outside the
    prepared window."""
    restored = _to_original_grid(np.asarray(values, np.float32), geometry, order=order,
                                 fill=fill)
    return nifti_image(restored, geometry.original_affine, is_label=False)
