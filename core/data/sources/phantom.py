"""A synthetic multi-organ phantom: the embedded default data set (no download).

Each case is an abdomen-like volume on an anisotropic grid (default 32 x 32 x 16 voxels of
1.5 x 1.5 x 3.0 mm) with 8 foreground classes whose sizes span more than two orders of
magnitude (at the default shape: body wall ~2600 voxels, liver ~1200, down to ~20 for the
core and the lymph node):

  1 body_wall  a shell around the body, touching the liver      (largest)
  2 liver      large ellipsoid, touching body wall and kidney
  3 kidney     medium, painted over the liver's edge (touching)
  4 spleen     medium
  5 capsule    ellipsoid shell around the core (nested)
  6 core       small ellipsoid nested inside the capsule, low contrast to it
  7 vessel     a thin tube curving along Z
  8 node       a tiny sphere, darker than the surrounding tissue

Geometry is defined in coordinates normalised to the field of view, so `--shape` rescales the
anatomy; every case draws its own organ positions (+-0.06 FOV), radii (x0.85-1.15 per axis),
in-plane rotations (+-25 deg), class intensities (+-0.04), a smooth multiplicative bias field
(+-20 %), partial-volume blur and Gaussian noise (sigma 0.05). A case is redrawn (from the same
random stream) until every class covers at least `MIN_VOXEL_FRACTION` of its nominal size, so
every class is present in every case. Case i uses `np.random.default_rng([seed, i])`: one seed
gives the same data set, and a case does not depend on how many cases are generated.

Splits: test = the last max(1, n // 3) cases, valid = the max(1, n // 12) before them, train =
the rest (24 cases -> 14 / 2 / 8).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
from diffseg3d.core.data.nifti.io import DataError
from diffseg3d.core.data.preparation import check_geometry, write_prepared
from diffseg3d.core.data.preprocess import PreparedCase
from scipy import ndimage

CLASS_NAMES = ["body_wall", "liver", "kidney", "spleen", "capsule", "core", "vessel", "node"]
DEFAULT_SHAPE = (32, 32, 16)
DEFAULT_SPACING = (1.5, 1.5, 3.0)
DEFAULT_CASES = 24
#: A redrawn case must give each class at least this fraction of its nominal voxel count.
MIN_VOXEL_FRACTION = 0.4
_MAX_DRAWS = 50

# Nominal organs: centre and radii in FOV-normalised units, mean intensity in [0, 1].
_TISSUE, _AIR = 0.35, 0.0
_BODY = {"radii": (0.92, 0.8, 0.95), "wall": 0.15, "intensity": 0.55}
_ELLIPSOIDS = {
    "liver": {"centre": (-0.25, 0.1, 0.05), "radii": (0.6, 0.45, 0.6), "intensity": 0.62},
    "spleen": {"centre": (0.42, 0.38, 0.15), "radii": (0.36, 0.34, 0.42), "intensity": 0.5},
    "kidney": {"centre": (0.25, 0.12, -0.05), "radii": (0.2, 0.24, 0.3), "intensity": 0.8},
    "capsule": {"centre": (0.3, -0.4, -0.15), "radii": (0.28, 0.22, 0.32), "intensity": 0.45},
}
_CORE = {"radii_fraction": 0.5, "intensity": 0.6}
_VESSEL = {"x": -0.05, "y": -0.35, "radius": 0.09, "z_extent": 0.8, "intensity": 0.95}
_NODE = {"centre": (-0.45, -0.45, -0.3), "radius": 0.17, "intensity": 0.12}
_NOISE_SIGMA, _BLUR_SIGMA, _BIAS_AMPLITUDE = 0.05, 0.7, 0.2


def phantom_splits(case_ids: list[str]) -> dict[str, list[str]]:
    """Split rule of the module docstring; needs at least 3 cases."""
    n = len(case_ids)
    if n < 3:
        raise DataError(f"phantom needs at least 3 cases for train/valid/test, got {n}")
    n_test, n_valid = max(1, n // 3), max(1, n // 12)
    n_train = n - n_test - n_valid
    return {"train": case_ids[:n_train], "valid": case_ids[n_train:n_train + n_valid],
            "test": case_ids[n_train + n_valid:]}


def _grid(shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FOV-normalised voxel-centre coordinates in [-1, 1], each (X, Y, Z)."""
    axes = [(np.arange(n) + 0.5) / n * 2.0 - 1.0 for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def _ellipsoid(coords, centre, radii, angle) -> np.ndarray:
    """Inside of an ellipsoid rotated by `angle` (radians) about Z; bool (X, Y, Z)."""
    x, y, z = (c - o for c, o in zip(coords, centre, strict=True))
    cos, sin = np.cos(angle), np.sin(angle)
    xr, yr = cos * x + sin * y, -sin * x + cos * y
    return (xr / radii[0]) ** 2 + (yr / radii[1]) ** 2 + (z / radii[2]) ** 2 <= 1.0


def _nominal_sizes(shape) -> np.ndarray:
    """Voxel counts of each class in the unperturbed phantom, (num_classes,) (index 0 unused)."""
    label, _ = _draw_case(np.random.default_rng(0), shape, perturb=False)
    return np.bincount(np.maximum(label, 0).ravel(), minlength=len(CLASS_NAMES) + 1)


def _draw_case(rng: np.random.Generator, shape, *, perturb: bool = True):
    """One label map (X, Y, Z) int32 and its per-class mean intensities (num_classes + 1,)."""
    coords = _grid(shape)

    def jitter(scale):
        return rng.uniform(-scale, scale) if perturb else 0.0

    def radii(r):
        return tuple(v * (rng.uniform(0.85, 1.15) if perturb else 1.0) for v in r)

    label = np.zeros(shape, np.int32)
    body_r = radii(_BODY["radii"])
    body_c = (jitter(0.03), jitter(0.03), 0.0)
    outer = _ellipsoid(coords, body_c, body_r, 0.0)
    inner_r = tuple(r - _BODY["wall"] for r in body_r)
    inner = _ellipsoid(coords, body_c, inner_r, 0.0)
    label[outer & ~inner] = 1
    masks = {}
    for name, spec in _ELLIPSOIDS.items():
        centre = tuple(c + o + jitter(0.06) for c, o in zip(spec["centre"], body_c, strict=True))
        r = radii(spec["radii"])
        angle = np.deg2rad(jitter(25.0))
        masks[name] = (_ellipsoid(coords, centre, r, angle) & inner, centre, r, angle)
    # Painting order makes the touching and nesting: kidney over the liver's edge, core in capsule.
    for name in ("liver", "spleen", "kidney", "capsule"):
        label[masks[name][0]] = CLASS_NAMES.index(name) + 1
    _, c_centre, c_radii, c_angle = masks["capsule"]
    core_r = tuple(r * _CORE["radii_fraction"] * (rng.uniform(0.9, 1.1) if perturb else 1.0)
                   for r in c_radii)
    label[_ellipsoid(coords, c_centre, core_r, c_angle) & inner] = CLASS_NAMES.index("core") + 1
    x, y, z = coords
    bend = jitter(0.15)
    vx = _VESSEL["x"] + body_c[0] + jitter(0.05) + bend * z**2
    vy = _VESSEL["y"] + body_c[1] + jitter(0.05)
    vr = _VESSEL["radius"] * (rng.uniform(0.9, 1.15) if perturb else 1.0)
    vessel = ((x - vx) ** 2 + (y - vy) ** 2 <= vr**2) & (np.abs(z) <= _VESSEL["z_extent"])
    label[vessel & inner] = CLASS_NAMES.index("vessel") + 1
    n_centre = tuple(c + o + jitter(0.06) for c, o in zip(_NODE["centre"], body_c, strict=True))
    n_r = _NODE["radius"] * (rng.uniform(0.9, 1.15) if perturb else 1.0)
    node = _ellipsoid(coords, n_centre, (n_r, n_r, n_r), 0.0)
    label[node & inner] = CLASS_NAMES.index("node") + 1

    means = np.empty(len(CLASS_NAMES) + 1)
    means[0] = _TISSUE
    means[1] = _BODY["intensity"]
    for name, spec in _ELLIPSOIDS.items():
        means[CLASS_NAMES.index(name) + 1] = spec["intensity"]
    means[CLASS_NAMES.index("core") + 1] = _CORE["intensity"]
    means[CLASS_NAMES.index("vessel") + 1] = _VESSEL["intensity"]
    means[CLASS_NAMES.index("node") + 1] = _NODE["intensity"]
    if perturb:
        means = means + rng.uniform(-0.04, 0.04, size=means.shape)
    label_air = ~outer
    return np.where(label_air, -1, label), means


def _bias_field(rng: np.random.Generator, shape) -> np.ndarray:
    """Smooth multiplicative bias: exp of a random quadratic polynomial, within +-amplitude."""
    x, y, z = _grid(shape)
    terms = [x, y, z, x * y, x * z, y * z, x**2 - 1 / 3, y**2 - 1 / 3, z**2 - 1 / 3]
    weights = rng.normal(size=len(terms))
    poly = sum(w * t for w, t in zip(weights, terms, strict=True))
    poly = poly / max(np.abs(poly).max(), 1e-6)
    return np.exp(np.log1p(_BIAS_AMPLITUDE) * poly)


def phantom_case(index: int, *, shape=DEFAULT_SHAPE, seed: int = 0) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Case `index`: (image (X, Y, Z) float32 in [0, 1], label (X, Y, Z) int32)."""
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng([seed, index])
    nominal = _nominal_sizes(shape)
    for _ in range(_MAX_DRAWS):
        label_air, means = _draw_case(rng, shape)
        label = np.maximum(label_air, 0)
        counts = np.bincount(label.ravel(), minlength=len(CLASS_NAMES) + 1)
        if np.all(counts[1:] >= np.maximum(1, MIN_VOXEL_FRACTION * nominal[1:])):
            break
    else:
        raise DataError(f"phantom shape {shape}: could not draw case {index} with every class "
                        "present; use a larger --shape")
    clean = np.where(label_air < 0, _AIR, means[label])
    blurred = ndimage.gaussian_filter(clean, _BLUR_SIGMA, mode="nearest")
    image = blurred * _bias_field(rng, shape) + rng.normal(0.0, _NOISE_SIGMA, size=shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


def phantom_affine(shape, spacing) -> np.ndarray:
    """Voxel-to-world affine: diagonal spacing, the volume centred on the world origin."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * np.asarray(spacing, dtype=np.float64)
    return affine


@dataclasses.dataclass(frozen=True)
class PhantomSpec:
    """Parameters of `data phantom`: case count, grid shape, spacing (mm) and seed."""

    cases: int = DEFAULT_CASES
    shape: tuple[int, int, int] = DEFAULT_SHAPE
    spacing: tuple[float, float, float] = DEFAULT_SPACING
    seed: int = 0


def make_phantom(out: Path | str, spec: PhantomSpec = PhantomSpec(), *,
                 overwrite: bool = False, workers: int = 1) -> Path:
    """Generate the phantom data set into the prepared folder `out` (atomic, see preparation)."""
    check_geometry(spec.spacing, spec.shape)  # finite positive spacing, whole sizes
    if min(spec.shape) < 8:
        raise DataError(f"phantom --shape must be 3 sizes >= 8, got {list(spec.shape)}")
    ids = [f"phantom_{i:03d}" for i in range(spec.cases)]

    # The generator's name as prepared folders record it (part of their fingerprint, so it stays
    # the name this module had when the format was fixed).
    return write_prepared(
        out, name="phantom", class_names=CLASS_NAMES, spacing=spec.spacing, shape=spec.shape,
        splits=phantom_splits(ids),
        source={"kind": "phantom", "generator": "diffseg3d.core.data.phantom",
                "cases": spec.cases, "seed": spec.seed},
        preprocessing={"spacing": list(spec.spacing), "shape": list(spec.shape),
                       "intensity": "synthetic, clipped to [0, 1]",
                       "noise_sigma": _NOISE_SIGMA, "blur_sigma_voxels": _BLUR_SIGMA,
                       "bias_amplitude": _BIAS_AMPLITUDE},
        cases=functools.partial(_prepared_case, spec=spec), overwrite=overwrite, workers=workers)


def _prepared_case(case_id: str, *, spec: PhantomSpec) -> PreparedCase:
    image, label = phantom_case(int(case_id.rsplit("_", 1)[1]), shape=spec.shape, seed=spec.seed)
    affine = phantom_affine(spec.shape, spec.spacing)
    original = {"image": None, "affine": affine.tolist(), "shape": list(spec.shape)}
    return PreparedCase(image=image, label=label, affine=affine, original=original)
