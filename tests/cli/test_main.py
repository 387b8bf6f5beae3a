"""The `diffseg3d` parser: every command and option in the help texts, a fast top-level help
that imports none of the heavy libraries, the exit status of a usage error, Ray's environment."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from diffseg3d.cli.main import main
from diffseg3d.experiments.cluster.environment import RAY_ENV_DEFAULTS

SUBCOMMANDS = {
    "train": ["--profile", "--data", "--out", "--resume", "--experiment"],
    "ablate": ["--profile", "--data", "--out", "--max-concurrent", "--max-failures", "--storage"],
    "evaluate": ["--pred", "--labels", "--spacing-from-labels", "--classes", "--out"],
    "data": ["phantom"],
    "tables": ["--experiment", "--out"],
}

#: Libraries the command handlers drive; `diffseg3d --help` must load none of them.
HEAVY = ("jax", "ray", "mlflow", "pandas", "scipy", "nibabel")


def test_entry_point_help_lists_every_command():
    exe = Path(sys.executable).with_name("diffseg3d")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in SUBCOMMANDS:
        assert command in out.stdout


def test_top_level_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from diffseg3d.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_subcommand_help_mentions_its_options(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in SUBCOMMANDS[command]:
        assert option in text, (command, option)


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["trian"])
    assert exit_.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_module_entry_matches_the_script():
    out = subprocess.run([sys.executable, "-m", "diffseg3d.cli", "tables", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--no-figures-from-mlflow" in out.stdout


def test_ray_environment_defaults_are_set_before_the_command_runs(monkeypatch, capsys):
    for key in RAY_ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    assert main(["ablate", "no_such_grid"]) == 2  # fails before Ray starts
    assert {k: os.environ[k] for k in RAY_ENV_DEFAULTS} == RAY_ENV_DEFAULTS
