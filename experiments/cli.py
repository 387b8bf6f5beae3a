"""The `diffseg3d` command line.

    diffseg3d train CONFIG [--profile P] [--data DIR] [--out DIR]       one trial, no Ray
    diffseg3d ablate GRID [--profile P] [--data DIR] [--out DIR] [--max-concurrent N]
    diffseg3d evaluate --pred DIR --labels DIR [--spacing-from-labels] [--classes A,B] --out CSV
    diffseg3d data ...                                                  prepare data sets
    diffseg3d tables ...                                                paper tables (LaTeX)

Heavy imports (JAX, Ray, MLflow) happen inside the command handlers, so `--help` is fast.
Errors in user input (config, grid, data, files) print one `error: ...` line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: MLflow experiment of `diffseg3d train` runs unless --experiment is given.
DEFAULT_TRAIN_EXPERIMENT = "train"


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default=None,
        help="named settings applied on top: smoke (seconds), quick (CPU laptop), paper "
        "(the paper's exact settings); see experiments/profiles/",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="prepared data set folder replacing the config's data.root (all data sets of a grid)",
    )
    parser.add_argument(
        "--out",
        default="runs",
        metavar="DIR",
        help="output folder: mlflow.db, mlartifacts/ and trial folders (default: runs); "
        "MLFLOW_TRACKING_URI overrides the MLflow store",
    )


def _run_train(args) -> int:
    from diffseg3d.experiments import tracking
    from diffseg3d.experiments.config import config_hash, load_config, set_dotted, validate_config
    from diffseg3d.experiments.grid import absolute_root, data_set_label, trial_name
    from diffseg3d.experiments.trial import run_trial

    config = load_config(args.config, profile=args.profile)
    if args.data is not None:
        raw = config.model_dump(mode="json")
        raw = set_dotted(raw, "data.root", absolute_root(args.data))
        raw = set_dotted(raw, "data.name", data_set_label(args.data))
        config = validate_config(raw, source=f"{args.config} with --data {args.data}")
    if config.name == "trial":
        config = config.model_copy(update={"name": trial_name(config)})
    out = Path(args.out)
    uri = tracking.default_tracking_uri(out)
    tracking.ensure_experiment(
        args.experiment, tracking.default_artifact_location(out, uri), tracking_uri=uri
    )
    workdir = out / "trials" / f"{config.name}_{config_hash(config)}"
    result = run_trial(
        config,
        workdir=workdir,
        tracking_uri=uri,
        experiment=args.experiment,
        resume_from=args.resume,
        progress=True,
    )
    print(f"trial {result['trial']}: MLflow run {result['run_id']} in {uri}")
    for key in ("test_dice", "test_hd95", "test_n_nan_dice", "test_n_nan_hd95"):
        if key in result:
            print(f"  {key} = {result[key]:.4f}")
    print(f"  per-case metrics: {result['per_case_csv']}")
    print(f"  final checkpoint: {result['checkpoint_dir']}")
    return 0


def _run_ablate(args) -> int:
    from diffseg3d.experiments.runner import failed_trials, run_grid

    results = run_grid(
        args.grid,
        profile=args.profile,
        data_override=args.data,
        out_dir=args.out,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures,
        storage_path=args.storage,
    )
    failures = failed_trials(results)
    print(f"{len(results) - len(failures)} of {len(results)} trials finished")
    for name, error in failures:
        print(f"  failed: {name}: {error}", file=sys.stderr)
    return 1 if failures else 0


def _run_evaluate(args) -> int:
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


#: Subcommands registered by other packages: command -> (module, register function, help).
OPTIONAL_COMMANDS = {
    "data": ("diffseg3d.core.data.cli", "add_data_commands", "generate or prepare data sets"),
    "tables": (
        "diffseg3d.analysis.cli",
        "add_tables_command",
        "paper tables (LaTeX), summary.md and figures from MLflow runs",
    ),
}


def _add_optional(subparsers, module: str, function: str, command: str) -> None:
    """Register another package's subcommand; until that package lands, a stub that says so."""
    import importlib

    try:
        register = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        stub = subparsers.add_parser(command, help=f"(unavailable: {err})")
        stub.set_defaults(func=lambda args, err=err: _unavailable(command, err))
        return
    register(subparsers)


def _unavailable(command: str, err: Exception) -> int:
    print(f"error: `diffseg3d {command}` is unavailable: {err}", file=sys.stderr)
    return 2


def _add_placeholder(subparsers, command: str, help_text: str) -> None:
    """A cheap entry for the top-level help; the real parser is built only when the command is
    the one being run (its package may import pandas, SciPy, ...)."""
    subparsers.add_parser(command, help=help_text, add_help=False)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; the `data`/`tables` subparsers are imported only for `command` (all of
    them when None)."""
    parser = argparse.ArgumentParser(
        prog="diffseg3d",
        description="Diffusion models for 3D multiclass segmentation: train one trial, run the "
        "paper's ablation grids with Ray Tune, score predictions, prepare data, write tables.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train and evaluate one config without Ray (progress bar, one MLflow run)",
        description="Train, validate and test one config; log it as one MLflow run.",
    )
    train.add_argument("config", metavar="CONFIG", help="YAML config (partial: defaults fill in)")
    _add_common(train)
    train.add_argument(
        "--experiment",
        default=DEFAULT_TRAIN_EXPERIMENT,
        help=f"MLflow experiment name (default: {DEFAULT_TRAIN_EXPERIMENT})",
    )
    train.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT_DIR",
        help="continue from a checkpoint folder (<out>/trials/<trial>/checkpoints/step_N) and "
        "its MLflow run",
    )
    train.set_defaults(func=_run_train)

    ablate = sub.add_parser(
        "ablate",
        help="run an ablation grid with Ray Tune (locally, or on RAY_ADDRESS's cluster)",
        description="Expand a grid (experiments/grids/*.yaml, or a shipped grid's name such as "
        "paper) and run its trials with Ray Tune; each trial is one MLflow run under the "
        "grid's parent run. Rerunning resumes an interrupted grid.",
    )
    ablate.add_argument("grid", metavar="GRID", help="grid YAML file or shipped grid name")
    _add_common(ablate)
    ablate.add_argument(
        "--max-concurrent",
        type=int,
        default=2,
        metavar="N",
        help="trials running at the same time (default 2)",
    )
    ablate.add_argument(
        "--max-failures",
        type=int,
        default=2,
        metavar="N",
        help="retries of a lost or crashed trial from its last checkpoint (default 2)",
    )
    ablate.add_argument(
        "--storage",
        default=None,
        metavar="PATH",
        help="Tune storage for checkpoints and experiment state (default <out>/ray_results; "
        "on a cluster a shared path or s3://... reachable from every node)",
    )
    ablate.set_defaults(func=_run_ablate)

    evaluate = sub.add_parser(
        "evaluate",
        help="score a folder of NIfTI predictions against labels (Dice, HD95, ROI size)",
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

    for name, (module, function, help_text) in OPTIONAL_COMMANDS.items():
        if command is None or command == name:
            _add_optional(sub, module, function, name)
        else:
            _add_placeholder(sub, name, help_text)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input (printed as one line), not a bug (traceback)."""
    from diffseg3d.experiments.config import ConfigError
    from diffseg3d.experiments.evaluate_folder import EvaluateError

    errors: list[type[BaseException]] = [ConfigError, EvaluateError, FileNotFoundError]
    for module, name in (
        ("diffseg3d.experiments.grid", "GridError"),
        ("diffseg3d.experiments.trial", "TrialError"),
        ("diffseg3d.core.data.nifti_io", "DataError"),
    ):
        try:
            import importlib

            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(command)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
