"""`diffseg3d train` (one trial in this process, no Ray) and `diffseg3d ablate` (a grid on Ray
Tune). Library imports live inside the handlers (see `diffseg3d.cli`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TRAIN_HELP = "train and evaluate one config without Ray (progress bar, one MLflow run)"
ABLATE_HELP = "run an ablation grid with Ray Tune (locally, or on RAY_ADDRESS's cluster)"

#: MLflow experiment of `diffseg3d train` runs unless --experiment is given.
DEFAULT_TRAIN_EXPERIMENT = "train"


def _add_common(parser: argparse.ArgumentParser) -> None:
    """--profile, --data and --out, shared by `train` and `ablate`."""
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


def _run_train(args: argparse.Namespace) -> int:
    from diffseg3d.core.data.dataset import PreparedDataset
    from diffseg3d.core.data.safe_name import UnsafeNameError, check_safe_name
    from diffseg3d.experiments.config.errors import ConfigError
    from diffseg3d.experiments.config.layering import load_config, set_dotted
    from diffseg3d.experiments.config.schema import config_hash, validate_config
    from diffseg3d.experiments.grid import (
        absolute_root,
        check_levels_fit,
        data_set_label,
        trial_name,
    )
    from diffseg3d.experiments.tracking import mlflow_runs as tracking
    from diffseg3d.experiments.trial.run import run_trial

    config = load_config(args.config, profile=args.profile, sets=args.set)
    if args.data is not None:
        raw = config.model_dump(mode="json")
        raw = set_dotted(raw, "data.root", absolute_root(args.data))
        raw = set_dotted(raw, "data.name", data_set_label(args.data))
        config = validate_config(raw, source=f"{args.config} with --data {args.data}")
    if config.name == "trial":
        config = config.model_copy(update={"name": trial_name(config)})
    try:  # the trial's folder name under --out
        check_safe_name(config.name, what="trial name")
    except UnsafeNameError as err:
        raise ConfigError(f"{args.config}: {err}") from None
    # Everything above only reads; the checks end before --out is created. The data set's own
    # names (dataset.json name, case ids) become prediction file names: refuse them here too.
    if "://" not in config.data.root:
        PreparedDataset.load(config.data.root, verify="none")
    check_levels_fit(config, f"{args.config}: trial {config.name}")
    from diffseg3d.experiments.output_lock import output_lock, train_lock_path

    out, workdir = _check_train_out(args.out, f"{config.name}_{config_hash(config)}")
    # One writer per trial folder: the same config trained twice into one --out refuses.
    with output_lock(train_lock_path(out, workdir.name), f"trial {workdir.name} in {out}"):
        uri = tracking.default_tracking_uri(out)
        tracking.ensure_experiment(
            args.experiment, tracking.default_artifact_location(out, uri), tracking_uri=uri
        )
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


def _check_train_out(out_dir: str, trial_folder: str) -> tuple[Path, Path]:
    """(--out, the trial's folder in it), refused before anything is written when a file
    stands where `train` makes a folder or a folder where it makes a file."""
    from diffseg3d.cli.output_paths import check_output_file, check_output_folder
    from diffseg3d.experiments.output_lock import LOCKS_FOLDER

    out = check_output_folder(out_dir, "--out")
    if "MLFLOW_TRACKING_URI" not in os.environ:
        check_output_file(out / "mlflow.db", "--out")
    check_output_folder(out / LOCKS_FOLDER, "--out")
    return out, check_output_folder(out / "trials" / trial_folder, "--out")


def _check_ablate_out(out_dir: str, storage: str | None) -> None:
    """`_check_train_out`'s checks for `ablate`: --out, its store, lock and Tune folders."""
    from diffseg3d.cli.output_paths import check_output_file, check_output_folder
    from diffseg3d.experiments.output_lock import LOCKS_FOLDER

    out = check_output_folder(out_dir, "--out")
    if "MLFLOW_TRACKING_URI" not in os.environ:
        check_output_file(out / "mlflow.db", "--out")
    check_output_folder(out / LOCKS_FOLDER, "--out")
    if storage is None:
        check_output_folder(out / "ray_results", "--out")
    elif "://" not in storage:
        check_output_folder(storage, "--storage")


def _run_ablate(args: argparse.Namespace) -> int:
    import signal

    from diffseg3d.experiments.cluster.runner import failed_trials, interrupted_by, run_grid

    _check_ablate_out(args.out, args.storage)
    results = run_grid(
        args.grid,
        profile=args.profile,
        data_override=args.data,
        out_dir=args.out,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures,
        storage_path=args.storage,
        seeds=args.seeds,
        ray_output=args.ray_output,
    )
    failures = failed_trials(results)
    stopped_by = interrupted_by(results)
    if stopped_by is not None:  # Ctrl-C or SIGTERM: one line, exit 128 + the signal's number
        unfinished = sum(r["status"] == "unfinished" for r in results)
        print(f"interrupted by {stopped_by}: {len(results) - len(failures)} of {len(results)} "
              f"trials finished, {unfinished} stopped (their MLflow runs ended KILLED); rerun "
              "the same command to resume", file=sys.stderr)
        return 128 + int(getattr(signal, stopped_by))
    print(f"{len(results) - len(failures)} of {len(results)} trials finished")
    for name, error in failures:
        print(f"  failed: {name}: {error}", file=sys.stderr)
    return 1 if failures else 0


def add_train_command(subparsers) -> argparse.ArgumentParser:
    """Register `train` on the `diffseg3d` subparsers; the handler is `args.func`."""
    train = subparsers.add_parser(
        "train",
        help=TRAIN_HELP,
        description="Train, validate and test one config; log it as one MLflow run.",
    )
    train.add_argument("config", metavar="CONFIG", help="YAML config (partial: defaults fill in)")
    _add_common(train)
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set one config key after the profile (repeatable; VALUE is YAML), e.g. "
        "--profile paper --set train.steps=2 --set model.compute_dtype=float32",
    )
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
    return train


def add_ablate_command(subparsers) -> argparse.ArgumentParser:
    """Register `ablate` on the `diffseg3d` subparsers; the handler is `args.func`."""
    ablate = subparsers.add_parser(
        "ablate",
        help=ABLATE_HELP,
        description="Expand a grid (experiments/grids/*.yaml, or a shipped grid's name such as "
        "paper) and run its trials with Ray Tune; each trial is one MLflow run under the "
        "grid's parent run. Rerunning the same command resumes an interrupted grid; the grid "
        "expanded differently (e.g. another --data) runs beside it, in its own Tune folder "
        "<out>/ray_results/<grid>_<hash> and parent run.",
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
    ablate.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="run every trial once per seed, replacing the grid's `seeds:` (e.g. --seeds 0 1 "
        "2; two or more give the mixed model of `diffseg3d tables` its seed variance)",
    )
    ablate.add_argument(
        "--ray-output",
        choices=("progress", "full"),
        default="progress",
        help="progress (default): one line per trial report with the trials done, running "
        "(step/total), pending and failed, elapsed time and time left; Ray Tune's tables and "
        "the workers' per-checkpoint lines stay in Ray's log files. full: Ray Tune's and the "
        "workers' output unfiltered as well",
    )
    ablate.set_defaults(func=_run_ablate)
    return ablate
