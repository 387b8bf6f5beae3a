"""Builders of small real NIfTI sources in the exact download layouts (prostate zip, AMOS)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from diffseg3d.core.data.nifti.io import nifti_bytes


def oblique_affine(spacing, angle_deg=8.0, flips=(-1, -1, 1), origin=(30.0, -12.0, 5.0)):
    """LPS-like (flipped X, Y) grid rotated by `angle_deg` about Z: a non-trivial affine."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(np.asarray(flips) * np.asarray(spacing, float))
    affine[:3, 3] = origin
    return affine


def octant_label(shape, num_classes, margin=2):
    """Label map: classes 1..num_classes tile the octants of a central box; 0 elsewhere."""
    label = np.zeros(shape, np.int16)
    lo = [margin] * 3
    hi = [n - margin for n in shape]
    mid = [(a + b) // 2 for a, b in zip(lo, hi, strict=True)]
    k = 0
    for ix in range(2):
        for iy in range(2):
            for iz in range(2):
                if k >= num_classes:
                    return label
                sl = tuple(slice(lo[d], mid[d]) if i == 0 else slice(mid[d], hi[d])
                           for d, i in enumerate((ix, iy, iz)))
                label[sl] = k + 1
                k += 1
    return label


def image_for(label, rng, scale=100.0, offset=0.0):
    """Image whose intensity depends on the class, plus noise."""
    return (offset + scale * (label.astype(np.float32) + 1) / 10.0
            + rng.normal(0, scale * 0.02, label.shape)).astype(np.float32)


def write_nii(path: Path, array, affine, gz=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    gz = str(path).endswith(".gz") if gz is None else gz
    path.write_bytes(nifti_bytes(np.asarray(array), affine, gz=gz))
    return path


def make_prostate_zip(path: Path, rows, *, shape=(20, 20, 8), spacing=(0.8, 0.8, 2.0),
                      seed=0, overrides=None):
    """data.zip with data/<uid>_img.nii, data/<uid>_mask.nii and institution.txt.

    `overrides` {member name: bytes} replaces members (bad-input tests)."""
    rng = np.random.default_rng(seed)
    affine = oblique_affine(spacing)
    members = {}
    for uid, _ in rows:
        label = octant_label(shape, 8)
        members[f"data/{uid}_img.nii"] = nifti_bytes(image_for(label, rng), affine)
        members[f"data/{uid}_mask.nii"] = nifti_bytes(label.astype(np.uint8), affine)
    members["institution.txt"] = "".join(f"{u} {i}\n" for u, i in rows).encode()
    members.update(overrides or {})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path, affine


def make_amos_folder(root: Path, train_ids, valid_ids, *, shape=(16, 12, 6),
                     spacing=(1.0, 1.0, 4.0)):
    """AMOS-like folder: amos22/{dataset.json, imagesTr, labelsTr, imagesVa, labelsVa}.

    Images are piecewise constant in HU (air -1500, organ k 40 + 20 k, one voxel 2000)."""
    base = root / "amos22"
    affine = oblique_affine(spacing, angle_deg=0.0, flips=(1, -1, 1))
    names = {str(k): f"organ{k}" for k in range(1, 16)}
    meta = {"name": "AMOS", "labels": {"0": "background", **names}, "training": [],
            "validation": []}
    for ids, img_dir, lbl_dir, key in ((train_ids, "imagesTr", "labelsTr", "training"),
                                      (valid_ids, "imagesVa", "labelsVa", "validation")):
        for i in ids:
            name = f"amos_{i:04d}.nii.gz"
            label = octant_label(shape, 8, margin=1)
            image = np.full(shape, -1500.0, np.float32)  # air below the HU window
            image[label > 0] = 40.0 + 20 * label[label > 0]
            image[0, 0, 0] = 2000.0  # bone above the HU window
            write_nii(base / img_dir / name, image, affine)
            write_nii(base / lbl_dir / name, label.astype(np.uint8), affine)
            meta[key].append({"image": f"./{img_dir}/{name}", "label": f"./{lbl_dir}/{name}"})
    (base / "dataset.json").write_text(json.dumps(meta))
    return base, affine


def world_centroid(label, affine, k):
    """World (mm) centroid of class k."""
    idx = np.argwhere(label == k).mean(axis=0)
    return (affine @ np.append(idx, 1.0))[:3]


def load(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine
