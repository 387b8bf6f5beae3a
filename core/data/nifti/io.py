"""Reading and writing NIfTI volumes with errors that name the file.

Sources are read as bytes (from a folder or from a member of a zip archive) so that a zip download
never has to be extracted to disk. Every read checks that the file parses completely, is 3D and
holds only finite voxels; a corrupt or truncated file raises `DataError` with its name.

The header is read first: a volume whose header claims more than `max_voxels()` voxels (e.g. a
junk or hostile header claiming 100000^3) is refused, naming the file and the shape, before its
data is read, decompressed or allocated; then only the bytes the header accounts for are read
(a gzip stream is decompressed incrementally, never past what the header needs plus a little).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import math
import os
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np


class DataError(ValueError):
    """Bad input data: the message names the offending file, key or value."""


#: Environment variable raising (or lowering) the most voxels one NIfTI volume may hold.
MAX_VOXELS_ENV = "DIFFSEG3D_MAX_VOXELS"

#: Default of `max_voxels()`: 2**30 voxels, 4 GiB as float32; a 512 x 512 x 1000 CT has 2.6e8.
DEFAULT_MAX_VOXELS = 2**30

#: Bytes of a NIfTI-2 header (NIfTI-1: 348); read first to learn the data's size.
_HEADER_BYTES = 540

#: What is read of a file whose header does not parse (enough for nibabel to say why).
_UNPARSED_BYTES = 64 * 1024

#: Decompressed bytes a gzip stream may run past its header's needs while its end (and CRC) is
#: looked for; beyond this the trailing data is not read.
_GZIP_SLACK = 1 << 20


def max_voxels() -> int:
    """The most voxels a NIfTI volume may hold: `DIFFSEG3D_MAX_VOXELS` or DEFAULT_MAX_VOXELS."""
    text = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"{MAX_VOXELS_ENV}={text!r}: expected a positive whole number of voxels")
    return value


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _data_end(head: bytes, name: str) -> int | None:
    """Bytes from the file's start to the end of its voxel data, from its header `head`; None
    when no NIfTI header parses (the full parse then says why). Raises DataError naming `name`
    and the shape when the header claims more than `max_voxels()` voxels."""
    header = None
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        try:
            with _quiet_nibabel():
                header = klass.from_fileobj(io.BytesIO(head))
            shape = tuple(int(n) for n in header.get_data_shape())
            itemsize = header.get_data_dtype().itemsize
            offset = int(header.get_data_offset())
            break
        except Exception:  # nibabel raises several types for a bad header
            header = None
    if header is None:
        return None
    voxels = math.prod(shape)
    limit = max_voxels()
    if voxels > limit:
        raise DataError(
            f"{name}: header claims shape {shape} = {voxels:,} voxels "
            f"({_gib(voxels * itemsize)} of {header.get_data_dtype()}), more than the limit of "
            f"{limit:,} voxels; refused before reading its data (set {MAX_VOXELS_ENV} to allow "
            "larger volumes)")
    return offset + voxels * itemsize


def _read_plain(stream, head: bytes, name: str) -> bytes:
    end = _data_end(head, name)
    want = _UNPARSED_BYTES if end is None else end
    return head + stream.read(max(want - len(head), 0))


def _read_gzip(stream, first: bytes, name: str) -> bytes:
    """The decompressed start of the gzip stream `first` + `stream`: its header, checked, then
    the data the header accounts for (and the stream's end, so its CRC, within `_GZIP_SLACK`)."""
    out = bytearray()
    end: int | None = None
    want = _HEADER_BYTES
    pending = first
    inflate, fed = zlib.decompressobj(16 + zlib.MAX_WBITS), False
    while True:
        try:
            while pending and len(out) < want:
                out += inflate.decompress(pending, want - len(out))
                fed, pending = True, inflate.unconsumed_tail
                if inflate.eof:  # a member ended; another may follow (`cat a.gz b.gz`)
                    pending = inflate.unused_data
                    if not pending.strip(b"\0"):
                        pending = b""  # zero padding after the last member
                    inflate, fed = zlib.decompressobj(16 + zlib.MAX_WBITS), False
        except zlib.error as err:
            raise DataError(f"{name}: corrupt or truncated gzip stream ({err})") from err
        if len(out) >= want:
            if want == _HEADER_BYTES:
                end = _data_end(bytes(out), name)
                want = (_UNPARSED_BYTES if end is None else end) + _GZIP_SLACK
                continue
            return bytes(out)  # the header's data and some slack are in; the rest is not read
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        pending = chunk
    if want == _HEADER_BYTES:
        end = _data_end(bytes(out), name)  # shorter than a NIfTI-2 header
    if fed:  # the input ended inside a gzip member
        needs = "" if end is None else f" of the {end:,} its header needs"
        raise DataError(f"{name}: corrupt or truncated gzip stream (it ends after "
                        f"{len(out):,} bytes{needs})")
    return bytes(out)


def _read_nifti_bytes(stream, name: str) -> bytes:
    """The bytes of the NIfTI file in `stream` that its header accounts for (decompressed)."""
    head = stream.read(_HEADER_BYTES)
    if head[:2] == b"\x1f\x8b":
        return _read_gzip(stream, head, name)
    return _read_plain(stream, head, name)


@dataclasses.dataclass(frozen=True)
class FileRef:
    """A file on disk, or a member of a zip archive when `member` is set.

    `name` is what error messages and dataset.json provenance show, e.g. `data.zip:data/1_img.nii`.
    """

    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    def read_bytes(self) -> bytes:
        try:
            if self.member is None:
                return Path(self.path).read_bytes()
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except (OSError, KeyError, zipfile.BadZipFile) as err:
            raise DataError(f"{self.name}: cannot read file ({err})") from err

    def read_nifti_bytes(self) -> bytes:
        """The NIfTI file's bytes, decompressed, read only as far as its header accounts for;
        a header claiming more than `max_voxels()` voxels is refused before its data is read."""
        try:
            with contextlib.ExitStack() as stack:
                if self.member is None:
                    stream = stack.enter_context(open(self.path, "rb"))
                else:
                    archive = stack.enter_context(zipfile.ZipFile(self.path))
                    stream = stack.enter_context(archive.open(self.member))
                return _read_nifti_bytes(stream, self.name)
        except (OSError, KeyError, zipfile.BadZipFile, EOFError) as err:
            raise DataError(f"{self.name}: cannot read file ({err})") from err


@dataclasses.dataclass(frozen=True)
class Volume:
    """A 3D volume: `array` (X, Y, Z) in voxel order and the 4x4 voxel-to-world (RAS mm) affine."""

    array: np.ndarray
    affine: np.ndarray


@contextlib.contextmanager
def _quiet_nibabel():
    logger = nib.imageglobals.logger
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def _parse_nifti(raw: bytes, name: str) -> nib.Nifti1Image:
    """The image in `raw`, the decompressed bytes of `FileRef.read_nifti_bytes`."""
    errors = []
    for klass in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            # nibabel logs header fix-ups of junk files; the DataError below says it once.
            with _quiet_nibabel():
                return klass.from_bytes(raw)
        except Exception as err:  # nibabel raises several types for a bad header
            errors.append(f"{klass.__name__}: {err}")
    raise DataError(f"{name}: not a readable NIfTI file ({'; '.join(errors)})")


def read_volume(ref: FileRef | Path | str, *, is_label: bool = False) -> Volume:
    """Read a 3D NIfTI volume (a trailing singleton 4th axis is dropped).

    Raises `DataError` naming the file when its header claims more than `max_voxels()` voxels
    (before reading the data), when it is corrupt or truncated, not 3D, holds NaN/inf voxels, or
    (`is_label`) holds non-integer or negative values.
    """
    ref = ref if isinstance(ref, FileRef) else FileRef(Path(ref))
    img = _parse_nifti(ref.read_nifti_bytes(), ref.name)
    try:
        array = np.asarray(img.dataobj)
    except Exception as err:  # truncated data block: the header parsed but voxels are missing
        raise DataError(f"{ref.name}: truncated or corrupt voxel data ({err})") from err
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(f"{ref.name}: expected a 3D volume, got shape {array.shape}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"{ref.name}: invalid affine {affine.tolist()}")
    check_finite(array, ref.name)
    if is_label:
        array = as_label_array(array, ref.name)
    else:
        array = array.astype(np.float32)
    return Volume(array=array, affine=affine)


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise `DataError` naming `name` when `array` has NaN or inf voxels."""
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise DataError(f"{name}: {bad} NaN/inf voxels")


def as_label_array(array: np.ndarray, name: str) -> np.ndarray:
    """Integer label map (int32) from a stored label array; non-integer/negative values raise."""
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise DataError(f"{name}: label map holds non-integer values")
        array = rounded
    if array.size and array.min() < 0:
        raise DataError(f"{name}: label map holds negative value {array.min()}")
    return array.astype(np.int32)


def check_label_values(label: np.ndarray, num_classes: int, name: str) -> None:
    """Raise `DataError` when `label` has values outside 0..num_classes-1 (the class list)."""
    values = np.unique(label)
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise DataError(
            f"{name}: label values {bad.tolist()} not in the class list 0..{num_classes - 1}"
        )


def check_same_grid(image: Volume, label: Volume, image_name: str, label_name: str) -> None:
    """Raise `DataError` when image and label differ in shape or affine (1e-3 mm tolerance)."""
    if image.array.shape != label.array.shape:
        raise DataError(
            f"{label_name}: shape {label.array.shape} differs from image {image_name} "
            f"shape {image.array.shape}"
        )
    if not np.allclose(image.affine, label.affine, rtol=1e-5, atol=1e-3):
        raise DataError(
            f"{label_name}: affine {np.round(label.affine, 4).tolist()} differs from image "
            f"{image_name} affine {np.round(image.affine, 4).tolist()}"
        )


def nifti_image(array: np.ndarray, affine: np.ndarray, *, is_label: bool) -> nib.Nifti1Image:
    """`array` (X, Y, Z) with `affine` as an in-memory NIfTI image, as `write_volume` stores it.

    Labels are stored as uint8 (int16 beyond 255 classes), images as float32; qform and sform
    are both set to the affine so every reader agrees on the geometry.
    """
    if is_label:
        dtype = np.uint8 if np.max(array, initial=0) < 256 else np.int16
    else:
        dtype = np.float32
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def write_volume(path: Path, array: np.ndarray, affine: np.ndarray, *, is_label: bool) -> None:
    """Write `array` (X, Y, Z) as NIfTI (gzipped when the name ends in .gz) with `affine`
    (dtypes and qform/sform as `nifti_image`)."""
    img = nifti_image(array, affine, is_label=is_label)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def nifti_bytes(array: np.ndarray, affine: np.ndarray, *, gz: bool = False) -> bytes:
    """Serialise a volume to NIfTI bytes (for writing straight into a zip archive)."""
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    raw = img.to_bytes()
    if gz:
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
            handle.write(raw)
        raw = buffer.getvalue()
    return raw
