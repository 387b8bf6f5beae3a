"""`diffseg3d train` / `ablate` on bad input: one `error: ...` line naming the key, exit 2
(a trial that runs is tested in tests/experiments/test_trial.py and tests/e2e)."""

import pytest
import yaml
from diffseg3d.cli.main import main


def test_train_bad_config_is_one_line_naming_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optim": {"learning_rat": 0.1}}))
    assert main(["train", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "optim.learning_rat" in err and str(path) in err
    assert main(["train", str(path), "--profile", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err


def test_ablate_unknown_grid_names_the_shipped_grids(tmp_path, capsys):
    assert main(["ablate", "no_such_grid", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no_such_grid: no such grid file") and "paper" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--max-concurrent", "--max-failures"])
def test_ablate_counts_must_be_integers(flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["ablate", "paper", flag, "two"])
    assert exit_.value.code == 2
    assert f"argument {flag}: invalid int value: 'two'" in capsys.readouterr().err
