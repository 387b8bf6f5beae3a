"""`diffseg3d predict`: a trained model on new NIfTI volumes, labels back in each input's grid.
Library imports live inside the handler (see `diffseg3d.cli`)."""

from __future__ import annotations

import argparse
import sys

HELP = "predict label maps (and uncertainty) for new NIfTI volumes with a trained model"


def _run_predict(args: argparse.Namespace) -> int:
    from diffseg3d.cli.output_paths import check_output_folder
    from diffseg3d.predict.model_source import load_model
    from diffseg3d.predict.predictor import predict_volumes

    check_output_folder(args.out, "--out")  # before the model loads: nothing is written
    model = load_model(args.model, args.tracking_uri)
    report = predict_volumes(model, args.input, args.out, samples=args.samples,
                             steps=args.steps, sampler=args.sampler, batch=args.batch,
                             seed=args.seed, progress=not args.quiet, labels=args.labels)
    print(report.summary())
    if report.scores_line is not None:
        print(report.scores_line)
    failures = report.failures
    if failures:
        listed = "; ".join(f"{c.case}: {c.error}" for c in failures)
        print(f"error: {len(failures)} of {len(report.cases)} cases failed: {listed}",
              file=sys.stderr)
        return 1
    print(f"{len(report.cases)} cases -> {args.out}")
    return 0


def add_predict_command(subparsers) -> argparse.ArgumentParser:
    """Register `predict` on the `diffseg3d` subparsers; the handler is `args.func`."""
    predict = subparsers.add_parser(
        "predict",
        help=HELP,
        description="Prepare each volume as the model's training data was prepared, predict, "
        "and write <case>.nii.gz (integer labels, in the input's shape and affine) and "
        "labels.json; diffusion models with --samples N > 1 also write <case>_entropy.nii.gz and "
        "<case>_disagreement.nii.gz. A folder run predicts every case it can and exits 1 listing "
        "the ones that failed.",
    )
    predict.add_argument("--model", required=True, metavar="MODEL",
                         help="runs:/<run_id>, a run id, models:/<name>/<version>, or a local "
                         "trial folder (<out>/trials/<trial>_<hash>)")
    predict.add_argument("--input", required=True, metavar="FILE_OR_DIR",
                         help="a .nii/.nii.gz volume or a folder of them (nnU-Net _0000 "
                         "suffixes accepted)")
    predict.add_argument("--out", required=True, metavar="DIR", help="output folder")
    predict.add_argument("--samples", type=int, default=1, metavar="N",
                         help="diffusion: independent samples per case, averaged (default 1)")
    predict.add_argument("--steps", type=int, default=None, metavar="K",
                         help="diffusion: sampling steps (default: the model's "
                         "diffusion.sample_steps)")
    predict.add_argument("--sampler", choices=("ddpm", "ddim"), default=None,
                         help="diffusion: sampler (default: the model's diffusion.sampler)")
    predict.add_argument("--batch", type=int, default=None, metavar="B",
                         help="samples per device call (default: all N at once)")
    predict.add_argument("--seed", type=int, default=0, metavar="S",
                         help="sampling seed; the same seed reproduces the output (default 0)")
    predict.add_argument("--labels", default=None, metavar="FILE_OR_DIR",
                         help="reference label map(s) to score the --samples N >= 2 samples "
                         "against: a label NIfTI for a single input, or a folder of "
                         "<case>.nii.gz matched by case name; each is resampled (nearest) onto "
                         "the prepared grid and scored as a trial scores its test set, into "
                         "<out>/uncertainty_per_case.csv, with a one-line summary")
    predict.add_argument("--tracking-uri", default=None, metavar="URI",
                         help="MLflow store of runs:/ and models:/ (default "
                         "MLFLOW_TRACKING_URI)")
    predict.add_argument("--quiet", action="store_true", help="no progress bars")
    predict.set_defaults(func=_run_predict)
    return predict
