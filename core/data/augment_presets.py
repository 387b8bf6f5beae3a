"""Augmentation ranges per data set (`data.name`), the one table `DataConfig` fills its
`data.max_rotation`, `data.max_translation`, `data.max_scale` and `data.isotropic_scale` from.

The paper (section 4) names the transforms (rotation, translation, scaling) but not their ranges;
the released configuration is the reference (ImgX-DiffSeg, `config_pelvic_diffusion.yaml` and
`config_amos_diffusion.yaml`): rotation up to 0.088 rad (about 5 degrees) about each axis,
scaling by a factor in [1 - 0.15, 1 + 0.15] drawn per axis, translation up to [20, 20, 4] voxels
(prostate MR, 256x256x48) or [10, 10, 10] voxels (AMOS CT, 192x128x128). The phantom and any data
set not listed keep the ranges used before this table existed (15 degrees, 3 voxels, one isotropic
factor in [0.9, 1.1]), so the quick grid's draws are unchanged.

Kept free of JAX so that validating a config does not import it; `augment.AUGMENT_PRESETS` is this
table.
"""

from __future__ import annotations

import math

#: Data set name used for names that have no entry of their own.
DEFAULT_PRESET = "phantom"

#: data.name -> augmentation ranges (3D; rotation in radians about X, Y, Z; translation in voxels
#: per axis; scaling factor in [1 - m, 1 + m] per axis, or one factor for all axes if isotropic).
AUGMENT_PRESETS: dict[str, dict] = {
    "phantom": {
        "max_rotation": (math.radians(15.0),) * 3,
        "max_translation": (3.0, 3.0, 3.0),
        "max_scale": (0.1, 0.1, 0.1),
        "isotropic_scale": True,
    },
    "prostate-mr": {
        "max_rotation": (0.088, 0.088, 0.088),
        "max_translation": (20.0, 20.0, 4.0),
        "max_scale": (0.15, 0.15, 0.15),
        "isotropic_scale": False,
    },
    "amos-ct": {
        "max_rotation": (0.088, 0.088, 0.088),
        "max_translation": (10.0, 10.0, 10.0),
        "max_scale": (0.15, 0.15, 0.15),
        "isotropic_scale": False,
    },
}


#: `data.augment_space`: where rotations and scalings act. "mm": in physical space (voxel
#: spacing D, a rigid rotation of the anatomy; this project's default). "voxel": on the voxel
#: index grid as the released code does (ImgX-DiffSeg v0.1.0 `imgx/datasets/augmentation.py:
#: 241-278`), which shears the anatomy on anisotropic grids (0.75x0.75x2.5 mm, 1.5x1.5x5 mm).
AUGMENT_SPACES = ("mm", "voxel")


def augment_spacing(space: str, spacing):
    """The `spacing` argument of `augment.random_affine` for `data.augment_space`: the data
    set's voxel spacing for "mm", None (index space) for "voxel"; ValueError naming the value
    otherwise."""
    if space not in AUGMENT_SPACES:
        raise ValueError(f"data.augment_space must be one of {AUGMENT_SPACES}, got {space!r}")
    if space == "voxel" or spacing is None:
        return None
    return tuple(float(s) for s in spacing)


def augment_preset(name: str) -> dict:
    """The ranges for data set `name` (a copy), `AUGMENT_PRESETS[DEFAULT_PRESET]` if unlisted."""
    return dict(AUGMENT_PRESETS.get(name, AUGMENT_PRESETS[DEFAULT_PRESET]))
