"""`diffseg3d predict` into a folder that already holds its outputs, under a file-size limit
(RLIMIT_FSIZE in a real subprocess, SIGXFSZ ignored so write() fails with EFBIG): every case
fails naming the file it had no room for, exit 1, and the earlier outputs are byte-identical."""

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from diffseg3d.cli.main import main

from tests.predict.trained_phantom import TEST_CASES, trained_trial, write_reoriented

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
LIMIT = 2000  # bytes: labels.json fits, a float32 entropy map does not


def _limited():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE,
                       (LIMIT, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_no_room_for_a_prediction_names_it_and_keeps_the_earlier_outputs(tmp_path_factory,
                                                                          tmp_path):
    trial = trained_trial(tmp_path_factory)
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_reoriented(trial["data"], inputs)
    command = ["predict", "--model", str(trial["workdir"]), "--input", str(inputs), "--out",
               str(out), "--samples", "2", "--quiet"]
    assert main(command) == 0
    before = _snapshot(out)
    entropy = f"{TEST_CASES[0]}_entropy.nii.gz"
    assert len(before[entropy]) > LIMIT

    done = subprocess.run([str(BIN / "diffseg3d"), *command], capture_output=True, text=True,
                          timeout=600, preexec_fn=_limited,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: 2 of 2 cases failed: {TEST_CASES[0]}: cannot write "
                           f"{out / entropy}: File too large (a full disk, a quota or a file "
                           "size limit); the file is left as it was")
    assert _snapshot(out) == before  # no partial file, nothing replaced
