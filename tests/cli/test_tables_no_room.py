"""`diffseg3d tables` run twice into one folder, the second under a file-size limit (RLIMIT_FSIZE
in a real subprocess, SIGXFSZ ignored so write() fails with EFBIG): one error line naming the
file, and the first run's tables left byte for byte as they were."""

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # two fresh processes importing pandas, SciPy and matplotlib

BIN = Path(sys.executable).parent
LIMIT = 3000  # bytes: the small .tex tables fit, the figures and tidy.csv do not


def _csv_dir(folder: Path) -> Path:
    folder.mkdir()
    for stem, recycling, offset in (("rec", True, 0.1), ("norec", False, 0.0)):
        pd.DataFrame([
            {"case": f"case{i}", "class": c, "dice": 0.6 + 0.1 * k + offset + 0.01 * i,
             "hd95": 5.0 - k, "roi_voxels": 100.0 * (k + 1), "roi_mm3": 250.0 * (k + 1)}
            for i in range(6) for k, c in enumerate(("bladder", "rectum"))
        ]).to_csv(folder / f"{stem}.csv", index=False)
        (folder / f"{stem}.json").write_text(json.dumps({
            "trial": stem, "tables": ["1"],
            "params": {"data.name": "phantom", "diffusion.recycling": recycling, "seed": 0}}))
    return folder


def _limited():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE,
                       (LIMIT, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _tables(csv_dir: Path, out: Path, preexec=None):
    return subprocess.run([str(BIN / "diffseg3d"), "tables", "--csv-dir", str(csv_dir), "--out",
                           str(out)], capture_output=True, text=True, timeout=600,
                          preexec_fn=preexec, env={**os.environ, "MPLBACKEND": "Agg"})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_no_room_for_the_tables_names_the_file_and_keeps_the_earlier_ones(tmp_path):
    csv_dir, out = _csv_dir(tmp_path / "scores"), tmp_path / "results"
    first = _tables(csv_dir, out)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _snapshot(out)
    assert "table1_recycling.tex" in before and "summary.md" in before

    second = _tables(csv_dir, out, preexec=_limited)
    assert second.returncode == 2, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    (line,) = [x for x in second.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: cannot write {out}/")
    assert line.endswith(f": File too large (a full disk, a quota or a file size limit); {out} "
                         "is unchanged (nothing of this run was moved into it)")
    named = Path(line.removeprefix("error: cannot write ").split(": File too large")[0])
    assert named.relative_to(out).as_posix() in before  # a file the tables write
    assert before[named.relative_to(out).as_posix()].__len__() > LIMIT
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".results.tables.lock", "results",
                                                           "scores"]
