"""`diffseg3d data phantom` through the command line: it writes a loadable data set, and bad input
is one `error: ...` line with exit 2 (preparation itself is tested in tests/core/data)."""

import json

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
