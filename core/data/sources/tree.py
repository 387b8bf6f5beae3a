"""Finding files in a source that is a folder or a zip archive (read in place, never extracted)."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from diffseg3d.core.data.nifti.io import DataError, FileRef


class SourceTree:
    """A read-only view of a folder or zip archive: relative POSIX paths -> `FileRef`s."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: source does not exist")
        if self.path.is_dir():
            self._names = sorted(
                p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
            )
            self.is_zip = False
        else:
            try:
                with zipfile.ZipFile(self.path) as archive:
                    self._names = sorted(n for n in archive.namelist() if not n.endswith("/"))
            except (zipfile.BadZipFile, OSError) as err:
                raise DataError(
                    f"{self.path}: neither a folder nor a readable zip ({err})") from err
            self.is_zip = True

    def names(self) -> list[str]:
        """All file paths, relative, POSIX, sorted."""
        return list(self._names)

    def ref(self, name: str) -> FileRef:
        """FileRef of a relative path; paths escaping the source root are an error."""
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts:
            raise DataError(f"{self.path}: path {name!r} points outside the source")
        if self.is_zip:
            return FileRef(self.path, str(pure))
        return FileRef(self.path / pure)

    def has(self, name: str) -> bool:
        return str(PurePosixPath(name)) in self._names

    def find(self, basename: str) -> list[str]:
        """Paths whose last component is `basename`, shallowest first."""
        hits = [n for n in self._names if PurePosixPath(n).name == basename]
        return sorted(hits, key=lambda n: (n.count("/"), n))

    def read_text(self, name: str) -> str:
        try:
            return self.ref(name).read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{self.ref(name).name}: not UTF-8 text ({err})") from err


def nifti_case(name: str, where: str) -> str:
    """Case id of a NIfTI file name (`case.nii.gz` -> `case`); DataError naming `where` and the
    file for anything else (`.mha`, `.nrrd`, ...), which the preparation cannot read."""
    stem = strip_nifti_suffix(str(name))
    if stem is None:
        raise DataError(f"{where}: {name!r} is not a NIfTI file (.nii or .nii.gz); convert it "
                        "first (e.g. with SimpleITK)")
    return stem


def strip_nifti_suffix(name: str) -> str | None:
    """`case.nii.gz` / `case.nii` -> `case`; None for other files."""
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None
