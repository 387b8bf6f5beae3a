"""`diffseg3d evaluate`: score a folder of NIfTI predictions against labels. Library imports
live inside the handler (see `diffseg3d.cli`)."""

from __future__ import annotations

import argparse
import math

#: The NSD tolerance default, the same as `core.metrics.nsd.DEFAULT_TOLERANCE_MM` (kept as a
#: literal so that `--help` does not import the library; a test checks they agree).
DEFAULT_TOLERANCE_MM = 2.0


def _tolerance(text: str) -> float:
    """argparse type: a finite number of mm >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of mm >= 0, got {text!r}")
    return value

HELP = "score a folder of NIfTI predictions against labels (Dice, HD95, NSD, ROI size)"


def _run_evaluate(args: argparse.Namespace) -> int:
    from diffseg3d.cli.output_paths import check_output_file
    from diffseg3d.core.metrics.evaluate import summarise
    from diffseg3d.predict.evaluate_folder import evaluate_folder

    check_output_file(args.out, "--out")  # a folder there: refused before any scoring
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    rows = evaluate_folder(
        args.pred,
        args.labels,
        args.out,
        classes=classes,
        spacing_from_labels=args.spacing_from_labels,
        nsd_tolerance_mm=args.nsd_tolerance,
        resample=args.resample,
        echo=print,
    )
    s = summarise(rows)
    print(
        f"{s['n_cases']} cases: mean Dice {s['mean_case_dice']:.4f} "
        f"({s['n_nan_dice']} NaN), mean HD95 {s['mean_case_hd95']:.4f} mm "
        f"({s['n_nan_hd95']} NaN), mean NSD at {args.nsd_tolerance:g} mm "
        f"{s['mean_case_nsd']:.4f} ({s['n_nan_nsd']} NaN) -> {args.out}"
    )
    return 0


def add_evaluate_command(subparsers) -> argparse.ArgumentParser:
    """Register `evaluate` on the `diffseg3d` subparsers; the handler is `args.func`."""
    evaluate = subparsers.add_parser(
        "evaluate",
        help=HELP,
        description="Per case and class Dice, HD95 (mm), normalised surface Dice (NSD; both "
        "MONAI definitions) and ROI size of predicted NIfTI label maps, matched to labels by "
        "file name. Each prediction must lie on its label's grid (shape and affine: origin, "
        "axis directions, voxel size within 0.001 mm) unless --resample is given.",
    )
    evaluate.add_argument("--pred", required=True, metavar="DIR", help="predicted label maps")
    evaluate.add_argument("--labels", required=True, metavar="DIR", help="ground-truth labels")
    evaluate.add_argument("--out", required=True, metavar="CSV", help="per-case CSV to write")
    evaluate.add_argument(
        "--spacing-from-labels",
        action="store_true",
        help="voxel size (mm) from each label's NIfTI header instead of dataset.json",
    )
    evaluate.add_argument(
        "--classes",
        default=None,
        metavar="A,B,...",
        help="foreground class names for labels 1, 2, ... (default: dataset.json class_names "
        "in the labels folder or its parent)",
    )
    evaluate.add_argument(
        "--nsd-tolerance",
        type=_tolerance,
        default=DEFAULT_TOLERANCE_MM,
        metavar="MM",
        help=f"NSD tolerance in mm (default {DEFAULT_TOLERANCE_MM:g})",
    )
    evaluate.add_argument(
        "--resample",
        action="store_true",
        help="resample a prediction that is not on its label's grid onto it (nearest "
        "neighbour, through world coordinates) instead of refusing; each such case is printed",
    )
    evaluate.set_defaults(func=_run_evaluate)
    return evaluate
