"""`diffseg3d data ...`: `data phantom` and `data prepare {prostate-mr,amos-ct,nifti}`.

Library imports, the defaults in the help texts included, live inside the functions (see
`diffseg3d.cli`). Bad input (`DataError`) prints one line `error: <message naming the file>` and
exits with status 2 (`diffseg3d.cli.main`).
"""

from __future__ import annotations

import argparse
import math

HELP = "generate or prepare data sets"


# argparse types: a bad value is argparse's one-line usage error (exit 2), not a traceback. The
# core functions check the same rules (they are the API); these only answer earlier.
def positive_float(text: str) -> float:
    """A finite number > 0 (spacing in mm)."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def finite_float(text: str) -> float:
    """A finite number (an intensity bound)."""
    return _number(text, float)


def positive_int(text: str) -> int:
    """A whole number >= 1 (a size in voxels, a count)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a split fraction)."""
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be strictly between 0 and 1")
    return value


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _common(parser: argparse.ArgumentParser, spacing=None, shape=None) -> None:
    """--out, --spacing, --shape (required when there is no default), --crop-centre, ..."""
    from diffseg3d.core.data.crop import CROP_CENTRES

    parser.add_argument("--out", required=True, help="prepared data set folder to write")
    parser.add_argument("--spacing", type=positive_float, nargs=3, default=spacing,
                        metavar=("X", "Y", "Z"),
                        required=spacing is None,
                        help="target voxel spacing in mm" + (f" (default {spacing})" if spacing
                                                            else " (required)"))
    parser.add_argument("--shape", type=positive_int, nargs=3, default=shape,
                        metavar=("X", "Y", "Z"),
                        required=shape is None,
                        help="target shape in voxels after centre crop/pad"
                        + (f" (default {shape})" if shape else " (required)"))
    parser.add_argument("--crop-centre", choices=CROP_CENTRES, default="image",
                        help="centre of the crop window: image geometry or image body mask")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing, different preparation in --out")
    _workers(parser)


def _workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="cases prepared in parallel processes (default 1; output identical)")


def _run_phantom(args: argparse.Namespace) -> int:
    from diffseg3d.core.data.sources import phantom

    spec = phantom.PhantomSpec(cases=args.cases, shape=tuple(args.shape),
                               spacing=tuple(args.spacing), seed=args.seed)
    out = phantom.make_phantom(args.out, spec, overwrite=args.overwrite,
                              workers=args.workers)
    print(f"phantom data set in {out}")
    return 0


def _run_prostate(args: argparse.Namespace) -> int:
    from diffseg3d.core.data.sources import prostate

    out = prostate.prepare_prostate_mr(args.source, args.out, spacing=args.spacing,
                                       shape=args.shape, crop_centre=args.crop_centre,
                                       institutions=args.institutions, overwrite=args.overwrite,
                                       workers=args.workers)
    print(f"prostate-mr data set in {out}")
    return 0


def _run_amos(args: argparse.Namespace) -> int:
    from diffseg3d.core.data.sources import amos

    out = amos.prepare_amos_ct(args.source, args.out, spacing=args.spacing, shape=args.shape,
                               crop_centre=args.crop_centre, seed=args.split_seed,
                               overwrite=args.overwrite, workers=args.workers)
    print(f"amos-ct data set in {out}")
    return 0


def _run_nifti(args: argparse.Namespace) -> int:
    from diffseg3d.core.data.sources.nifti import prepare_nifti

    out = prepare_nifti(args.out, spacing=args.spacing, shape=args.shape, images=args.images,
                        labels=args.labels, class_names=args.class_names, source=args.source,
                        name=args.name, clip=args.clip, crop_centre=args.crop_centre,
                        seed=args.split_seed, valid_fraction=args.valid_fraction,
                        test_fraction=args.test_fraction, overwrite=args.overwrite,
                        workers=args.workers)
    print(f"nifti data set in {out}")
    return 0


def add_data_commands(subparsers) -> argparse.ArgumentParser:
    """Register `data phantom` and `data prepare ...` on the `diffseg3d` subparsers; each sets
    `func(args) -> int` (the exit status)."""
    from diffseg3d.core.data.sources import amos, phantom, prostate

    data = subparsers.add_parser("data", help=HELP)
    data_sub = data.add_subparsers(dest="data_command", required=True)

    ph = data_sub.add_parser("phantom", help="generate the synthetic multi-organ phantom")
    ph.add_argument("--out", required=True, help="prepared data set folder to write")
    ph.add_argument("--cases", type=int, default=phantom.DEFAULT_CASES,
                    help=f"number of cases (default {phantom.DEFAULT_CASES}; >= 3)")
    ph.add_argument("--shape", type=positive_int, nargs=3, default=phantom.DEFAULT_SHAPE,
                    metavar=("X", "Y", "Z"), help=f"grid (default {phantom.DEFAULT_SHAPE})")
    ph.add_argument("--spacing", type=positive_float, nargs=3, default=phantom.DEFAULT_SPACING,
                    metavar=("X", "Y", "Z"), help=f"mm (default {phantom.DEFAULT_SPACING})")
    ph.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ph.add_argument("--overwrite", action="store_true",
                    help="replace an existing, different data set in --out")
    _workers(ph)
    ph.set_defaults(func=_run_phantom)

    prepare = data_sub.add_parser("prepare", help="prepare a downloaded data set")
    prep_sub = prepare.add_subparsers(dest="dataset", required=True)

    pr = prep_sub.add_parser("prostate-mr", help="zenodo 7013610 prostate MR (data.zip)")
    pr.add_argument("--source", required=True, help="data.zip or its extracted folder")
    pr.add_argument("--institutions", default=None,
                    help="institution.txt when it is neither in the source nor next to it")
    _common(pr, prostate.SPACING, prostate.SHAPE)
    pr.set_defaults(func=_run_prostate)

    am = prep_sub.add_parser("amos-ct", help="AMOS22 abdominal CT (zip or folder)")
    am.add_argument("--source", required=True, help="AMOS22 zip or folder (amos22/dataset.json)")
    am.add_argument("--split-seed", type=int, default=amos.SPLIT_SEED,
                    help="seed of the 10%% valid / 90%% test split of the official validation")
    _common(am, amos.SPACING, amos.SHAPE)
    am.set_defaults(func=_run_amos)

    ni = prep_sub.add_parser("nifti", help="own NIfTI folders or an MSD / nnU-Net v2 folder")
    ni.add_argument("--source", default=None, help="folder with dataset.json (MSD / nnU-Net v2)")
    ni.add_argument("--images", default=None, help="folder of <case>[_0000].nii(.gz) images")
    ni.add_argument("--labels", default=None, help="folder of <case>.nii(.gz) label maps")
    ni.add_argument("--class-names", nargs="+", default=None,
                    help="foreground class names, label 1 first (with --images/--labels)")
    ni.add_argument("--name", default="nifti", help="data set name in dataset.json and tables")
    ni.add_argument("--clip", type=finite_float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="fixed intensity window, LO < HI (e.g. CT HU); default 0.5/99.5 "
                    "percentiles")
    ni.add_argument("--split-seed", type=int, default=0, help="seed of the random split")
    ni.add_argument("--valid-fraction", type=fraction, default=0.1,
                    help="fraction for valid, in (0, 1) (default 0.1)")
    ni.add_argument("--test-fraction", type=fraction, default=0.2,
                    help="fraction for test, in (0, 1) (default 0.2); valid + test < 1")
    _common(ni)  # no default spacing/shape for a user's own data
    ni.set_defaults(func=_run_nifti)
    return data
