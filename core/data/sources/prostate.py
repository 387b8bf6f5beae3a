"""`data prepare prostate-mr`: zenodo record 7013610 (Li et al. 2022), 589 T2w prostate MR.

Source: `data.zip` or its extracted folder with `data/<uid>_img.nii` and `data/<uid>_mask.nii`
(`.nii.gz` accepted), plus `institution.txt` (lines `<uid> <institution>`) inside the archive or
folder, or next to the zip (zenodo serves it as a separate file), or given with
`--institutions`. Labels 1..8 = `CLASS_NAMES`. Paper preprocessing: 0.75 x 0.75 x 2.5 mm,
256 x 256 x 48, MR intensities clipped to their 0.5 / 99.5 percentiles and rescaled to [0, 1].

Split (paper section 4, ImgX-DiffSeg's `male_pelvic_mr` builder): per institution (institutions
in sorted name order, cases in `institution.txt` order), with n cases: valid = the first 2,
train = cases[2 : int(0.75 n) - 2], test = cases[int(0.75 n) - 2 :]. On the full set:
411 / 14 / 164. (An institution with fewer than 6 cases gets test = cases[2:] so that no case
is both validation and test; the paper's data has none that small.)
"""

from __future__ import annotations

import re
from pathlib import Path

from diffseg3d.core.data.nifti.io import DataError, FileRef
from diffseg3d.core.data.preparation import check_geometry, prepare_pairs
from diffseg3d.core.data.preprocess import Intensity
from diffseg3d.core.data.sources.tree import SourceTree

CLASS_NAMES = ["BladderMask", "BoneMask", "ObdInternMask", "TZ", "CG", "RectumMask", "SV", "NVB"]
SPACING = (0.75, 0.75, 2.5)
SHAPE = (256, 256, 48)
INTENSITY = Intensity(kind="percentile", low=0.5, high=99.5)
TRAIN_RATIO = 0.75
NUM_VALID_PER_INSTITUTION = 2
_CASE_FILE = re.compile(r"(?:^|/)data/(?P<uid>[^/]+)_(?P<kind>img|mask)\.nii(?:\.gz)?$")


def parse_institutions(text: str, name: str) -> list[tuple[str, str]]:
    """Lines `<uid> <institution>` -> [(uid, institution)] in file order; blank lines skipped."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{name}:{lineno}: expected '<uid> <institution>', got {line!r}")
        rows.append((parts[0], parts[1]))
    uids = [u for u, _ in rows]
    if len(set(uids)) != len(uids):
        raise DataError(f"{name}: repeated uids {sorted({u for u in uids if uids.count(u) > 1})}")
    if not rows:
        raise DataError(f"{name}: no cases listed")
    return rows


def paper_split(rows: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The paper's per-institution split of the module docstring."""
    by_institution: dict[str, list[str]] = {}
    for uid, institution in rows:
        by_institution.setdefault(institution, []).append(uid)
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for institution in sorted(by_institution):
        uids = by_institution[institution]
        end_train = int(len(uids) * TRAIN_RATIO) - NUM_VALID_PER_INSTITUTION
        splits["valid"] += uids[:NUM_VALID_PER_INSTITUTION]
        splits["train"] += uids[NUM_VALID_PER_INSTITUTION:end_train]
        splits["test"] += uids[max(end_train, NUM_VALID_PER_INSTITUTION):]
    return splits


def find_prostate_files(source: Path | str, institutions: Path | str | None = None):
    """-> ({uid: (image ref, mask ref)}, [(uid, institution)], SourceTree)."""
    tree = SourceTree(source)
    files: dict[str, dict[str, FileRef]] = {}
    for name in tree.names():
        match = _CASE_FILE.search(name)
        if match:
            files.setdefault(match["uid"], {})[match["kind"]] = tree.ref(name)
    if institutions is not None:
        ref = FileRef(Path(institutions))
    elif tree.find("institution.txt"):
        ref = tree.ref(tree.find("institution.txt")[0])
    elif tree.is_zip and (tree.path.parent / "institution.txt").is_file():
        ref = FileRef(tree.path.parent / "institution.txt")
    else:
        raise DataError(f"{tree.path}: no institution.txt in the source or next to it; "
                        "pass --institutions PATH")
    try:
        text = ref.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{ref.name}: not UTF-8 text ({err})") from err
    rows = parse_institutions(text, ref.name)
    pairs = {}
    for uid, _ in rows:
        found = files.get(uid, {})
        for kind in ("img", "mask"):
            if kind not in found:
                raise DataError(f"{tree.path}: case {uid!r} listed in {ref.name} has no "
                                f"data/{uid}_{kind}.nii")
        pairs[uid] = (found["img"], found["mask"])
    return pairs, rows, tree


def prepare_prostate_mr(source, out, *, spacing=SPACING, shape=SHAPE, crop_centre="image",
                        institutions=None, overwrite=False, workers=1) -> Path:
    """Prepare the prostate MR data set into `out`; see the module docstring."""
    check_geometry(spacing, shape)  # bad arguments fail before the source is read
    pairs, rows, tree = find_prostate_files(source, institutions)
    return prepare_pairs(
        out, name="prostate-mr", class_names=CLASS_NAMES, pairs=pairs, splits=paper_split(rows),
        spacing=spacing, shape=shape, intensity=INTENSITY, crop_centre=crop_centre,
        source={"kind": "prostate-mr", "path": str(Path(source).resolve()),
                "record": "zenodo 7013610", "split": "per institution, paper rule"},
        overwrite=overwrite, workers=workers)
