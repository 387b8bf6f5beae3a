"""`diffseg3d tables`: runs -> LaTeX tables, summary.md and figures.

    diffseg3d tables --experiment paper --out results/paper [--tracking-uri URI]
    diffseg3d tables --experiment paper --out results/paper --grid experiments/grids/paper.yaml
    diffseg3d tables --csv-dir scores/ --out results/external

`--tracking-uri` defaults to `MLFLOW_TRACKING_URI` (the Makefile sets it to the runs folder's
SQLite store). The command exits 0 even when some runs failed: they are listed in summary.md and
on stderr; it exits 1 only when there is nothing to analyse (no experiment / no collected run).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "paper tables (LaTeX), summary.md and figures from MLflow runs"


def _add_tables_arguments(parser: argparse.ArgumentParser) -> None:
    # Library imports inside the functions: see `diffseg3d.cli`.
    from diffseg3d.analysis.stats import ALPHA

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--experiment", help="MLflow experiment (the grid's name), e.g. paper")
    source.add_argument("--csv-dir", type=Path,
                        help="folder of <stem>.csv per-case metrics + <stem>.json params sidecars")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. results/paper")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MLflow)")
    parser.add_argument("--grid", default=None,
                        help="grid YAML (or name) the runs came from: its trials without a usable "
                        "run are listed in summary.md")
    parser.add_argument("--data", default=None,
                        help="the --data folder given to `diffseg3d ablate`, if any (trial names "
                        "depend on it)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="the --seeds given to `diffseg3d ablate`, if any (with --grid: "
                        "the trials of every seed are expected)")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help="significance level of the paired t-test (paper: 0.01)")
    parser.add_argument("--no-figures-from-mlflow", action="store_true",
                        help="skip training curves and prediction montages (no artifact downloads)")


def run_tables(args: argparse.Namespace) -> int:
    """`_write_tables` while holding the lock of --out (a second `tables` into the same folder
    refuses at once, naming this one); returns the process exit code."""
    from diffseg3d.cli.output_paths import check_output_folder
    from diffseg3d.experiments.output_lock import output_lock, tables_lock_path

    out = check_output_folder(args.out, "--out")
    with output_lock(tables_lock_path(out), f"the tables folder {out}"):
        return _write_tables(args)


def _write_tables(args: argparse.Namespace) -> int:
    """Collect, analyse and write; returns the process exit code. The files are written
    through a staging folder (`staged_output`): a full disk half way names the file and leaves
    the earlier tables in --out as they were."""
    # One progress bar per downloaded artifact would bury the list of missing runs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from diffseg3d.analysis.collect import (
        collect_csv_folder,
        collect_metric_history,
        collect_mlflow,
    )
    from diffseg3d.analysis.examples import load_example
    from diffseg3d.analysis.expected import expected_trial_names, missing_trials
    from diffseg3d.analysis.report import write_report
    from diffseg3d.experiments.tracking.store_check import check_readable_store

    try:
        if args.csv_dir is not None:
            collection = collect_csv_folder(args.csv_dir)
        else:
            import mlflow

            # A reading command never creates or repairs a store (a typo in the URI, an empty
            # or truncated mlflow.db): refuse with one line naming it instead.
            check_readable_store(args.tracking_uri or mlflow.get_tracking_uri())
            collection = collect_mlflow(args.experiment, args.tracking_uri)
    except ValueError as err:
        print(f"diffseg3d tables: {err}", file=sys.stderr)
        return 1
    for problem in collection.problems:
        print(f"diffseg3d tables: not collected: {problem}", file=sys.stderr)
    running = int((collection.runs["problem"] == "status RUNNING").sum()) \
        if "problem" in collection.runs else 0
    if running:  # e.g. `ablate` still training this experiment, or a driver that was killed
        finished = int(collection.runs["problem"].isna().sum())
        print(f"diffseg3d tables: {running} run(s) of {collection.source} are still RUNNING (a "
              f"grid is training them, or its driver was stopped): these tables cover the "
              f"{finished} finished run(s); run tables again when the grid has ended",
              file=sys.stderr)
    if collection.frame.empty:
        print(f"diffseg3d tables: no collected runs in {collection.source}", file=sys.stderr)
        return 1
    missing = None
    if args.grid is not None:
        try:
            missing = missing_trials(expected_trial_names(args.grid, args.data, args.seeds),
                                     collection.runs)
        except (ValueError, FileNotFoundError) as err:  # GridError / ConfigError are ValueErrors
            print(f"diffseg3d tables: --grid {args.grid}: {err}", file=sys.stderr)
            return 1
        for line in missing:
            print(f"diffseg3d tables: missing trial {line}", file=sys.stderr)
    history, examples = None, None
    if args.experiment is not None and not args.no_figures_from_mlflow:
        ok_ids = list(collection.runs.loc[collection.runs["problem"].isna(), "run_id"])
        history = collect_metric_history(ok_ids, tracking_uri=args.tracking_uri)
        runs = collection.runs

        def examples(data_set: str):
            return load_example(runs, data_set, args.tracking_uri)

    from diffseg3d.cli.staged_output import staged_folder

    with staged_folder(args.out) as staging:
        report = write_report(collection, staging, history=history, load_example=examples,
                              missing=missing, alpha=args.alpha)
    for reason in report.skipped:
        print(f"diffseg3d tables: skipped {reason}", file=sys.stderr)
    print(f"diffseg3d tables: wrote {len(report.written)} files to {args.out}")
    if args.experiment is not None:  # the tables and summary.md beside the grid's parent runs
        from diffseg3d.experiments.tracking.grid_summary import ARTIFACT_REPORT, log_report

        collected = collection.runs.loc[collection.runs["problem"].isna(), "run_id"]
        for parent in log_report(args.tracking_uri, list(collected), args.out):
            print(f"diffseg3d tables: logged to run {parent} under {ARTIFACT_REPORT}/")
    return 0


def add_tables_command(subparsers) -> argparse.ArgumentParser:
    """Register `tables` on the `diffseg3d` subparsers; the handler is `args.func`."""
    parser = subparsers.add_parser(
        "tables", help=HELP,
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_tables_arguments(parser)
    parser.set_defaults(func=run_tables)
    return parser
