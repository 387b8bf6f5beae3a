"""`diffseg3d data phantom` through the command line: it writes a loadable data set, and bad input
is one `error: ...` line with exit 2 (preparation itself is tested in tests/core/data)."""

import json

import pytest
from diffseg3d.cli.main import main


def test_phantom_command_writes_the_requested_cases(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["data", "phantom", "--out", str(out), "--cases", "3", "--shape", "16", "16", "8"
                 ]) == 0
    assert f"phantom data set in {out}" in capsys.readouterr().out
    meta = json.loads((out / "dataset.json").read_text())
    assert sorted(meta["splits"]) == ["test", "train", "valid"]
    assert sum(len(ids) for ids in meta["splits"].values()) == 3


def test_phantom_bad_input_is_one_line(tmp_path, capsys):
    rc = main(["data", "phantom", "--out", str(tmp_path / "ph"), "--cases", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == "error: phantom needs at least 3 cases for train/valid/test, got 2\n"


def _prepare_nifti_argv(out, *extra):
    # Folders that do not exist: argument errors must come before any file is looked at.
    return ["data", "prepare", "nifti", "--images", "no_imgs", "--labels", "no_lbls",
            "--class-names", "a", "--spacing", "1", "1", "2", "--shape", "8", "8", "4",
            "--out", str(out), *extra]


@pytest.mark.parametrize(("argv", "message"), [
    (["--shape", "0", "16", "8"], "argument --shape: '0' must be >= 1"),
    (["--shape", "16", "-16", "8"], "argument --shape: '-16' must be >= 1"),
    (["--shape", "16", "16.5", "8"], "argument --shape: '16.5' is not a whole number"),
    (["--spacing", "1", "0", "2"], "argument --spacing: '0' must be > 0"),
    (["--spacing", "-1", "1", "2"], "argument --spacing: '-1' must be > 0"),
    (["--spacing", "nan", "1", "2"], "argument --spacing: 'nan' is not a finite number"),
    (["--spacing", "inf", "1", "2"], "argument --spacing: 'inf' is not a finite number"),
    (["--workers", "0"], "argument --workers: '0' must be >= 1"),
])
def test_phantom_geometry_arguments_are_one_line_usage_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "ph"
    with pytest.raises(SystemExit) as exit_:
        main(["data", "phantom", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.splitlines()[-1].endswith(message)
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--test-fraction", "-0.5"], "argument --test-fraction: '-0.5' must be strictly between 0 "
                                  "and 1"),
    (["--test-fraction", "1.5"], "argument --test-fraction: '1.5' must be strictly between 0 "
                                 "and 1"),
    (["--valid-fraction", "nan"], "argument --valid-fraction: 'nan' is not a finite number"),
    (["--clip", "0", "inf"], "argument --clip: 'inf' is not a finite number"),
    (["--spacing", "nan", "1", "2"], "argument --spacing: 'nan' is not a finite number"),
])
def test_prepare_arguments_are_one_line_usage_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(_prepare_nifti_argv(out, *argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.splitlines()[-1].endswith(message)
    assert not out.exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--clip", "100", "0"], "error: --clip LO HI must be two finite numbers with LO < HI, got "
                             "[100.0, 0.0]\n"),
    (["--valid-fraction", "0.5", "--test-fraction", "0.5"],
     "error: valid fraction 0.5 + test fraction 0.5 leave nothing for training (their sum must "
     "be < 1)\n"),
])
def test_prepare_argument_pairs_are_checked_by_the_core(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(_prepare_nifti_argv(out, *argv)) == 2
    assert capsys.readouterr().err == message
    assert list(tmp_path.iterdir()) == []
