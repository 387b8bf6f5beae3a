"""The `diffseg3d` command line: parser, dispatch and the one-line error for bad input.

    diffseg3d train CONFIG [--profile P] [--data DIR] [--out DIR]       one trial, no Ray
    diffseg3d ablate GRID [--profile P] [--data DIR] [--out DIR] [--max-concurrent N]
                          [--seeds SEED ...]                          a grid on Ray Tune
    diffseg3d evaluate --pred DIR --labels DIR --out CSV [--classes A,B] [--nsd-tolerance MM]
                       [--resample] [--spacing-from-labels]               score predictions
    diffseg3d data ...                                                  prepare data sets
    diffseg3d tables ...                                                paper tables (LaTeX)
    diffseg3d predict --model MODEL --input FILE_OR_DIR --out DIR [--samples N] ...  new volumes

Errors in user input (config, grid, data, files) print one `error: ...` line and exit 2; Ctrl-C
(and SIGTERM during `ablate`) one `interrupted by SIGINT ...` line, exit 128 + the signal number.
"""

from __future__ import annotations

import argparse
import signal
import sys

from diffseg3d.cli import data, evaluate, predict, tables, train
from diffseg3d.experiments.cluster.environment import set_ray_env_defaults

#: Command -> (its line in `diffseg3d --help`, the function adding its full parser, which sets
#: `func(args) -> int`, the exit status).
COMMANDS = {
    "train": (train.TRAIN_HELP, train.add_train_command),
    "ablate": (train.ABLATE_HELP, train.add_ablate_command),
    "evaluate": (evaluate.HELP, evaluate.add_evaluate_command),
    "data": (data.HELP, data.add_data_commands),
    "tables": (tables.HELP, tables.add_tables_command),
    "predict": (predict.HELP, predict.add_predict_command),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `diffseg3d` parser with the full subparser of `command` (of every command when None);
    the others get a help line only, because building the `data` and `tables` parsers imports
    the libraries that hold their defaults."""
    parser = argparse.ArgumentParser(
        prog="diffseg3d",
        description="Diffusion models for 3D multiclass segmentation: train one trial, run the "
        "paper's ablation grids with Ray Tune, score predictions, prepare data, write tables.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_command) in COMMANDS.items():
        if command is None or command == name:
            add_command(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input (printed as one line), not a bug (traceback)."""
    from diffseg3d.cli.output_paths import OutputPathError
    from diffseg3d.core.data.nifti.io import DataError
    from diffseg3d.experiments.config.errors import ConfigError
    from diffseg3d.experiments.grid import GridError
    from diffseg3d.experiments.output_lock import OutputLockedError
    from diffseg3d.experiments.trial.divergence import NonFiniteTrainingError
    from diffseg3d.experiments.trial.run import TrialError
    from diffseg3d.experiments.write_failure import OutputWriteError
    from diffseg3d.predict.evaluate_folder import EvaluateError

    # The last three: an output path of the wrong kind that a command's own checks
    # (`output_paths`) did not foresee, still one line rather than a traceback.
    return (ConfigError, EvaluateError, FileNotFoundError, GridError, TrialError, DataError,
            OutputLockedError, OutputPathError, OutputWriteError, NonFiniteTrainingError,
            FileExistsError, NotADirectoryError, IsADirectoryError)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: the process arguments), run the command, return its exit status."""
    set_ray_env_defaults()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as err:  # evaluated only when the command raised
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM during `ablate` (GridInterrupted)
        name = getattr(err, "signal_name", "SIGINT")
        print(f"interrupted by {name}; rerun the same command to continue", file=sys.stderr)
        return 128 + int(getattr(signal, name))


if __name__ == "__main__":
    sys.exit(main())
