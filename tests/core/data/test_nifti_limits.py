"""A NIfTI header claiming a huge shape is refused naming the file and the shape before its data
is read or allocated (also inside a zip and a gzip stream); folders with spaces and non-ASCII
characters work for preparing and reading data."""

import gzip
import tracemalloc
import zipfile

import nibabel as nib
import numpy as np
import pytest
from diffseg3d.cli.main import main
from diffseg3d.core.data import DataError, PreparedDataset
from diffseg3d.core.data.nifti.io import (
    DEFAULT_MAX_VOXELS,
    MAX_VOXELS_ENV,
    FileRef,
    nifti_bytes,
    read_volume,
)

from .nifti_builders import oblique_affine, octant_label, write_nii

AFFINE = oblique_affine((1.0, 1.0, 2.0))


def _claiming(klass, shape) -> bytes:
    """A small NIfTI file whose header claims `shape` (float32) and holds 8 voxels."""
    header = klass(np.zeros((2, 2, 2), np.float32), np.eye(4)).header.copy()
    header.set_data_shape(shape)
    pad = b"\0" * (int(header["vox_offset"]) - len(header.binaryblock))
    return header.binaryblock + pad + np.zeros(8, np.float32).tobytes()


def _read_peak(ref) -> tuple[str, int]:
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            read_volume(ref)
        return str(err.value), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("klass", "shape", "voxels"), [
    (nib.Nifti2Image, (100000, 100000, 100000), "1,000,000,000,000,000"),
    (nib.Nifti1Image, (30000, 30000, 30000), "27,000,000,000,000"),
])
def test_huge_header_shape_is_refused_before_allocating(tmp_path, klass, shape, voxels):
    path = tmp_path / "huge.nii"
    path.write_bytes(_claiming(klass, shape))
    message, peak = _read_peak(path)
    assert message == (
        f"{path}: header claims shape {shape} = {voxels} voxels "
        f"({np.prod(shape, dtype=float) * 4 / 2**30:,.1f} GiB of float32), more than the limit of "
        f"{DEFAULT_MAX_VOXELS:,} voxels; refused before reading its data (set {MAX_VOXELS_ENV} "
        "to allow larger volumes)")
    assert peak < 8 * 2**20


def test_huge_header_in_a_gzip_member_of_a_zip_is_refused(tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data/001_img.nii.gz", gzip.compress(
            _claiming(nib.Nifti2Image, (100000, 100000, 100000))))
    message, peak = _read_peak(FileRef(archive, "data/001_img.nii.gz"))
    assert message.startswith(f"{archive}:data/001_img.nii.gz: header claims shape "
                              "(100000, 100000, 100000)")
    assert peak < 8 * 2**20


def test_gzip_bomb_within_the_header_shape_is_never_decompressed(tmp_path):
    # 64 MiB of zeros behind a header claiming 8 voxels: only header + 1 MiB are inflated.
    raw = nifti_bytes(np.ones((2, 2, 2), np.float32), np.eye(4)) + bytes(64 * 2**20)
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(raw, compresslevel=1))
    tracemalloc.start()
    try:
        volume = read_volume(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(volume.array, np.ones((2, 2, 2)))
    assert peak < 16 * 2**20


def test_the_limit_is_set_by_the_environment(tmp_path, monkeypatch):
    path = write_nii(tmp_path / "v.nii.gz", np.ones((20, 20, 8), np.float32), np.eye(4))
    monkeypatch.setenv(MAX_VOXELS_ENV, "3199")
    with pytest.raises(DataError, match=r"v\.nii\.gz: header claims shape \(20, 20, 8\) = "
                                         r"3,200 voxels .* limit of 3,199 voxels"):
        read_volume(path)
    monkeypatch.setenv(MAX_VOXELS_ENV, "3200")
    assert read_volume(path).array.shape == (20, 20, 8)
    monkeypatch.setenv(MAX_VOXELS_ENV, "lots")
    with pytest.raises(DataError, match=f"{MAX_VOXELS_ENV}='lots': expected a positive whole"):
        read_volume(path)


def test_gzip_cut_inside_its_data_names_the_bytes_missing(tmp_path):
    raw = gzip.compress(nifti_bytes(np.random.default_rng(0).random((20, 20, 8))
                                    .astype(np.float32), np.eye(4)))
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.nii\.gz: corrupt or truncated gzip stream \(it "
                                        r"ends after [\d,]+ bytes of the 13,152 its header"):
        read_volume(path)


def test_prepare_and_read_with_spaces_and_non_ascii_folders(tmp_path, capsys):
    src = tmp_path / "scans de Zoë 患者"
    label = octant_label((12, 12, 6), 2, margin=1)
    ids = ["case0", "case1", "case2"]
    volumes = {case: np.random.default_rng(i).random(label.shape) * 50
               for i, case in enumerate(ids)}
    for case, image in volumes.items():
        write_nii(src / "images tr" / f"{case}_0000.nii.gz", image, AFFINE)
        write_nii(src / "labels tr" / f"{case}.nii.gz", label.astype(np.uint8), AFFINE)
    out = tmp_path / "préparé données ✓"
    rc = main(["data", "prepare", "nifti", "--images", str(src / "images tr"), "--labels",
               str(src / "labels tr"), "--class-names", "a", "b", "--spacing", "1", "1", "2",
               "--shape", "8", "8", "4", "--valid-fraction", "0.34", "--test-fraction", "0.34",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    ds = PreparedDataset.load(out, verify="full")
    assert sorted(ds.all_case_ids()) == ids
    images, labels = ds.arrays("train")[:2]
    assert images.shape[1:] == (8, 8, 4) and labels.shape == images.shape and labels.max() == 2
    assert read_volume(ds.image_path(ids[0])).array.shape == (8, 8, 4)
