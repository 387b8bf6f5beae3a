"""Per-case preprocessing shared by every source: read, check, reorient, normalise, resample, crop.

Order (paper section 4, "normalised, resampled, and centre-cropped"):
1. read image and label, reject corrupt files, NaN/inf, bad label values, grid mismatch;
2. reorient both to closest RAS (`resample.to_canonical`);
3. clip intensities (fixed HU window for CT, 0.5/99.5 percentiles for MR) and rescale to [0, 1];
4. resample to the target spacing (linear image, nearest label);
5. centre crop/pad to the target shape, the window chosen from the image only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from diffseg3d.core.data.crop import crop_or_pad, crop_start
from diffseg3d.core.data.nifti.io import (
    FileRef,
    Volume,
    check_label_values,
    check_same_grid,
    read_volume,
)
from diffseg3d.core.data.resample import resample_to_spacing, to_canonical


@dataclasses.dataclass(frozen=True)
class Intensity:
    """Intensity clipping then linear rescaling of the clip window to [0, 1].

    kind "range": clip to the fixed window [low, high] (e.g. HU [-991, 362] for CT);
    kind "percentile": clip to the image's [low, high] percentiles (e.g. 0.5, 99.5 for MR).
    """

    kind: str = "percentile"
    low: float = 0.5
    high: float = 99.5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def normalise_intensity(image: np.ndarray, intensity: Intensity) -> np.ndarray:
    """Clip to the window of `intensity` and map it linearly onto [0, 1]; (X, Y, Z) float32."""
    if intensity.kind == "range":
        lo, hi = float(intensity.low), float(intensity.high)
    elif intensity.kind == "percentile":
        lo, hi = (float(v) for v in np.percentile(image, [intensity.low, intensity.high]))
    else:
        raise ValueError(f"intensity kind {intensity.kind!r} is not 'range' or 'percentile'")
    if hi <= lo:
        return np.zeros(image.shape, np.float32)
    return ((np.clip(image, lo, hi) - lo) / (hi - lo)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class PreparedCase:
    """One prepared case: image (X, Y, Z) float32 in [0, 1], label (X, Y, Z) int32, the
    prepared affine (4, 4), and provenance of the original image (name, affine, shape)."""

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    original: dict


def preprocess_case(image_ref: FileRef, label_ref: FileRef, *, num_classes: int, spacing,
                    shape, intensity: Intensity, crop_centre: str = "image") -> PreparedCase:
    """Run the preprocessing chain of this module on one image/label pair."""
    image = read_volume(image_ref)
    label = read_volume(label_ref, is_label=True)
    check_same_grid(image, label, image_ref.name, label_ref.name)
    check_label_values(label.array, num_classes, label_ref.name)
    original = {
        "image": image_ref.name,
        "affine": image.affine.tolist(),
        "shape": list(image.array.shape),
    }
    image, label = to_canonical(image), to_canonical(label)
    image = Volume(normalise_intensity(image.array, intensity), image.affine)
    image = resample_to_spacing(image, spacing, order=1)
    label = resample_to_spacing(label, spacing, order=0)
    start = crop_start(image.array, shape, crop_centre)
    image = crop_or_pad(image, start, shape)
    label = crop_or_pad(label, start, shape)
    return PreparedCase(image=image.array.astype(np.float32), label=label.array.astype(np.int32),
                        affine=image.affine, original=original)
