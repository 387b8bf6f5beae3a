"""`diffseg3d evaluate`: score a folder of NIfTI predictions against labels. Library imports
live inside the handler (see `diffseg3d.cli`)."""

from __future__ import annotations

import argparse

HELP = "score a folder of NIfTI predictions against labels (Dice, HD95, ROI size)"


def _run_evaluate(args: argparse.Namespace) -> int:
    from diffseg3d.core.metrics.evaluate import summarise
    from diffseg3d.experiments.evaluate_folder import evaluate_folder

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    rows = evaluate_folder(
        args.pred,
        args.labels,
        args.out,
        classes=classes,
        spacing_from_labels=args.spacing_from_labels,
    )
    s = summarise(rows)
    print(
        f"{s['n_cases']} cases: mean Dice {s['mean_case_dice']:.4f} "
        f"({s['n_nan_dice']} NaN), mean HD95 {s['mean_case_hd95']:.4f} mm "
        f"({s['n_nan_hd95']} NaN) -> {args.out}"
    )
    return 0


def add_evaluate_command(subparsers) -> argparse.ArgumentParser:
    """Register `evaluate` on the `diffseg3d` subparsers; the handler is `args.func`."""
    evaluate = subparsers.add_parser(
        "evaluate",
        help=HELP,
        description="Per case and class Dice, HD95 (mm; MONAI definition) and ROI size of "
        "predicted NIfTI label maps, matched to labels by file name.",
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
    evaluate.set_defaults(func=_run_evaluate)
    return evaluate
