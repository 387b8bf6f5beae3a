"""Output paths of the wrong kind are refused before anything is written, and a staged output
folder is all or nothing: a file-size limit half way (RLIMIT_FSIZE in a real subprocess, where
write() then fails with EFBIG) names the file and leaves the folder's earlier files as they were.
"""

import subprocess
import sys

import pytest
from diffseg3d.cli.output_paths import OutputPathError, check_output_file, check_output_folder


def test_a_file_where_a_folder_is_expected_is_refused(tmp_path):
    (tmp_path / "f").write_text("keep")
    with pytest.raises(OutputPathError, match=r"^--out .*/f is a file, not a folder; nothing "):
        check_output_folder(tmp_path / "f", "--out")
    with pytest.raises(OutputPathError, match=r"--out .*/f/sub/deeper: .*/f is a file"):
        check_output_folder(tmp_path / "f" / "sub" / "deeper", "--out")
    assert check_output_folder(tmp_path / "new" / "sub", "--out") == tmp_path / "new" / "sub"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert (tmp_path / "f").read_text() == "keep"


def test_a_folder_where_a_file_is_expected_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("keep")
    with pytest.raises(OutputPathError, match=r"--out .*/d is a folder, not a file"):
        check_output_file(tmp_path / "d", "--out")
    with pytest.raises(OutputPathError, match=r"--out .*/f/x.csv: .*/f is a file"):
        check_output_file(tmp_path / "f" / "x.csv", "--out")
    assert check_output_file(tmp_path / "d" / "x.csv", "--out") == tmp_path / "d" / "x.csv"


#: Writes `small.txt` and `big.bin` (100 kB) into a staged folder, after limiting files to 10 kB.
STAGED = """
import resource, signal, sys
from pathlib import Path
from diffseg3d.cli.staged_output import staged_folder
from diffseg3d.experiments.write_failure import OutputWriteError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of a signal
limit = int(sys.argv[2])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    with staged_folder(sys.argv[1]) as staging:
        (staging / "small.txt").write_text("new small")
        (staging / "sub").mkdir()
        (staging / "sub" / "big.bin").write_bytes(b"x" * 100_000)
except OutputWriteError as err:
    print(err, file=sys.stderr)
    sys.exit(3)
"""


def _run(out, limit):
    return subprocess.run([sys.executable, "-c", STAGED, str(out), str(limit)],
                          capture_output=True, text=True, timeout=120)


def test_a_file_size_limit_names_the_file_and_keeps_the_earlier_outputs(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "small.txt").write_text("old small")
    (out / "other.tex").write_text("untouched")
    done = _run(out, 10_000)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip() == (
        f"cannot write {out}/sub/big.bin: File too large (a full disk, a quota or a file size "
        f"limit); {out} is unchanged (nothing of this run was moved into it)")
    assert (out / "small.txt").read_text() == "old small"  # not replaced by the staged one
    assert sorted(p.name for p in out.iterdir()) == ["other.tex", "small.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no staging folder left


def test_without_a_limit_the_staged_files_replace_the_old_ones(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "small.txt").write_text("old small")
    (out / "other.tex").write_text("untouched")
    done = _run(out, 0)
    assert done.returncode == 0, done.stderr
    assert (out / "small.txt").read_text() == "new small"
    assert (out / "sub" / "big.bin").stat().st_size == 100_000
    assert (out / "other.tex").read_text() == "untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
